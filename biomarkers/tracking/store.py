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


def get_or_create_experiment(name: str, uri: str | None = None) -> str:
    """Id of the experiment ``name`` (created with :func:`artifact_location` if missing)."""
    if not name or not name.strip():
        raise ConfigError("experiment name must not be empty")
    u = tracking_uri(uri)
    c = client(u)
    exp = c.get_experiment_by_name(name)
    if exp is None:
        return c.create_experiment(name, artifact_location=artifact_location(u))
    if exp.lifecycle_stage == "deleted":
        c.restore_experiment(exp.experiment_id)
    return exp.experiment_id
