"""IBSI 2 checks: phase 1 (reference response maps) and phase 2 (intensity statistics, CT phantom).

Reference data (read-only, not shipped): ``<shared>/ibsi2/`` with ``digital_phantom/nifti/<phantom>/``,
``reference_response_maps/<id>-ValidCRM.nii`` and ``reference_feature_values/reference_values.csv``;
phase 2 uses the IBSI 1 CT phantom ``<shared>/ibsi1_ct_phantom/nifti``. ``<shared>`` is
``$BIOMARKERS_SHARED_DATA`` or ``../shared/data`` next to the repository.

Phase 1 pass rule (IBSI 2): every voxel within 1% of the reference map's intensity range.
Phase 2 pass rule: ``|value - consensus| <= tolerance`` (plus 1e-9 relative slack).

The test settings (:data:`PHASE1`, :data:`PHASE2_FILTERS`, :data:`PHASE2_CONFIGS`) are those of the
IBSI 2 reference manual (arXiv:2006.05470), chapter "Phase 1" and "Phase 2" tables; the Riesz tests
9.a, 9.b.1 and 10.b.1 (no consensus on the other Riesz tests) use the first/second-order Riesz
transforms of LoG (sigma 3 mm) and of the level-1 Simoncelli wavelet.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from biomarkers.errors import InputError

#: phase 1 tests: id -> (phantom, filter, settings)
PHASE1: dict[str, tuple[str, str, dict]] = {
    "1.a.1": ("checkerboard", "mean", dict(support=15, boundary="constant")),
    "1.a.2": ("checkerboard", "mean", dict(support=15, boundary="nearest")),
    "1.a.3": ("checkerboard", "mean", dict(support=15, boundary="periodic")),
    "1.a.4": ("checkerboard", "mean", dict(support=15, boundary="mirror")),
    "1.b.1": ("impulse", "mean", dict(support=15, boundary="constant", dimensions="2D")),
    "2.a": ("impulse", "log", dict(sigma_mm=3.0, truncation=4.0, boundary="constant")),
    "2.b": ("checkerboard", "log", dict(sigma_mm=5.0, truncation=4.0, boundary="mirror")),
    "2.c": ("checkerboard", "log", dict(sigma_mm=5.0, truncation=4.0, boundary="mirror", dimensions="2D")),
    "3.a.1": ("impulse", "laws", dict(kernel="E5L5S5", boundary="constant")),
    "3.a.2": ("impulse", "laws", dict(kernel="E5L5S5", boundary="constant", rotation_invariant=True, pooling="max")),
    "3.a.3": ("impulse", "laws", dict(kernel="E5L5S5", boundary="constant", rotation_invariant=True, pooling="max",
                                      energy=True, delta=7)),
    "3.b.1": ("checkerboard", "laws", dict(kernel="E3W5R5", boundary="mirror")),
    "3.b.2": ("checkerboard", "laws", dict(kernel="E3W5R5", boundary="mirror", rotation_invariant=True, pooling="max")),
    "3.b.3": ("checkerboard", "laws", dict(kernel="E3W5R5", boundary="mirror", rotation_invariant=True, pooling="max",
                                           energy=True, delta=7)),
    "3.c.1": ("checkerboard", "laws", dict(kernel="L5S5", boundary="mirror", dimensions="2D")),
    "3.c.2": ("checkerboard", "laws", dict(kernel="L5S5", boundary="mirror", dimensions="2D",
                                           rotation_invariant=True, pooling="max")),
    "3.c.3": ("checkerboard", "laws", dict(kernel="L5S5", boundary="mirror", dimensions="2D",
                                           rotation_invariant=True, pooling="max", energy=True, delta=7)),
    "4.a.1": ("impulse", "gabor", dict(sigma_mm=10.0, lambda_mm=4.0, gamma=0.5, theta_deg=60.0, boundary="constant")),
    "4.a.2": ("impulse", "gabor", dict(sigma_mm=10.0, lambda_mm=4.0, gamma=0.5, rotation_invariant=True,
                                       theta_step_deg=45.0, pooling="mean", boundary="constant")),
    "4.b.1": ("sphere", "gabor", dict(sigma_mm=20.0, lambda_mm=8.0, gamma=2.5, theta_deg=225.0, boundary="mirror")),
    "4.b.2": ("sphere", "gabor", dict(sigma_mm=20.0, lambda_mm=8.0, gamma=2.5, rotation_invariant=True,
                                      theta_step_deg=22.5, pooling="mean", boundary="mirror")),
    "5.a.1": ("impulse", "wavelet", dict(wavelet="db2", subband="LHL", boundary="constant")),
    "5.a.2": ("impulse", "wavelet", dict(wavelet="db2", subband="LHL", boundary="constant", rotation_invariant=True)),
    "6.a.1": ("sphere", "wavelet", dict(wavelet="coif1", subband="HHL", boundary="periodic")),
    "6.a.2": ("sphere", "wavelet", dict(wavelet="coif1", subband="HHL", boundary="periodic", rotation_invariant=True)),
    "7.a.1": ("checkerboard", "wavelet", dict(wavelet="haar", subband="LLL", level=2, boundary="mirror",
                                              rotation_invariant=True)),
    "7.a.2": ("checkerboard", "wavelet", dict(wavelet="haar", subband="HHH", level=2, boundary="mirror",
                                              rotation_invariant=True)),
    "8.a.1": ("checkerboard", "simoncelli", dict(level=1, boundary="periodic")),
    "8.a.2": ("checkerboard", "simoncelli", dict(level=2, boundary="periodic")),
    "8.a.3": ("checkerboard", "simoncelli", dict(level=3, boundary="periodic")),
    "9.a": ("impulse", "log", dict(sigma_mm=3.0, truncation=4.0, boundary="constant", riesz=(1, 0, 0))),
    "9.b.1": ("sphere", "log", dict(sigma_mm=3.0, truncation=4.0, boundary="constant", riesz=(0, 2, 0))),
    "10.b.1": ("pattern_1", "simoncelli", dict(level=1, boundary="periodic", riesz=(0, 2, 0))),
}


def shared_dir(path: str | Path | None = None) -> Path:
    """The shared reference-data folder (``$BIOMARKERS_SHARED_DATA`` or ``../shared/data``)."""
    if path is not None:
        return Path(path)
    env = os.environ.get("BIOMARKERS_SHARED_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[4] / "shared" / "data"


def _read(path: Path):
    import SimpleITK as sitk

    if not path.is_file():
        raise InputError(f"{path}: IBSI 2 reference file not found (set BIOMARKERS_SHARED_DATA)")
    img = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(img).astype(np.float64), tuple(float(s) for s in img.GetSpacing()[::-1])


def phantom(name: str, shared: str | Path | None = None):
    """(image (z, y, x), spacing (dz, dy, dx) mm) of an IBSI 2 digital phantom."""
    return _read(shared_dir(shared) / "ibsi2" / "digital_phantom" / "nifti" / name / "image" / f"{name}.nii.gz")


def reference_map(test: str, shared: str | Path | None = None) -> np.ndarray:
    return _read(shared_dir(shared) / "ibsi2" / "reference_response_maps"
                 / f"{test.replace('.', '_')}-ValidCRM.nii")[0]


@dataclass(frozen=True)
class MapResult:
    test: str
    phantom: str
    filter: str
    max_abs_diff: float
    ref_range: float
    passed: bool

    @property
    def error_pct(self) -> float:
        """Largest voxel difference in % of the reference range."""
        return 100.0 * self.max_abs_diff / self.ref_range if self.ref_range > 0 else float("inf")


def compare_map(test: str, out: np.ndarray, ref: np.ndarray, phantom_name: str = "", filt: str = "") -> MapResult:
    """IBSI 2 phase 1 rule: every voxel within 1% of the reference map's range."""
    if out.shape != ref.shape:
        raise InputError(f"test {test}: response map shape {out.shape} != reference {ref.shape}")
    rng = float(ref.max() - ref.min())
    diff = float(np.max(np.abs(out - ref)))
    return MapResult(test, phantom_name, filt, diff, rng, bool(diff <= 0.01 * rng))


def run_phase1(tests: list[str] | None = None, shared: str | Path | None = None) -> list[MapResult]:
    """Every (or the given) phase 1 test: response map through :func:`response_map` vs reference."""
    from . import filter_spec, response_map

    out = []
    cache: dict[str, tuple] = {}
    for t in tests or list(PHASE1):
        if t not in PHASE1:
            raise InputError(f"unknown IBSI 2 phase 1 test {t!r}; known: {', '.join(PHASE1)}")
        ph, filt, settings = PHASE1[t]
        if ph not in cache:
            cache[ph] = phantom(ph, shared)
        img, sp = cache[ph]
        resp = response_map(img, sp, filter_spec(filt, settings, source=f"IBSI 2 test {t}"))
        out.append(compare_map(t, resp, reference_map(t, shared), ph, filt))
    return out


def phase1_table(results: list[MapResult]) -> pd.DataFrame:
    return pd.DataFrame([{"test": r.test, "phantom": r.phantom, "filter": r.filter,
                          "max_abs_diff": r.max_abs_diff, "ref_range": r.ref_range,
                          "error_pct": r.error_pct, "status": "pass" if r.passed else "deviating"}
                         for r in results])


# -- phase 2 --------------------------------------------------------------------------------

#: configuration -> the shipped parameter file that defines it (filters and image processing):
#: ``biomarkers/data/radiomics`` (== ``configs/radiomics``), one definition for the checks and users
PHASE2_PARAMS = {"A": "ibsi2_phase2_A.yaml", "B": "ibsi2_phase2_B.yaml"}
PHASE2_SETS = tuple(range(1, 10))


def phase2_params(config: str, configs: str | Path | None = None) -> dict:
    """The parameter dict of phase 2 configuration ``config`` (A: 2D, B: 3D)."""
    from biomarkers.config import read_yaml
    from biomarkers.features.ibsi.reference import params_dir

    if config not in PHASE2_PARAMS:
        raise InputError(f"unknown IBSI 2 phase 2 configuration {config!r}; known: {', '.join(PHASE2_PARAMS)}")
    return read_yaml(Path(configs or params_dir()) / PHASE2_PARAMS[config]) or {}


def set_id(filter_id: str, config: str) -> str:
    """Reference id (``3.A``) of a shipped filter entry id (``3-log``): its leading set number."""
    head = filter_id.split("-", 1)[0]
    if not head.isdigit():
        raise InputError(f"phase 2 filter id {filter_id!r} must start with its filter set number (e.g. 3-log)")
    return f"{int(head)}.{config}"


def load_phase2_reference(shared: str | Path | None = None) -> pd.DataFrame:
    """Consensus values (id, feature, tag, reference, tolerance): the shipped copy of the IBSI 2
    ``reference_values.csv`` (CC0), or the one under ``shared`` when given."""
    from importlib import resources

    if shared is not None:
        f = shared_dir(shared) / "ibsi2" / "reference_feature_values" / "reference_values.csv"
    else:
        f = Path(str(resources.files("biomarkers").joinpath("data", "ibsi", "ibsi_2_reference_values.csv")))
    if not f.is_file():
        raise InputError(f"{f}: IBSI 2 phase 2 reference values not found")
    df = pd.read_csv(f, sep=";")
    return df.rename(columns={"filter_id": "id", "feature_tag": "tag", "consensus_value": "reference"})


def ct_phantom(shared: str | Path | None = None):
    """(image, ROI, spacing) of the IBSI 1 CT phantom (NIfTI; ROI GTV-1), arrays (z, y, x)."""
    base = shared_dir(shared) / "ibsi1_ct_phantom" / "nifti"
    img, sp = _read(base / "image" / "phantom.nii.gz")
    roi, _ = _read(base / "mask" / "mask.nii.gz")
    return img, roi > 0, sp


def compare_values(values: dict[str, dict[str, float]], reference: pd.DataFrame) -> pd.DataFrame:
    """Per reference row: value and status (pass / deviating / not implemented / no reference)."""
    out = []
    for r in reference.itertuples(index=False):
        v = values.get(r.id, {}).get(r.tag)
        if pd.isna(r.reference):
            st = "no reference"
        elif v is None or not np.isfinite(v):
            st = "not implemented"
        else:
            st = "pass" if abs(v - r.reference) <= r.tolerance + 1e-9 * max(1.0, abs(r.reference)) else "deviating"
        out.append({"id": r.id, "feature": r.feature, "tag": r.tag, "value": np.nan if v is None else v,
                    "reference": r.reference, "tolerance": r.tolerance, "status": st})
    return pd.DataFrame(out)


def _compare(values: dict[str, dict[str, float]], configs, shared) -> pd.DataFrame:
    ref = load_phase2_reference(shared)
    ids = {f"{k}.{c}" for k in PHASE2_SETS for c in configs}
    return compare_values(values, ref[ref["id"].isin(ids)].reset_index(drop=True))


def run_phase2(configs: tuple[str, ...] = ("A", "B"), shared: str | Path | None = None,
               configs_dir: str | Path | None = None) -> pd.DataFrame:
    """Phase 2 through :func:`~.features.filter_values` (the function the extraction's rows come from)."""
    from biomarkers.features.ibsi import settings_from_params

    from .features import entries_of, filter_values

    img, roi, sp = ct_phantom(shared)
    values: dict[str, dict[str, float]] = {}
    for cfg in configs:
        params = phase2_params(cfg, configs_dir)
        res = filter_values(img, roi, sp, settings_from_params(params), entries_of(params))
        values.update({set_id(fid, cfg): v for fid, v in res.items()})
    return _compare(values, configs, shared)


def run_phase2_extract(configs: tuple[str, ...] = ("A", "B"), workdir: str | Path | None = None,
                       configs_dir: str | Path | None = None) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """Phase 2 exactly like a cohort: :class:`~biomarkers.features.extract.Extract` on a one-item
    dataset of the shipped CT phantom with the shipped parameter files; values read back from the
    long table (``filter`` key column, IBSI codes). Returns (comparison, long table per configuration)."""
    import tempfile

    from biomarkers.features.extract import Extract
    from biomarkers.features.ibsi_check import _phantom_dataset
    from biomarkers.features.ibsi.reference import params_dir
    from biomarkers.features.naming import FILTER_COLUMN, LONG_TABLE

    tmp = tempfile.TemporaryDirectory(prefix="biomarkers-ibsi2-") if workdir is None else None
    base = Path(workdir if workdir is not None else tmp.name)
    values: dict[str, dict[str, float]] = {}
    longs: dict[str, pd.DataFrame] = {}
    try:
        for cfg in configs:
            phase2_params(cfg, configs_dir)  # known configuration
            ds = _phantom_dataset(base / f"ibsi2_{cfg}" / "dataset", f"config_{cfg}", "ct_phantom_image.nii.gz",
                                  "ct_phantom_mask.nii.gz")
            path = Path(configs_dir or params_dir()) / PHASE2_PARAMS[cfg]
            out = base / f"ibsi2_{cfg}" / "features"
            report = Extract(ds, {"*": str(path)}, out, executor="serial").validate().run()
            failed = [c for c in report.cases if c.status != "done"]
            if failed:
                raise InputError(f"IBSI 2 phase 2 {cfg} ({path.name}): extraction failed: {failed[0].reason}")
            long = pd.read_parquet(out / LONG_TABLE)
            longs[cfg] = long
            own = long[long[FILTER_COLUMN] != ""]
            for fid, sub in own.groupby(FILTER_COLUMN, sort=False):
                values[set_id(fid, cfg)] = dict(zip(sub["ibsi_code"], sub["ibsi_value"].astype(float)))
    finally:
        if tmp is not None:
            tmp.cleanup()
    return _compare(values, configs, None), longs


# -- ``biomarkers ibsi --standard 2`` ---------------------------------------------------------

#: ``--case`` values of ``biomarkers ibsi --standard 2``: phase 1 (all maps), a phase 1 test id,
#: or a phase 2 configuration
STANDARD2_CASES = ("phase1", *PHASE1, *PHASE2_PARAMS)


def run_standard2(cases: list[str] | None = None, configs_dir: str | Path | None = None,
                  shared: str | Path | None = None, echo=print, summary: bool = False) -> dict[str, pd.DataFrame]:
    """Run and print the IBSI 2 checks: phase 1 maps (shared data) and phase 2 through the extraction.

    Prints one line per test / value (status first, like the IBSI 1 checks) and the totals;
    returns ``{"phase1": table, "phase2": table}`` (absent phases omitted).
    """
    cases = list(cases or ["phase1", *PHASE2_PARAMS])
    bad = [c for c in cases if c not in STANDARD2_CASES]
    if bad:
        from biomarkers.errors import ConfigError

        raise ConfigError(f"--case {bad[0]!r}: unknown for --standard 2; choose from phase1, a phase 1 test "
                          f"(1.a.1 .. 10.b.1) or a phase 2 configuration ({', '.join(PHASE2_PARAMS)})")
    out: dict[str, pd.DataFrame] = {}
    tests = list(PHASE1) if "phase1" in cases else [c for c in cases if c in PHASE1]
    if tests:
        p1 = phase1_table(run_phase1(tests, shared))
        out["phase1"] = p1
        echo("\n== IBSI 2 phase 1: response maps (pass: every voxel within 1% of the reference range) ==")
        if not summary:
            for r in p1.itertuples(index=False):
                echo(f"  {r.status:10s} {r.test:7s} {r.filter:10s} {r.phantom:13s} max |diff| {r.max_abs_diff:10.4g}"
                     f"  = {r.error_pct:7.4f}% of range {r.ref_range:.4g}")
        n = int((p1.status == "pass").sum())
        echo(f"  TOTAL phase 1       pass {n}  deviating {len(p1) - n}  of {len(p1)} reference maps")
    cfgs = tuple(c for c in PHASE2_PARAMS if c in cases)
    if cfgs:
        p2, _ = run_phase2_extract(cfgs, configs_dir=configs_dir)
        out["phase2"] = p2
        echo(f"\n== IBSI 2 phase 2: CT phantom, configuration(s) {', '.join(cfgs)}, through the extraction ==")
        for fid, sub in p2.groupby("id", sort=False):
            if not summary:
                for r in sub.itertuples(index=False):
                    if r.status == "no reference":
                        continue
                    echo(f"  {r.status:15s} {r.id:4s} {r.tag:12s} value {r.value:>11.4g}  ref {r.reference:>10.4g}"
                         f"  tol {r.tolerance:>8.3g}")
            c = sub[sub.status != "no reference"].status.value_counts()
            echo(f"  {fid:4s} pass {int(c.get('pass', 0)):3d}  deviating {int(c.get('deviating', 0)):3d}  "
                 f"not implemented {int(c.get('not implemented', 0)):3d}  of {int(c.sum())}")
        c = p2[p2.status != "no reference"].status.value_counts()
        echo(f"  TOTAL phase 2       pass {int(c.get('pass', 0))}  deviating {int(c.get('deviating', 0))}  "
             f"not implemented {int(c.get('not implemented', 0))}  of {int(c.sum())} reference values")
    return out
