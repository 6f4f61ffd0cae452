"""MLflow tracking helpers: where runs go, how feature sets are logged, parent/child runs.

Nothing here configures MLflow at import time; every function takes (or resolves) a
tracking URI explicitly and :func:`using_tracking` restores the previous global URI.

Privacy: parameters, tags and dataset sources never carry absolute paths (which may
contain a user's or patient's name); :func:`safe_source` renders a path relative to
the working directory, or as ``sha256-<12 hex of the parent folder>/<file name>``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import warnings
from pathlib import Path
from typing import Any, Iterator, Mapping

from ..errors import ConfigError, InputError

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

    u = tracking_uri(uri)
    saved = _saved_uris()
    mlflow.set_tracking_uri(u)
    mlflow.set_registry_uri(u)
    try:
        yield u
    finally:
        _restore_uris(saved)


def _saved_uris() -> tuple:
    from mlflow.tracking._model_registry import utils as rutils
    from mlflow.tracking._tracking_service import utils as tutils

    env = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    return getattr(tutils, "_tracking_uri", None), getattr(rutils, "_registry_uri", None), env


def _restore_uris(saved: tuple) -> None:
    import mlflow
    from mlflow.tracking._model_registry import utils as rutils

    prev_t, prev_r, env = saved
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


def safe_source(path: str | os.PathLike) -> str:
    """A loggable rendering of ``path``: relative to the cwd if below it, else ``sha256-<12 hex of the parent folder>/<name>``."""
    p = Path(path).resolve()
    try:
        return p.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        h = hashlib.sha256(str(p.parent).encode()).hexdigest()[:12]
        return f"sha256-{h}/{p.name}"


def flatten(obj: Any, prefix: str = "") -> dict[str, str]:
    """Flatten nested dicts/lists to ``{"a.b.0.c": "value"}`` (MLflow parameter form)."""
    out: dict[str, str] = {}
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(obj, (list, tuple)) and obj and any(isinstance(v, (Mapping, list, tuple)) for v in obj):
        for i, v in enumerate(obj):
            out.update(flatten(v, f"{prefix}.{i}" if prefix else str(i)))
    else:
        val = obj.as_posix() if isinstance(obj, Path) else obj
        out[prefix or "value"] = str(val)[:6000]
    return out


def log_feature_set(
    table_path: str | os.PathLike,
    name: str,
    context: str = "training",
    df=None,
    targets: str | None = None,
):
    """Log a feature table as an MLflow dataset input of the active run.

    ``df`` (default: the Parquet/CSV at ``table_path``) is wrapped with
    ``mlflow.data.from_pandas`` (name, digest of the content, source = :func:`safe_source`)
    and attached with ``mlflow.log_input``. Only the schema and counts are stored, not values.
    The file's SHA-256 is set as tag ``biomarkers.dataset.<name>.sha256``. Returns the dataset.
    """
    import mlflow

    from ..io import sha256_file

    import pandas as pd

    path = Path(table_path)
    if df is None:
        df = read_table(path)
    df = df.copy()
    for c in df.columns:  # Arrow-backed strings -> Python objects (MLflow's digest/schema code expects them)
        if isinstance(df[c].dtype, pd.StringDtype) or str(df[c].dtype).startswith(("string", "large_string", "str")):
            df[c] = df[c].astype(object)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
        ds = mlflow.data.from_pandas(df, source=safe_source(path), name=name, targets=targets)
    mlflow.log_input(ds, context=context)
    if path.is_file():
        mlflow.set_tag(f"biomarkers.dataset.{name}.sha256", sha256_file(path))
    return ds


def read_table(path: str | os.PathLike):
    """Read a Parquet or CSV table, or a partner release folder; clear error naming the file otherwise.

    A release folder (``biomarkers release`` output: ``manifest.json``, ``features.parquet``,
    ``clinical.parquet``) is verified against its checksums, then its features and clinical
    tables are joined per patient (feature columns prefixed ``<MODALITY>_``, as ``biomarkers
    link`` with ``join: patient``).
    """
    import pandas as pd

    p = Path(path)
    if p.is_dir():
        return read_release_table(p)
    if not p.is_file():
        raise InputError(f"{p}: table not found")
    try:
        if p.suffix.lower() in (".csv", ".tsv"):
            return pd.read_csv(p, sep="\t" if p.suffix.lower() == ".tsv" else ",")
        return pd.read_parquet(p)
    except Exception as err:  # noqa: BLE001
        raise InputError(f"{p}: cannot read table ({type(err).__name__}: {err})") from None


def read_release_table(folder: str | os.PathLike):
    """One row per patient from a partner release folder (checksums verified first)."""
    import pandas as pd

    from ..clinical.link import link
    from ..release import verify_release

    folder = Path(folder)
    missing = [f for f in ("manifest.json", "features.parquet", "clinical.parquet") if not (folder / f).is_file()]
    if missing:
        raise InputError(f"{folder}: not a table file nor a release folder (missing {', '.join(missing)})")
    problems = verify_release(folder)
    if problems:
        raise InputError(f"{folder}: release does not verify: {'; '.join(problems[:5])}")
    table, _report = link(pd.read_parquet(folder / "features.parquet"), pd.read_parquet(folder / "clinical.parquet"),
                          join="patient")
    return table


@contextlib.contextmanager
def parent_run(experiment: str, uri: str | None = None, run_name: str | None = None, tags: dict | None = None):
    """Start the parent run of an experiment (fluent API pointed at ``uri`` inside the block)."""
    import mlflow

    with using_tracking(uri) as u:
        exp_id = get_or_create_experiment(experiment, u)
        with mlflow.start_run(experiment_id=exp_id, run_name=run_name, tags={"biomarkers.run_kind": "experiment", **(tags or {})}) as run:
            yield run


@contextlib.contextmanager
def child_run(run_name: str, tags: dict | None = None):
    """A nested run under the active parent run."""
    import mlflow

    active = mlflow.active_run()
    exp_id = active.info.experiment_id if active else None
    with mlflow.start_run(experiment_id=exp_id, run_name=run_name, nested=True, tags={"biomarkers.run_kind": "pipeline", **(tags or {})}) as run:
        yield run


__all__ = [
    "tracking_uri",
    "artifact_location",
    "client",
    "using_tracking",
    "get_or_create_experiment",
    "safe_source",
    "flatten",
    "log_feature_set",
    "read_table",
    "parent_run",
    "child_run",
]
