"""Benchmark of `biomarkers extract` against plain pyradiomics, on the shared STS cases.

Prints, all measured in this one run on this machine:

* seconds per item for plain pyradiomics (``RadiomicsFeatureExtractor.execute`` called directly,
  one process) and for the framework (``run_extract`` with the serial executor: same process,
  so the difference is the framework: planning, hashing, checks, item files, tables), and the
  overhead in percent (target < 10 %);
* the speed-up of 2 worker processes over 1 (``local:2`` vs ``local:1``), as a fraction of the
  machine's own ceiling: the speed-up of a pure-CPU calibration task of about the same length per
  item, run through the same executor (target >= 90 % of the ceiling);
* the peak resident memory of a worker (MB).

Usage::

    python benchmarks/extract.py [--modalities CT,MR_T1,PET] [--patients 6] [--filters] [--json OUT]

``--filters`` adds LoG (sigma 1, 3 mm) and Wavelet image types (the IBSI-2-style filtered features).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("BIOMARKERS_SHARED_DATA", REPO.parent / "shared" / "data"))
sys.path.insert(0, str(REPO / "tests"))
MODS = {"CT": ("CT", "ct.yaml"), "MR_T1": ("MR", "mr.yaml"), "PET": ("PT", "pet.yaml")}


def calibration_task(n: int) -> float:
    """Pure-CPU work (integer arithmetic, no memory traffic, no I/O)."""
    x = 0
    for i in range(n):
        x = (x * 1103515245 + i) & 0xFFFFFFFF
    return float(x)


def warm_task(_: int) -> int:
    """Start-up work of a worker (imports), done before any timing."""
    import radiomics  # noqa: F401
    import SimpleITK  # noqa: F401

    from biomarkers.features import items  # noqa: F401

    time.sleep(0.5)  # keep this worker busy so the pool starts the next one
    return 0


def plain_task(payload: tuple[str, str, str]) -> float:
    """Plain pyradiomics on one case inside a worker; returns the worker's peak RSS (MB)."""
    import yaml
    from radiomics import featureextractor

    from biomarkers.features.items import peak_rss_mb
    from biomarkers.features.params import strip_extra

    params, img, msk = payload
    featureextractor.RadiomicsFeatureExtractor(strip_extra(yaml.safe_load(Path(params).read_text()))).execute(img, msk)
    return peak_rss_mb()


def _warm(ex) -> None:
    out = list(ex.map_unordered(warm_task, [(str(i), 0) for i in range(ex.workers)]))
    assert all(o.ok for o in out), out


def _time_calibration(executor: str, n_items: int, loops: int) -> float:
    from biomarkers.executors import get_executor

    with get_executor(executor) as ex:
        _warm(ex)
        t = time.perf_counter()
        out = list(ex.map_unordered(calibration_task, [(str(i), loops) for i in range(n_items)]))
        dt = time.perf_counter() - t
    assert all(o.ok for o in out)
    return dt


def _time_extract(ds, spec, out, executor: str) -> tuple[float, object]:
    from biomarkers.executors import get_executor
    from biomarkers.features import run_extract

    with get_executor(executor) as ex:
        _warm(ex)
        t = time.perf_counter()
        rep = run_extract(ds, spec, out, executor=ex)
        dt = time.perf_counter() - t
    return dt, rep


def _params(name: str, filters: bool, tmp: Path) -> Path:
    p = REPO / "configs" / "radiomics" / name
    if not filters:
        return p
    import yaml

    d = yaml.safe_load(p.read_text())
    d["imageType"] = {"Original": {}, "LoG": {"sigma": [1.0, 3.0]}, "Wavelet": {}}
    out = tmp / f"filters_{name}"
    out.write_text(yaml.safe_dump(d))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--modalities", default="CT", help="comma-separated: CT, MR_T1, PET (default CT)")
    ap.add_argument("--patients", type=int, default=6)
    ap.add_argument("--filters", action="store_true", help="add LoG and Wavelet image types")
    ap.add_argument("--repeat", type=int, default=2, help="rounds (minimum reported; default 2)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    import yaml
    from radiomics import featureextractor

    from biomarkers.features import run_extract
    from biomarkers.features.params import strip_extra
    from test_features_extract import make_dataset  # the same small dataset builder the tests use

    logging.getLogger("radiomics").setLevel(logging.ERROR)
    load0 = os.getloadavg()[0]
    patients = [f"STS_00{i}" for i in range(1, args.patients + 1)]
    mods = [m.strip() for m in args.modalities.split(",") if m.strip()]
    tmp = Path(tempfile.mkdtemp(prefix="bench-extract-"))
    params = {MODS[m][0]: _params(MODS[m][1], args.filters, tmp) for m in mods}
    cases = [(p, MODS[m][0], SHARED / "sts/nifti" / p / f"{m}_image.nii.gz", SHARED / "sts/nifti" / p / f"{m}_mask.nii.gz")
             for p in patients for m in mods]
    ds = make_dataset(tmp / "dataset", cases)
    spec = [f"{k}={v}" for k, v in params.items()]
    n = len(cases)

    extractors = {k: featureextractor.RadiomicsFeatureExtractor(strip_extra(yaml.safe_load(Path(v).read_text())))
                  for k, v in params.items()}
    loops = 2_000_000
    t0 = time.perf_counter()
    calibration_task(loops)
    loops_per_s = loops / (time.perf_counter() - t0)
    tp, tf, tw1, tw2, tc1, tc2, cp, cf = [], [], [], [], [], [], [], []
    peak = 0.0
    n_features = 0
    for rnd in range(args.repeat):  # rounds alternate the variants; the minimum of each is reported
        # 1. plain pyradiomics, one process
        t, c = time.perf_counter(), time.process_time()
        for _p, mod, img, msk in cases:
            r = extractors[mod].execute(str(img), str(msk))
            n_features = max(n_features, sum(1 for k in r if not k.startswith("diagnostics_")))
        tp.append(time.perf_counter() - t)
        cp.append(time.process_time() - c)
        # 2. the framework, same process (serial executor), nothing cached
        t, c = time.perf_counter(), time.process_time()
        rep = run_extract(ds, spec, tmp / f"f_serial{rnd}", executor="serial")
        tf.append(time.perf_counter() - t)
        cf.append(time.process_time() - c)
        assert rep.n_computed() == n, rep.summary()
        # 3. 1 vs 2 worker processes (started and warmed before timing; fresh output folders), each next
        #    to the ceiling: pure-CPU items of about one plain item each, through the same executor
        cal = max(100_000, int(loops_per_s * min(tp) / n))
        tc1.append(_time_calibration("local:1", n, cal))
        dt, r1 = _time_extract(ds, spec, tmp / f"f_w1_{rnd}", "local:1")
        tw1.append(dt)
        tc2.append(_time_calibration("local:2", n, cal))
        dt, r2 = _time_extract(ds, spec, tmp / f"f_w2_{rnd}", "local:2")
        tw2.append(dt)
        assert r1.n_computed() == n and r2.n_computed() == n
        peak = max([peak] + [c.details.get("peak_rss_mb", 0) for c in r1.cases + r2.cases])
    t_plain, t_fw, t_w1, t_w2, c1, c2 = map(min, (tp, tf, tw1, tw2, tc1, tc2))
    # peak memory of a plain-pyradiomics worker doing the same items (same executor)
    from biomarkers.executors import get_executor

    with get_executor("local:1") as ex:
        outs = list(ex.map_unordered(plain_task, [(str(i), (str(params[mod]), str(img), str(msk)))
                                                 for i, (_p, mod, img, msk) in enumerate(cases)]))
    peak_plain = max(o.value for o in outs if o.ok)

    speedup, ceiling = t_w1 / t_w2, c1 / c2
    res = {
        "items": n,
        "modalities": mods,
        "image_types": "Original+LoG+Wavelet" if args.filters else "Original",
        "features_per_item": n_features,
        "plain_pyradiomics_s_per_item": t_plain / n,
        "biomarkers_serial_s_per_item": t_fw / n,
        "framework_overhead_pct": 100 * (t_fw / t_plain - 1),
        "plain_pyradiomics_cpu_s_per_item": min(cp) / n,
        "biomarkers_serial_cpu_s_per_item": min(cf) / n,
        "framework_overhead_cpu_pct": 100 * (min(cf) / min(cp) - 1),
        "local1_s_per_item": t_w1 / n,
        "local2_s_per_item": t_w2 / n,
        "speedup_2_over_1": speedup,
        "calibration_speedup_ceiling": ceiling,
        "speedup_fraction_of_ceiling_pct": 100 * speedup / ceiling,
        "peak_worker_rss_mb": peak,
        "peak_plain_pyradiomics_worker_rss_mb": peak_plain,
        "cpu_count": os.cpu_count(),
        "repeat": args.repeat,
        "load_average_1min_before": load0,
        "load_average_1min_after": os.getloadavg()[0],
    }
    print(f"items: {n} ({', '.join(mods)}; {res['image_types']}; {n_features} features per item)")
    print(f"plain pyradiomics        {res['plain_pyradiomics_s_per_item']:.3f} s/item")
    print(f"biomarkers extract       {res['biomarkers_serial_s_per_item']:.3f} s/item (serial executor)   "
          f"overhead {res['framework_overhead_pct']:+.1f} %  (target < 10 %)")
    print(f"CPU time per item        plain {res['plain_pyradiomics_cpu_s_per_item']:.3f} s, biomarkers "
          f"{res['biomarkers_serial_cpu_s_per_item']:.3f} s   overhead {res['framework_overhead_cpu_pct']:+.1f} % "
          "(CPU time: insensitive to other processes)")
    print(f"biomarkers extract       {res['local1_s_per_item']:.3f} s/item with 1 worker, "
          f"{res['local2_s_per_item']:.3f} s/item with 2 workers")
    print(f"speed-up 2 vs 1 workers  {speedup:.2f}x; calibration ceiling {ceiling:.2f}x; "
          f"fraction of ceiling {res['speedup_fraction_of_ceiling_pct']:.0f} %  (target >= 90 %)")
    print(f"peak memory per worker   {peak:.0f} MB (a plain pyradiomics worker on the same items: {peak_plain:.0f} MB)")
    print(f"(min of {args.repeat} rounds; load average {load0:.1f} before, {os.getloadavg()[0]:.1f} after, "
          f"on {os.cpu_count()} CPUs: wall-clock ratios are only meaningful on an otherwise idle machine)")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
