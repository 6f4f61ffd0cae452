"""Where MLflow runs go: the tracking URI, the artifact root, clients, the fluent API's URI inside a block.

Nothing here configures MLflow at import time; every function takes (or resolves) a
tracking URI explicitly and :func:`using_tracking` restores the previous global URI.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

from ..errors import ConfigError

DEFAULT_DB = "mlflow.db"
ARTIFACT_DIR = "mlartifacts"


def tracking_uri(explicit: str | None = None) -> str:
    """The tracking URI to use: ``explicit`` > env ``MLFLOW_TRACKING_URI`` > ``sqlite:///<cwd>/mlflow.db``.

    A bare path ending in ``.db`` is turned into an absolute ``sqlite:///`` URI.
    """
    uri = explicit or os.environ.get("MLFLOW_TRACKING_URI") or ""
    if not uri:
        return f"sqlite:///{(Path.cwd() / DEFAULT_DB).resolve().as_posix()}"
    if "://" not in uri and uri.endswith(".db"):
        return f"sqlite:///{Path(uri).resolve().as_posix()}"
    return uri


def artifact_location(uri: str) -> str | None:
    """Artifact root for new experiments in ``uri``'s store.

    For a SQLite store, a ``mlartifacts/`` folder beside the database file (MLflow would
    otherwise use ``./mlruns`` relative to whatever the current directory is). For a
    server (``http(s)://``) or any other store: ``None`` (the store decides).
    """
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):])
        if not db.is_absolute():
            db = Path.cwd() / db
        return (db.parent / ARTIFACT_DIR).resolve().as_uri()
    return None


def client(uri: str | None = None):
    """An :class:`mlflow.MlflowClient` for ``tracking_uri(uri)`` (registry in the same store)."""
    from mlflow import MlflowClient

    u = tracking_uri(uri)
    return MlflowClient(tracking_uri=u, registry_uri=u)


@contextlib.contextmanager
def using_tracking(uri: str | None = None) -> Iterator[str]:
    """Point MLflow's fluent API at ``tracking_uri(uri)`` inside the block, then restore the previous state."""
    import mlflow
    from mlflow.tracking._model_registry import utils as rutils
    from mlflow.tracking._tracking_service import utils as tutils

    u = tracking_uri(uri)
    env = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    prev_t, prev_r = getattr(tutils, "_tracking_uri", None), getattr(rutils, "_registry_uri", None)
    mlflow.set_tracking_uri(u)
    mlflow.set_registry_uri(u)
    try:
        yield u
    finally:
        mlflow.set_tracking_uri(prev_t)
        rutils._registry_uri = prev_r
        for k, v in env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


#: Experiment tags of every experiment biomarkers creates: the MLflow UI (3.x) opens an experiment whose
#: ``mlflow.experimentKind`` is ``custom_model_development`` in its model-training view (runs table with
#: metric columns) instead of the GenAI overview (traces, tokens) it infers for an untagged experiment.
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}


#: Key of the runs-table view biomarkers stores on each experiment it runs (:func:`share_runs_view`).
RUNS_VIEW = "biomarkers-runs"
_VIEW_TAG = "mlflow.sharedViewState."  # the MLflow UI reads a shared view from this experiment tag + key
_DEFAULT_COLUMNS = ["attributes.`Source`", "attributes.`Models`", "attributes.`Dataset`"]


def share_runs_view(experiment_id: str, uri: str | None = None, sort_metric: str | None = None) -> str:
    """Store the experiment's runs-table view (experiment tag ``mlflow.sharedViewState.<RUNS_VIEW>``).

    The MLflow UI's default view shows no metric column and folds child runs under their parent
    run; this view shows every metric logged in the experiment as a column and sorts the runs by
    ``sort_metric`` (default: ``auc``, else ``c_index``, when logged), best first, which lists the
    child runs themselves. :func:`ui_url` opens it. Returns the view's key.
    """
    import json

    c = client(uri)
    keys: set[str] = set()
    for run in c.search_runs([experiment_id], max_results=1000):
        keys |= set(run.data.metrics)
    sort = sort_metric or next((k for k in ("auc", "c_index") if k in keys), None)
    state = {"selectedColumns": _DEFAULT_COLUMNS + [f"metrics.`{k}`" for k in sorted(keys)]}
    if sort:
        state.update(orderByKey=f"metrics.`{sort}`", orderByAsc=False)
    c.set_experiment_tag(experiment_id, _VIEW_TAG + RUNS_VIEW, json.dumps(state))
    return RUNS_VIEW


def ui_url(base: str, experiment_id: str, run_id: str | None = None, view: str | None = RUNS_VIEW) -> str:
    """A link into the MLflow UI served at ``base``, in its model-training view.

    MLflow 3.x's UI shows its GenAI overview unless the URL (or the user's toggle) asks for
    ``workflowType=machine_learning``. An experiment's link opens ``view`` (stored by
    :func:`share_runs_view`: child runs listed with their metric columns); a run's link opens the run.
    """
    q = "workflowType=machine_learning"
    if run_id:
        return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}?{q}"
    if view:
        q += f"&viewStateShareKey={view}"
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?{q}"


def get_or_create_experiment(name: str, uri: str | None = None) -> str:
    """Id of the experiment ``name`` (created with :func:`artifact_location` and :data:`EXPERIMENT_TAGS` if
    missing; an existing experiment without a kind gets the tags)."""
    if not name or not name.strip():
        raise ConfigError("experiment name must not be empty")
    u = tracking_uri(uri)
    c = client(u)
    exp = c.get_experiment_by_name(name)
    if exp is None:
        return c.create_experiment(name, artifact_location=artifact_location(u), tags=EXPERIMENT_TAGS)
    if exp.lifecycle_stage == "deleted":
        c.restore_experiment(exp.experiment_id)
    for k, v in EXPERIMENT_TAGS.items():
        if k not in (exp.tags or {}):
            c.set_experiment_tag(exp.experiment_id, k, v)
    return exp.experiment_id
