"""IBSI 1 reference values and the comparison used by tests and ``biomarkers ibsi``.

NOTE FOR THE EXTRACTION AREA (``biomarkers ibsi`` command)::

    from biomarkers.features.ibsi.reference import compare, load_reference, DATASETS
    df = compare(values: dict[str, float], dataset: str, reference_dir=None) -> pandas.DataFrame
    # dataset: "digital_phantom" or "config_A" .. "config_E"
    # columns: tag, family, feature, value, reference, tolerance, status ("pass"|"fail"|"missing"|"no reference")
    summarise(df) -> DataFrame per family with pass/fail/missing counts

``values`` maps IBSI tags (the ``tag`` column of the reference CSVs, e.g. ``morph_vol``,
``cm_joint_max_3D_avg``) to values. A value passes when ``|value - reference| <= tolerance``
(plus 1e-9 relative slack for floating point; tolerance 0 means agreement to the
reference's 3 significant digits, i.e. half a unit of its last printed digit).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

DATASETS = ("digital_phantom", "config_A", "config_B", "config_C", "config_D", "config_E")
DEFAULT_DIR = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "ibsi1_reference"


def reference_dir(path: str | Path | None = None) -> Path:
    """Folder of ``ibsi_1_reference_values_<dataset>.csv`` (default ../shared/data/ibsi1_reference,
    or the env var BIOMARKERS_SHARED_DATA/ibsi1_reference)."""
    import os

    if path is not None:
        return Path(path)
    env = os.environ.get("BIOMARKERS_SHARED_DATA")
    if env:
        return Path(env) / "ibsi1_reference"
    return DEFAULT_DIR


def load_reference(dataset: str, path: str | Path | None = None) -> pd.DataFrame:
    """Reference table (tag, family, feature, reference, tolerance) of ``dataset``."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown IBSI dataset {dataset!r}; known: {', '.join(DATASETS)}")
    f = reference_dir(path) / f"ibsi_1_reference_values_{dataset}.csv"
    df = pd.read_csv(f, encoding="utf-8-sig")
    df = df.rename(columns={"reference value": "reference"})
    return df[["tag", "family", "feature", "reference", "tolerance"]]


def _digits_slack(ref: float) -> float:
    """Half a unit in the 3rd significant digit (reference values are printed to 3 digits)."""
    if ref == 0 or not math.isfinite(ref):
        return 0.0
    e = math.floor(math.log10(abs(ref)))
    return 0.5 * 10 ** (e - 2)


def compare(values: dict[str, float], dataset: str, reference_dir: str | Path | None = None) -> pd.DataFrame:
    """Compare ``values`` (tag -> value) with the IBSI reference of ``dataset``.

    status: "pass" (within tolerance), "fail", "missing" (reference exists, no value),
    "no reference" (the table has no reference value for the tag).
    """
    ref = load_reference(dataset, reference_dir)
    out = ref.copy()
    out["value"] = [values.get(t, np.nan) for t in out["tag"]]
    status = []
    for r, tol, v, t in zip(out["reference"], out["tolerance"], out["value"], out["tag"]):
        if pd.isna(r):
            status.append("no reference")
        elif t not in values or v is None or not np.isfinite(v):
            status.append("missing")
        else:
            allowed = (tol if tol > 0 else _digits_slack(r)) + 1e-9 * max(1.0, abs(r))
            status.append("pass" if abs(v - r) <= allowed else "fail")
    out["status"] = status
    return out[["tag", "family", "feature", "value", "reference", "tolerance", "status"]]


def summarise(df: pd.DataFrame) -> pd.DataFrame:
    """Counts per family and status (columns pass/fail/missing/no reference, plus a total row)."""
    t = pd.crosstab(df["family"], df["status"])
    for c in ("pass", "fail", "missing", "no reference"):
        if c not in t:
            t[c] = 0
    t = t[["pass", "fail", "missing", "no reference"]]
    t.loc["total"] = t.sum()
    return t
