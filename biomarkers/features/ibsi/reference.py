"""IBSI 1 reference datasets: their parameter files, phantoms and reference values, and the comparison.

Datasets (:data:`DATASETS`): the digital phantom and the CT phantom configurations A-E. The
settings of each are those of its shipped parameter file (:data:`PARAMS`, the ``ibsi:`` section),
read from the package (``biomarkers/data/radiomics``; ``configs/radiomics`` holds identical
copies for users, checked by a test): one definition, used by the checks and by users alike.

``values`` map IBSI tags (the ``tag`` column of the reference CSVs, e.g. ``morph_vol``,
``cm_joint_max_3D_avg``) to values. A value passes when ``|value - reference| <= tolerance``
(plus 1e-9 relative slack for floating point; tolerance 0 means agreement to the
reference's 3 significant digits, i.e. half a unit of its last printed digit).
"""

from __future__ import annotations

import math
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

DATASETS = ("digital_phantom", "config_A", "config_B", "config_C", "config_D", "config_E")

#: Parameter file of each dataset (in :func:`params_dir`).
PARAMS: dict[str, str] = {"digital_phantom": "ibsi_digital_phantom.yaml",
                          **{f"config_{c}": f"ibsi_ct_config_{c}.yaml" for c in "ABCDE"}}


def params_dir() -> Path:
    """The IBSI parameter files shipped with the package (``biomarkers/data/radiomics``)."""
    return Path(str(resources.files("biomarkers").joinpath("data", "radiomics")))


def phantom_params(dataset: str, configs: str | Path | None = None) -> dict:
    """The parameter file of ``dataset`` (from ``configs``, default :func:`params_dir`), parsed."""
    from biomarkers.config import read_yaml

    if dataset not in DATASETS:
        raise ValueError(f"unknown IBSI dataset {dataset!r}; known: {', '.join(DATASETS)}")
    return read_yaml(Path(configs or params_dir()) / PARAMS[dataset]) or {}


#: Image and mask of each dataset, relative to the shared data folder.
PHANTOM_FILES: dict[str, tuple[str, str]] = {
    "digital_phantom": ("ibsi1_digital_phantom/image.nii.gz", "ibsi1_digital_phantom/mask.nii.gz"),
    **{f"config_{c}": ("ibsi1_ct_phantom/nifti/image/phantom.nii.gz", "ibsi1_ct_phantom/nifti/mask/mask.nii.gz")
       for c in "ABCDE"},
}
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

    status: "pass" (within tolerance), "fail" (also an infinite value), "missing" (reference exists, no value),
    "no reference" (the table has no reference value for the tag).
    """
    ref = load_reference(dataset, reference_dir)
    out = ref.copy()
    out["value"] = [values.get(t, np.nan) for t in out["tag"]]
    status = []
    for r, tol, v, t in zip(out["reference"], out["tolerance"], out["value"], out["tag"]):
        if pd.isna(r):
            status.append("no reference")
        elif v is None or pd.isna(v):
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


def run_dataset(dataset: str, data_dir: str | Path | None = None, diagnostics: bool = True) -> dict[str, float]:
    """Features (tag -> value) of an IBSI reference dataset with the settings of its parameter file.

    ``data_dir`` holds ``ibsi1_digital_phantom/`` and ``ibsi1_ct_phantom/`` (default: the
    parent of :func:`reference_dir`).
    """
    import SimpleITK as sitk

    from . import compute, settings_from_params

    base = Path(data_dir) if data_dir is not None else reference_dir().parent
    img_rel, msk_rel = PHANTOM_FILES[dataset]
    image = sitk.ReadImage(str(base / img_rel))
    mask = sitk.ReadImage(str(base / msk_rel))
    settings = settings_from_params(phantom_params(dataset))
    arr = sitk.GetArrayFromImage(image).astype(np.float64)
    roi = sitk.GetArrayFromImage(mask) > 0
    return compute(arr, roi, tuple(image.GetSpacing()[::-1]), settings, diagnostics=diagnostics)
