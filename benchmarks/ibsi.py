"""Time per ROI of IBSI-compliant extraction vs plain pyradiomics (and mirp, if it installs).

Run from the repository root::

    .venv/bin/python benchmarks/ibsi.py [--patients STS_001 ...] [--modalities CT MR_T1 PET]
                                        [--repeat 1] [--mirp-python /tmp/mirpvenv/bin/python]

On the shared STS cases (reference NIfTI in ../shared/data/sts/nifti), one ROI per
patient and modality, the same process, methods interleaved per ROI:

* ``pyradiomics``   -- ``RadiomicsFeatureExtractor.execute`` with configs/radiomics/<modality>.yaml
  (the parameter file without its ``ibsi:`` section): Original image, all classes (~107-129 features).
* ``ibsi``          -- biomarkers in IBSI mode, IBSI features only (``ibsi: {pyradiomics: false}``)
  through the extraction worker (``biomarkers.features.items.compute_rows``): IBSI processing
  and every IBSI 1 feature family in 3D (~210 features).
* ``ibsi+pyrad``    -- the same worker with both pyradiomics and the IBSI module.
* ``mirp``          -- mirp's ``extract_features`` in its own virtualenv (``pip install mirp`` into
  e.g. /tmp/mirpvenv; skipped with a message if not found), same bin settings, 3D features,
  timed inside the mirp process per ROI (import and a warm-up call excluded).

Prints seconds per ROI (median over ROIs), and the ratios ibsi / pyradiomics and mirp / ibsi.
No timing asserts anywhere: numbers go to the README.
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
PARAM_FILES = {"CT": "ct.yaml", "MR_T1": "mr.yaml", "PET": "pet.yaml"}
#: IBSI sections per modality (same bin settings as the pyradiomics files; MR by fixed bin number)
IBSI = {
    "CT": {"discretisation": "fbs", "bin_width": 25, "aggregation": ["3D"]},
    "MR_T1": {"discretisation": "fbn", "bin_width": None, "bin_count": 32, "aggregation": ["3D"]},
    "PET": {"discretisation": "fbs", "bin_width": 0.25, "aggregation": ["3D"]},
}
MIRP = {
    "CT": dict(base_discretisation_method="fixed_bin_size", base_discretisation_bin_width=25.0),
    "MR_T1": dict(base_discretisation_method="fixed_bin_number", base_discretisation_n_bins=32),
    "PET": dict(base_discretisation_method="fixed_bin_size", base_discretisation_bin_width=0.25),
}

MIRP_SCRIPT = r"""
import json, sys, time, warnings
warnings.filterwarnings("ignore")
from mirp import extract_features
cases = json.loads(sys.argv[1])
out = {}
for n, (key, img, msk, modality, kw) in enumerate([cases[0]] + cases):
    t = time.perf_counter()
    res = extract_features(image=img, mask=msk, image_modality=modality, by_slice=False,
                           ibsi_compliant=True, **kw)
    if n > 0:  # the first call is a warm-up (lazy imports, JIT), like for the other methods
        out[key] = [time.perf_counter() - t, int(res[0].shape[1]) if res else 0]
print(json.dumps(out))
"""


def _params(modality: str) -> dict:
    import yaml

    p = yaml.safe_load((REPO / "configs" / "radiomics" / PARAM_FILES[modality]).read_text())
    p.pop("ibsi", None)
    return p


def _time(fn, repeat: int) -> tuple[float, int]:
    best, n = float("inf"), 0
    for _ in range(repeat):
        t = time.perf_counter()
        n = fn()
        best = min(best, time.perf_counter() - t)
    return best, n


def sts_arguments(argv, doc: str, mirp_python: str) -> argparse.Namespace:
    """The options the STS benchmarks share (``--modalities`` are the shared STS folder names)."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--patients", nargs="*", default=[f"STS_00{i}" for i in range(1, 7)])
    ap.add_argument("--modalities", nargs="*", default=["CT", "MR_T1", "PET"])
    ap.add_argument("--repeat", type=int, default=1, help="best of N runs per method and ROI")
    ap.add_argument("--mirp-python", default=mirp_python)
    ap.add_argument("--no-mirp", action="store_true")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = sts_arguments(argv, __doc__, "/tmp/mirpvenv/bin/python")

    import logging

    import SimpleITK as sitk
    from radiomics import featureextractor

    from biomarkers.features.items import compute_rows

    logging.getLogger("radiomics").setLevel(logging.ERROR)
    # warm-up (imports, FFT plans) on the IBSI digital phantom, for every method alike
    ph = SHARED / "ibsi1_digital_phantom"
    wi, wm = sitk.ReadImage(str(ph / "image.nii.gz")), sitk.ReadImage(str(ph / "mask.nii.gz"))
    warm = {**_params("CT"), "ibsi": {**IBSI["CT"], "pyradiomics": False}}
    compute_rows(wi, wm, warm, 1)
    featureextractor.RadiomicsFeatureExtractor(_params("CT")).execute(wi, wm, label=1)
    rows = []
    mirp_cases = []
    for modality in args.modalities:
        params = _params(modality)
        with_ibsi = {**params, "ibsi": {**IBSI[modality], "pyradiomics": False}}
        both = {**params, "ibsi": dict(IBSI[modality])}
        for patient in args.patients:
            d = SHARED / "sts" / "nifti" / patient
            img_p, msk_p = d / f"{modality}_image.nii.gz", d / f"{modality}_mask.nii.gz"
            if not img_p.is_file():
                print(f"skip {patient} {modality}: {img_p} not found")
                continue
            image, mask = sitk.ReadImage(str(img_p)), sitk.ReadImage(str(msk_p))
            nvox = int(sitk.GetArrayViewFromImage(mask).astype(bool).sum())
            ex = featureextractor.RadiomicsFeatureExtractor(params)
            t_pyr, n_pyr = _time(lambda: len(ex.execute(image, mask, label=1)), args.repeat)
            t_ibsi, n_ibsi = _time(lambda: len(compute_rows(image, mask, with_ibsi, 1)[0]), args.repeat)
            t_both, n_both = _time(lambda: len(compute_rows(image, mask, both, 1)[0]), args.repeat)
            rows.append(dict(key=f"{patient}/{modality}", modality=modality, voxels=nvox, pyradiomics=t_pyr,
                             ibsi=t_ibsi, both=t_both, n_pyr=n_pyr, n_ibsi=n_ibsi))
            print(f"{patient:8s} {modality:6s} {nvox:7d} vox  pyradiomics {t_pyr:6.2f} s ({n_pyr} values)  "
                  f"ibsi {t_ibsi:6.2f} s ({n_ibsi} features)  ibsi+pyrad {t_both:6.2f} s", flush=True)
            mirp_cases.append([f"{patient}/{modality}", str(img_p), str(msk_p),
                               "MR" if modality == "MR_T1" else modality, MIRP[modality]])

    mirp = {}
    mirp_py = Path(args.mirp_python)
    if args.no_mirp:
        print("mirp: skipped (--no-mirp)")
    elif not mirp_py.is_file():
        print(f"mirp: skipped ({mirp_py} not found; install with "
              f"'python -m venv /tmp/mirpvenv && /tmp/mirpvenv/bin/pip install mirp')")
    else:
        with tempfile.TemporaryDirectory() as tmp:
            script = Path(tmp) / "mirp_bench.py"
            script.write_text(MIRP_SCRIPT)
            proc = subprocess.run([str(mirp_py), str(script), json.dumps(mirp_cases)], capture_output=True,
                                  text=True, cwd=tmp)
        if proc.returncode != 0:
            print("mirp: failed:", (proc.stderr.strip().splitlines() or ["?"])[-1])
        else:
            mirp = json.loads(proc.stdout.strip().splitlines()[-1])
            for k, (t, n) in mirp.items():
                print(f"mirp     {k:15s} {t:6.2f} s ({n} columns)")

    if not rows:
        print("no cases")
        return 1
    print("\nseconds per ROI (median over ROIs) and ratios")
    print(f"{'modality':8s} {'ROIs':>4s} {'pyradiomics':>11s} {'ibsi':>7s} {'ibsi+pyr':>8s} {'mirp':>7s} "
          f"{'ibsi/pyr':>8s} {'(ibsi+pyr)/pyr':>14s} {'mirp/ibsi':>9s}")
    groups = {}
    for r in rows:
        groups.setdefault(r["modality"], []).append(r)
    groups["all"] = rows
    for g, rs in groups.items():
        med = {m: statistics.median(r[m] for r in rs) for m in ("pyradiomics", "ibsi", "both")}
        mt = [mirp[r["key"]][0] for r in rs if r["key"] in mirp]
        m_med = statistics.median(mt) if mt else float("nan")
        ratio_ibsi = statistics.median(r["ibsi"] / r["pyradiomics"] for r in rs)
        ratio_both = statistics.median(r["both"] / r["pyradiomics"] for r in rs)
        ratio_mirp = (statistics.median(mirp[r["key"]][0] / r["ibsi"] for r in rs if r["key"] in mirp)
                      if mt else float("nan"))
        print(f"{g:8s} {len(rs):4d} {med['pyradiomics']:11.2f} {med['ibsi']:7.2f} {med['both']:8.2f} {m_med:7.2f} "
              f"{ratio_ibsi:8.2f} {ratio_both:14.2f} {ratio_mirp:9.1f}")
    print("\ntargets: ibsi/pyr <= 1.5; mirp/ibsi >= 5")
    return 0


if __name__ == "__main__":
    sys.exit(main())
