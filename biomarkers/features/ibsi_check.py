"""``biomarkers ibsi``: the IBSI 1 phantoms through the extraction code, compared with the reference tables.

Cases (:data:`biomarkers.features.ibsi.reference.DATASETS`): the digital phantom and the CT
phantom configurations A-E. Each case is run exactly like a cohort: a one-item ingest-style
dataset (manifest + NIfTI) is extracted by :class:`biomarkers.features.extract.Extract` with
the shipped parameter file (:data:`~biomarkers.features.ibsi.reference.PARAMS`, in
``biomarkers/data/radiomics``, identical to ``configs/radiomics``), and the long table's IBSI codes are compared
with ``biomarkers/data/ibsi/ibsi_1_reference_values_<case>.csv`` (a copy of the
IBSI 1 reference tables shipped with the package, with the phantoms).

Modes:
    ``pyradiomics``  the parameter file without its ``ibsi:`` section: pyradiomics only;
                     IBSI values through the mapping table ``data/ibsi_mapping.csv``
                     (with the exact corrections of :mod:`biomarkers.features.ibsi.corrections`).
    ``ibsi``         with the ``ibsi:`` section: the IBSI module's values take precedence.

Status per reference value: ``pass`` (within tolerance; tolerance 0 means agreement to
the reference's 3 significant digits), ``deviating`` (a value outside tolerance),
``not implemented`` (no value for that IBSI code). Reference rows without a value are
not counted.
"""

from __future__ import annotations

import tempfile
from importlib import resources
from pathlib import Path

import pandas as pd

from ..errors import ConfigError
from .ibsi.reference import DATASETS as CASES
from .ibsi.reference import PARAMS, compare as compare_reference, params_dir
from .mapping import ibsi_codes
from .params import ParamSet, ParamsByModality, strip_extra, validate_params

#: Extra parameter files of a case, run in pyradiomics mode only (IBSI "merged" texture aggregation).
_MERGED = {"digital_phantom": "ibsi_digital_phantom_merged.yaml", "config_A": "ibsi_ct_config_A_merged.yaml"}
MODES = ("pyradiomics", "ibsi")
STATUS_LABELS = {"pass": "pass", "fail": "deviating", "missing": "not implemented"}


def data_dir() -> Path:
    """Shipped IBSI reference tables and phantoms (``biomarkers/data/ibsi``)."""
    return Path(str(resources.files("biomarkers").joinpath("data", "ibsi")))


def compare(values: dict[str, float], case: str) -> pd.DataFrame:
    """Per reference value (shipped copy): value, status (pass / deviating / not implemented / no reference)."""
    out = compare_reference(values, case, reference_dir=data_dir())
    out["status"] = out["status"].map(lambda s: STATUS_LABELS.get(s, s))
    out.insert(0, "case", case)
    return out[["case", "family", "feature", "tag", "value", "reference", "tolerance", "status"]]


def values_by_tag(long: pd.DataFrame, settings: dict, mode: str) -> dict[str, float]:
    """IBSI tag -> IBSI value from a long feature table (aliases of the mapping included)."""
    out: dict[str, float] = {}
    pyr = long[long["source"] == "pyradiomics"]
    for fc, f, iv in zip(pyr["feature_class"], pyr["feature"], pyr["ibsi_value"]):
        if pd.isna(iv):
            continue
        for tag, _rel, _primary in ibsi_codes(fc, f, settings):
            out[tag] = float(iv)
    if mode == "ibsi":
        own = long[(long["source"] != "pyradiomics") & (long["ibsi_code"] != "")]
        for tag, v in zip(own["ibsi_code"], own["ibsi_value"]):
            if pd.notna(v):
                out[tag] = float(v)
    return out


def run_case(case: str, mode: str | None = None, workdir: str | Path | None = None,
             configs: str | Path | None = None) -> pd.DataFrame:
    """Extract one IBSI case through :class:`Extract` and compare it with the reference.

    ``mode``: default ``ibsi``; ``configs``: folder of the parameter files (default: the shipped ones).
    """
    if case not in CASES:
        raise ConfigError(f"unknown IBSI case {case!r}; known: {', '.join(CASES)}")
    mode = mode or "ibsi"
    if mode not in MODES:
        raise ConfigError(f"--mode must be one of {MODES}, got {mode!r}")
    phantom = "digital_phantom" if case == "digital_phantom" else "ct_phantom"
    image, mask, cfg = f"{phantom}_image.nii.gz", f"{phantom}_mask.nii.gz", PARAMS[case]
    cdir = Path(configs or params_dir())
    files = [cdir / cfg] + ([cdir / _MERGED[case]] if mode == "pyradiomics" and case in _MERGED else [])
    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="biomarkers-ibsi-")
        workdir = tmp.name
    values: dict[str, float] = {}
    try:
        ds = _phantom_dataset(Path(workdir) / case / "dataset", case, image, mask)
        for cfg_path in files:
            values.update(_extract_values(ds, cfg_path, mode, Path(workdir) / case / f"features-{cfg_path.stem}-{mode}"))
    finally:
        if tmp is not None:
            tmp.cleanup()
    df = compare(values, case)
    df.insert(1, "mode", mode)
    return df


def _phantom_dataset(ds: Path, case: str, image: str, mask: str) -> Path:
    """A one-item ingest-style dataset (manifest + links to the shipped phantom files)."""
    from ..io import write_parquet
    from ..manifest import COLUMNS

    for rel, src in ((f"images/phantom/{image}", image), (f"masks/phantom/{mask}", mask)):
        dst = ds / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if not dst.exists():
            dst.symlink_to(data_dir() / src)
    base = dict.fromkeys(COLUMNS, "")
    modality = "CT" if case.startswith("config") else "OT"
    rows = [
        {**base, "patient_id": "phantom", "study_uid": "ibsi", "series_uid": case, "modality": modality,
         "kind": "image", "path": f"images/phantom/{image}", "status": "converted"},
        {**base, "patient_id": "phantom", "study_uid": "ibsi", "series_uid": f"{case}-roi", "modality": modality,
         "kind": "mask", "roi": "ROI", "source_series_uid": case, "image_path": f"images/phantom/{image}",
         "path": f"masks/phantom/{mask}", "status": "converted"},
    ]
    write_parquet(ds / "manifest.parquet", pd.DataFrame(rows))
    return ds


def _extract_values(ds: Path, cfg_path: Path, mode: str, out: Path) -> dict[str, float]:
    """Run :class:`Extract` on the phantom dataset with one parameter file; IBSI tag -> value."""
    from ..config import read_yaml
    from ..io import sha256_file, sha256_json
    from .extract import Extract
    from .naming import LONG_TABLE

    params = read_yaml(cfg_path) or {}
    if mode == "pyradiomics":
        params = strip_extra(params)
    elif "ibsi" not in params:
        raise ConfigError(f"{cfg_path}: no 'ibsi:' section, needed by --mode ibsi")
    validate_params(params, str(cfg_path))
    ps = ParamSet(name=f"{cfg_path.stem}-{mode}", path=cfg_path, params=params, param_hash=sha256_json(params),
                  file_hash=sha256_file(cfg_path))
    stage = Extract(ds, ParamsByModality({"*": ps}), out, executor="serial")
    report = stage.validate().run()
    failed = [c for c in report.cases if c.status != "done"]
    if failed:
        raise ConfigError(f"IBSI case {ds.parent.name} ({cfg_path.name}): extraction failed: {failed[0].reason}")
    long = pd.read_parquet(out / LONG_TABLE)
    return values_by_tag(long, dict(params.get("setting") or {}), mode)


def totals(df: pd.DataFrame, by: str | None = "family") -> pd.DataFrame:
    """Counts of pass / deviating / not implemented (reference values only), per ``by`` or overall."""
    d = df[df["status"] != "no reference"]
    keys = ["case"] + ([by] if by else [])
    t = d.groupby(keys, sort=False)["status"].value_counts().unstack(fill_value=0)
    for c in ("pass", "deviating", "not implemented"):
        if c not in t.columns:
            t[c] = 0
    t = t[["pass", "deviating", "not implemented"]]
    t["total"] = t.sum(axis=1)
    return t.reset_index()


def is_3d_family(family: str) -> bool:
    return not ("2D" in family or "2.5D" in family or family.startswith("Diagnostics"))
