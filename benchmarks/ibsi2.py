"""Time per ROI of the nine IBSI 2 phase 2 filter sets: biomarkers vs mirp vs pyradiomics' LoG + wavelet.

Run from the repository root::

    .venv/bin/python benchmarks/ibsi2.py [--patients STS_001 ...] [--modalities CT MR_T1 PET]
                                         [--repeat 1] [--mirp-python /tmp/mirp-venv/bin/python]

On the shared STS cases (../shared/data/sts/nifti, one ROI per patient and modality), in one run:

* ``biomarkers`` -- the extraction worker (:func:`biomarkers.features.items.compute_rows`) with an
  ``ibsi: filters:`` list of the nine phase 2 filter sets in 3D (configs/radiomics/ibsi2_phase2_B.yaml:
  none, mean 5, LoG 1.5 mm, Laws L5E5E5 energy rotation-invariant, Gabor rotation-invariant in the
  orthogonal planes, db3 LLH level 1 and HHH level 2 rotation-invariant, Simoncelli levels 1 and 2)
  and the 18 intensity statistics of each response map in the ROI.
* ``mirp`` -- mirp's ``extract_features`` in its own virtualenv (``python3 -m venv /tmp/mirp-venv &&
  /tmp/mirp-venv/bin/pip install mirp``; skipped with a message if absent) with the same nine filter
  sets and statistics (two calls per ROI: mirp crosses wavelet sub-bands with levels), timed inside
  the mirp process (import and a warm-up call excluded).
* ``pyradiomics`` -- ``RadiomicsFeatureExtractor.execute`` with image types LoG (sigma 1.5 mm) and
  Wavelet (db3, the 8 level-1 sub-bands) and the first-order class: 9 response maps, 18 statistics
  each -- pyradiomics' own (not IBSI 2 compliant) filters, the pyradiomics-compatible option.
* ``bio-LoG+wav`` -- biomarkers with the same 9 maps as pyradiomics (LoG 1.5 mm, the 8 db3 level-1
  sub-bands, no rotation invariance) as IBSI 2 defines them: the like-for-like comparison of the
  filter engines (the nine phase 2 sets cost more: Laws and wavelets pooled over 24 rotations, Gabor
  over 16 orientations x 3 planes, two Simoncelli bands by FFT of the whole resampled image).

Every method resamples the image itself to the same isotropic grid (CT and MR 1 mm, PET 3 mm, cubic
spline: the IBSI 2 phase 3 grids; mirp's filters refuse anisotropic voxels) and the time includes it.

Prints seconds per ROI (median over ROIs) and the ratios mirp / biomarkers and biomarkers / pyradiomics
(wall time), and biomarkers / pyradiomics in CPU time (user + system of all threads: less sensitive to
other jobs on a loaded machine), with the load average.
Targets: mirp / biomarkers >= 5, biomarkers / pyradiomics <= 1. No timing asserts anywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("BIOMARKERS_SHARED_DATA", REPO.parent / "shared" / "data"))

#: isotropic spacing (mm) per modality, for every method
SPACING = {"CT": 1.0, "MR_T1": 1.0, "PET": 3.0}


def _pyradiomics_params(modality: str) -> dict:
    """pyradiomics: 1 LoG + 8 wavelet response maps, first order (18 features each)."""
    s = SPACING[modality]
    return {"setting": {"label": 1, "binWidth": 25, "resampledPixelSpacing": [s, s, s], "interpolator": "sitkBSpline"},
            "imageType": {"LoG": {"sigma": [1.5]}, "Wavelet": {"wavelet": "db3"}},
            "featureClass": {"firstorder": []}}

MIRP_SCRIPT = r"""
import json, sys, time, warnings
warnings.filterwarnings("ignore")
from mirp import extract_features
cases = json.loads(sys.argv[1])
common = dict(by_slice=False, ibsi_compliant=True, boundary_condition="mirror",
              response_map_feature_families="statistics")
first = dict(base_feature_families="statistics",
             filter_kernels=["mean", "laplacian_of_gaussian", "laws", "gabor", "separable_wavelet",
                             "nonseparable_wavelet"],
             mean_filter_kernel_size=5,
             laplacian_of_gaussian_sigma=1.5, laplacian_of_gaussian_kernel_truncate=4.0,
             laws_kernel="L5E5E5", laws_compute_energy=True, laws_delta=7, laws_rotation_invariance=True,
             laws_pooling_method="max",
             gabor_sigma=5.0, gabor_lambda=2.0, gabor_gamma=1.5, gabor_theta=0.0, gabor_theta_step=22.5,
             gabor_response="modulus", gabor_rotation_invariance=True, gabor_pooling_method="mean",
             separable_wavelet_families="db3", separable_wavelet_set="LLH", separable_wavelet_decomposition_level=1,
             separable_wavelet_rotation_invariance=True, separable_wavelet_pooling_method="mean",
             nonseparable_wavelet_families="simoncelli", nonseparable_wavelet_decomposition_level=[1, 2])
second = dict(base_feature_families="none", filter_kernels=["separable_wavelet"],
              separable_wavelet_families="db3", separable_wavelet_set="HHH", separable_wavelet_decomposition_level=2,
              separable_wavelet_rotation_invariance=True, separable_wavelet_pooling_method="mean")
out = {}
for n, (key, img, msk, modality, spacing) in enumerate([cases[-1]] + cases):  # warm-up: the last (PET)
    t = time.perf_counter()
    cols = 0
    for kw in (first, second):
        res = extract_features(image=img, mask=msk, image_modality=modality, new_spacing=spacing, spline_order=3,
                               anti_aliasing=False, **common, **kw)
        cols += int(res[0].shape[1]) if res else 0
    if n > 0:  # the first call is a warm-up (lazy imports), like for the other methods
        out[key] = [time.perf_counter() - t, cols]
print(json.dumps(out))
"""


def _biomarkers_params(modality: str) -> dict:
    """configs/radiomics/ibsi2_phase2_B.yaml's nine filter sets on the benchmark grid."""
    import yaml

    p = yaml.safe_load((REPO / "configs" / "radiomics" / "ibsi2_phase2_B.yaml").read_text())
    s = SPACING[modality]
    return {"setting": {"label": 1}, "ibsi": {"pyradiomics": False, "families": [], "spacing": [s, s, s],
                                              "interpolation": "cubic", "filters": p["ibsi"]["filters"]}}


def _log_wavelet_params(modality: str) -> dict:
    """biomarkers with pyradiomics' 9 maps (LoG 1.5 mm + 8 db3 level-1 sub-bands), IBSI 2 definitions."""
    s = SPACING[modality]
    bands = [a + b + c for a in "LH" for b in "LH" for c in "LH"]
    filters = [{"id": "log", "filter": "log", "settings": {"sigma_mm": 1.5}}] + [
        {"id": f"db3-{b}", "filter": "wavelet", "settings": {"wavelet": "db3", "subband": b}} for b in bands]
    return {"setting": {"label": 1}, "ibsi": {"pyradiomics": False, "families": [], "spacing": [s, s, s],
                                              "interpolation": "cubic", "filters": filters}}


def _time(fn, repeat: int) -> tuple[float, int, float]:
    """(best wall seconds, fn's result, CPU seconds of that run: user + system of every thread)."""
    best, n, cpu = float("inf"), 0, float("inf")
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        n = fn()
        w = time.perf_counter() - t
        if w < best:
            best, cpu = w, time.process_time() - c
    return best, n, cpu


def _run_mirp(mirp_py: Path, cases: list) -> dict:
    if not mirp_py.is_file():
        print(f"mirp: skipped ({mirp_py} not found; install with "
              f"'python3 -m venv /tmp/mirp-venv && /tmp/mirp-venv/bin/pip install mirp')")
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "mirp_ibsi2_bench.py"
        script.write_text(MIRP_SCRIPT)
        proc = subprocess.run([str(mirp_py), str(script), json.dumps(cases)], capture_output=True, text=True, cwd=tmp)
    if proc.returncode != 0:
        print("mirp: failed:", (proc.stderr.strip().splitlines() or ["?"])[-1])
        return {}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for k, (t, n) in out.items():
        print(f"mirp     {k:15s} {t:7.2f} s ({n} columns)", flush=True)
    return out


def main(argv=None) -> int:
    from ibsi import sts_arguments  # benchmarks/ibsi.py (this folder is on sys.path when run as a script)

    args = sts_arguments(argv, __doc__, "/tmp/mirp-venv/bin/python")

    import logging

    import SimpleITK as sitk
    from radiomics import featureextractor

    from biomarkers.features.items import compute_rows

    logging.getLogger("radiomics").setLevel(logging.ERROR)
    cases = []
    for modality in args.modalities:
        for patient in args.patients:
            d = SHARED / "sts" / "nifti" / patient
            img_p, msk_p = d / f"{modality}_image.nii.gz", d / f"{modality}_mask.nii.gz"
            if img_p.is_file():
                cases.append((patient, modality, img_p, msk_p))
            else:
                print(f"skip {patient} {modality}: {img_p} not found")
    if not cases:
        print("no cases")
        return 1
    # warm-up (imports, FFT plans) on the first ROI, for every method alike
    wi, wm = sitk.ReadImage(str(cases[0][2])), sitk.ReadImage(str(cases[0][3]))
    compute_rows(wi, wm, _biomarkers_params(cases[0][1]), 1)
    featureextractor.RadiomicsFeatureExtractor(_pyradiomics_params(cases[0][1])).execute(wi, wm, label=1)
    rows, mirp_cases = [], []
    for patient, modality, img_p, msk_p in cases:
        params = _biomarkers_params(modality)
        ex = featureextractor.RadiomicsFeatureExtractor(_pyradiomics_params(modality))
        image, mask = sitk.ReadImage(str(img_p)), sitk.ReadImage(str(msk_p))
        nvox = int(sitk.GetArrayViewFromImage(mask).astype(bool).sum())
        t_bio, n_bio, c_bio = _time(lambda: len(compute_rows(image, mask, params, 1)[0]), args.repeat)
        t_pyr, n_pyr, c_pyr = _time(
            lambda: sum(1 for k in ex.execute(image, mask, label=1) if not k.startswith("diag")), args.repeat)
        lw = _log_wavelet_params(modality)
        t_lw, n_lw, _c = _time(lambda: len(compute_rows(image, mask, lw, 1)[0]), args.repeat)
        key = f"{patient}/{modality}"
        rows.append(dict(key=key, modality=modality, voxels=nvox, biomarkers=t_bio, pyradiomics=t_pyr, lw=t_lw,
                         cpu_bio=c_bio, cpu_pyr=c_pyr))
        print(f"{patient:8s} {modality:6s} {image.GetSize()} {nvox:7d} vox  biomarkers {t_bio:6.2f} s ({n_bio} values, "
              f"CPU {c_bio:.2f} s)  pyradiomics LoG+wavelet {t_pyr:6.2f} s ({n_pyr} values, CPU {c_pyr:.2f} s)  "
              f"bio-LoG+wav {t_lw:6.2f} s ({n_lw} values)", flush=True)
        mirp_cases.append([key, str(img_p), str(msk_p), "MR" if modality == "MR_T1" else modality, SPACING[modality]])
    mirp = {} if args.no_mirp else _run_mirp(Path(args.mirp_python), mirp_cases)
    if args.no_mirp:
        print("mirp: skipped (--no-mirp)")

    print("\nseconds per ROI (median over ROIs) and ratios (median of per-ROI ratios)")
    print(f"{'modality':8s} {'ROIs':>4s} {'biomarkers':>10s} {'mirp':>8s} {'pyradiomics':>11s} {'bio-LoG+wav':>11s} "
          f"{'mirp/bio':>9s} {'bio/pyr':>8s} {'bio-LoG+wav/pyr':>15s} {'CPU bio/pyr':>11s}")
    groups: dict[str, list] = {}
    for r in rows:
        groups.setdefault(r["modality"], []).append(r)
    groups["all"] = rows
    for g, rs in groups.items():
        med_b = statistics.median(r["biomarkers"] for r in rs)
        med_p = statistics.median(r["pyradiomics"] for r in rs)
        mt = [mirp[r["key"]][0] for r in rs if r["key"] in mirp]
        med_m = statistics.median(mt) if mt else float("nan")
        r_m = statistics.median(mirp[r["key"]][0] / r["biomarkers"] for r in rs if r["key"] in mirp) if mt else float("nan")
        r_p = statistics.median(r["biomarkers"] / r["pyradiomics"] for r in rs)
        med_l = statistics.median(r["lw"] for r in rs)
        r_l = statistics.median(r["lw"] / r["pyradiomics"] for r in rs)
        r_c = statistics.median(r["cpu_bio"] / r["cpu_pyr"] for r in rs)
        print(f"{g:8s} {len(rs):4d} {med_b:10.2f} {med_m:8.2f} {med_p:11.2f} {med_l:11.2f} {r_m:9.1f} {r_p:8.2f} "
              f"{r_l:15.2f} {r_c:11.2f}")
    print(f"\ntargets: mirp/bio >= 5; bio/pyr <= 1 (wall time; CPU = user + system of all threads of this process)"
          f"\nload average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
