"""What a run logs: loggable path renderings, flattened parameters, feature tables as MLflow datasets.

Privacy: parameters, tags and dataset sources never carry absolute paths (which may
contain a user's or patient's name); :func:`safe_source` renders a path relative to
the working directory, or as ``sha256-<12 hex of the parent folder>/<file name>``.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from typing import Any, Mapping

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
    source: str | None = None,
    digest: str | None = None,
):
    """Log a feature table as an MLflow dataset input of the active run.

    ``df`` (default: the Parquet/CSV at ``table_path``) is wrapped with
    ``mlflow.data.from_pandas`` (name, digest of the content, source = :func:`safe_source`)
    and attached with ``mlflow.log_input``. Only the schema and counts are stored, not values.
    The file's SHA-256 is set as tag ``biomarkers.dataset.<name>.sha256``. Returns the dataset.
    ``source``/``digest`` replace the rendered path and the content digest (a lake version:
    ``LAKE@N`` and :meth:`biomarkers.lake.Lake.digest`).
    """
    import mlflow

    import pandas as pd

    from ..io import sha256_file

    path = Path(table_path)
    if df is None:
        tsv = path.suffix.lower() == ".tsv"
        csv = tsv or path.suffix.lower() == ".csv"
        df = pd.read_csv(path, sep="\t" if tsv else ",") if csv else pd.read_parquet(path)
    df = df.copy()
    for c in df.columns:  # Arrow-backed strings -> Python objects (MLflow's digest/schema code expects them)
        if isinstance(df[c].dtype, pd.StringDtype) or str(df[c].dtype).startswith(("string", "large_string", "str")):
            df[c] = df[c].astype(object)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
        ds = mlflow.data.from_pandas(df, source=source or safe_source(path), name=name, targets=targets, digest=digest)
    mlflow.log_input(ds, context=context)
    if path.is_file():
        mlflow.set_tag(f"biomarkers.dataset.{name}.sha256", sha256_file(path))
    return ds
