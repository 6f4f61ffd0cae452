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
