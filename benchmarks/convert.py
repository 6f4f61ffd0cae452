"""Benchmark: DICOM -> NIfTI with ``biomarkers ingest`` vs dcm2niix, same data, same run.

Usage::

    .venv/bin/python benchmarks/convert.py [--data ../shared/data] [--repeat 3] [--executor local]

Both tools convert the shared image series (six STS patients x CT/MR/PET and the
IBSI CT phantom; RTSTRUCTs are left out so both do the same work) to ``.nii.gz``
with their default settings (biomarkers: gzip level 1, executor ``auto``, and
also ``local``: one process per core; dcm2niix: ``-z y``). Each tool runs as a separate process (the biomarkers number
includes Python start-up and imports); the best of ``--repeat`` runs is reported.
Peak memory is the largest sum of RSS over the tool's process tree (sampled every
10 ms). Agreement per series: shape, world geometry (closest canonical RAS:
origin mm, direction) and voxel values (max |difference|, relative to the max).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def run_measured(cmd: list[str], env: dict | None = None) -> tuple[float, float, float]:
    """Run ``cmd``; return (wall s, peak RSS of the process tree in MB, CPU s user+sys of the tree)."""
    import resource

    import psutil

    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    proc = psutil.Process(p.pid)
    peak = 0
    while p.poll() is None:
        try:
            rss = proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(recursive=True))
            peak = max(peak, rss)
        except psutil.Error:
            pass
        time.sleep(0.01)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed ({p.returncode}): {p.stderr.read().decode()[-2000:]}")
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)  # includes the workers the tool waited for
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return wall, peak / 2**20, cpu


def image_tree(data: Path, dest: Path) -> list[Path]:
    """Symlink every image file (no RTSTRUCT) into dest/<case>/<series>/; return the series folders."""
    series = []
    for p in sorted((data / "sts" / "dicom").glob("STS_*/*/image")) + [data / "ibsi1_ct_phantom" / "dicom" / "image"]:
        d = dest / p.parent.parent.name / p.parent.name
        d.mkdir(parents=True, exist_ok=True)
        for f in p.iterdir():
            (d / f.name).symlink_to(f)
        series.append(p)
    return series


def dcm2niix_bin() -> str:
    try:
        import dcm2niix

        return str(dcm2niix.bin)
    except Exception:  # noqa: BLE001
        return str(Path(sys.executable).parent / "dcm2niix")


def compare(ours: Path, theirs: Path) -> dict:
    import nibabel as nib

    a = nib.as_closest_canonical(nib.load(str(ours)))
    b = nib.as_closest_canonical(nib.load(str(theirs)))
    if a.shape[:3] != b.shape[:3]:
        return {"shape": f"{a.shape} vs {b.shape}"}
    va = np.asanyarray(a.dataobj).astype(np.float64)
    vb = np.asanyarray(b.get_fdata()).reshape(va.shape)
    sa, sb = np.linalg.norm(a.affine[:3, :3], axis=0), np.linalg.norm(b.affine[:3, :3], axis=0)
    return {
        "shape": "same",
        "origin_mm": float(np.max(np.abs(a.affine[:3, 3] - b.affine[:3, 3]))),
        "direction": float(np.max(np.abs(a.affine[:3, :3] / sa - b.affine[:3, :3] / sb))),
        "max_abs_diff": float(np.max(np.abs(va - vb))),
        "rel_diff": float(np.max(np.abs(va - vb)) / max(1e-12, float(np.max(np.abs(vb))))),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--executors", default="auto,local", help="comma-separated biomarkers executors to time")
    args = ap.parse_args()
    env = dict(os.environ)
    env.setdefault("BIOMARKERS_SECRET", "benchmark-secret-0123456789")
    os.environ.update(BIOMARKERS_SECRET=env["BIOMARKERS_SECRET"])
    biomarkers = [str(Path(sys.executable).parent / "biomarkers")]
    if not Path(biomarkers[0]).exists():
        biomarkers = [sys.executable, "-m", "biomarkers"]
    with tempfile.TemporaryDirectory(prefix="bm-bench-") as tmp:
        tmp = Path(tmp)
        src = tmp / "src"
        series = image_tree(args.data, src)
        n_files = sum(1 for p in src.rglob("*") if p.is_symlink())
        size_mb = sum(f.resolve().stat().st_size for f in src.rglob("*") if f.is_symlink()) / 2**20
        execs = [e.strip() for e in args.executors.split(",") if e.strip()]
        ours = {e: {"t": [], "m": [], "c": []} for e in execs}
        theirs = {"t": [], "m": [], "c": []}
        for r in range(args.repeat):  # interleaved, so load changes hit both tools alike
            for e in execs:
                w, m, c = run_measured(biomarkers + ["--quiet", "ingest", str(src), str(tmp / f"bm-{e}-{r}"), "--executor", e], env)
                ours[e]["t"].append(w)
                ours[e]["m"].append(m)
                ours[e]["c"].append(c)
            out_d = tmp / f"d2n{r}"
            out_d.mkdir()
            w, m, c = run_measured([dcm2niix_bin(), "-z", "y", "-f", "%j", "-o", str(out_d), str(src)], env)
            theirs["t"].append(w)
            theirs["m"].append(m)
            theirs["c"].append(c)
        print(f"{len(series)} series, {n_files} files, {size_mb:.1f} MB of DICOM; {os.cpu_count()} cores; "
              f"load average {os.getloadavg()[0]:.1f} at the end (machine shared with other jobs); best of {args.repeat}")

        def line(name, d):
            return (f"{name:28s} wall {min(d['t']):6.2f} s (runs {', '.join(f'{x:.2f}' for x in d['t'])}), "
                    f"peak {max(d['m']):4.0f} MB, CPU {min(d['c']):5.2f} s")

        print(line("dcm2niix -z y", theirs))
        for e in execs:
            d = ours[e]
            print(line(f"biomarkers ingest -e {e}", d))
            print(f"{'':28s} ratio to dcm2niix: wall {min(d['t']) / min(theirs['t']):.2f} (target <= 1.5), "
                  f"CPU {min(d['c']) / min(theirs['c']):.2f}; peak memory < 300 MB: {'yes' if max(d['m']) < 300 else 'NO'}")
        first = tmp / f"bm-{execs[0]}-0"
        # agreement per series
        import pandas as pd
        import pydicom

        from biomarkers.deid import Deidentifier

        deid = Deidentifier()
        df = pd.read_parquet(first / "manifest.parquet")
        print(f"\n{'series':24s} {'shape':>6s} {'origin mm':>10s} {'direction':>10s} {'max|diff|':>10s} {'rel':>9s}")
        for s in series:
            f = next(s.iterdir())
            ds = pydicom.dcmread(f, stop_before_pixels=True)
            uid = str(ds.SeriesInstanceUID)
            row = df[(df.series_uid == deid.uid(uid)) & (df.kind == "image")]
            theirs = tmp / "d2n0" / f"{uid}.nii.gz"
            name = f"{s.parent.parent.name}/{s.parent.name}"
            if row.empty or not theirs.exists():
                print(f"{name:24s} missing output (biomarkers: {not row.empty}, dcm2niix: {theirs.exists()})")
                continue
            c = compare(first / row.path.iloc[0], theirs)
            if c["shape"] != "same":
                print(f"{name:24s} shape differs: {c['shape']}")
                continue
            print(f"{name:24s} {'same':>6s} {c['origin_mm']:10.2e} {c['direction']:10.2e} {c['max_abs_diff']:10.3g} {c['rel_diff']:9.2e}")


if __name__ == "__main__":
    main()
