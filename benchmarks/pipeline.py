"""Benchmark of the end-to-end pipeline on a synthetic cohort, all figures from one run.

Usage::

    .venv/bin/python benchmarks/pipeline.py [--patients 200] [--workers 2] [--out DIR] [--keep] [--compare TREE]

Prints:

* cold time: a first run (ingest with de-identification, extraction CT+PET, clinical
  loading and linkage, MLflow logging; no modelling) with ``local:W``;
* warm rerun (nothing changed) as a fraction of cold (target < 5%);
* the same pipeline after adding 10 patients, as a fraction of cold (target < 10%);
* the speed-up of W workers over 1 (cold runs on the same cohort) as a fraction of the
  machine's ceiling, the speed-up of a pure-CPU calibration task run the same way
  through the same executor, in the same run (measured twice before and twice after the
  pipeline runs, best of each; target >= 90%);
* peak memory (max RSS) of the coordinating process (the ``biomarkers run`` process,
  not its workers) at N/4 and N patients (target: no more than 1.2x apart);
* the ``qc`` stage's time as a fraction of cold (target <= 10%) and the QC cards it rendered
  cold, warm (target 0: nothing re-rendered) and after the 10 added patients.

Each pipeline run is a separate ``python -c`` process (start-up and imports included) so
its peak RSS is measured with ``getrusage(RUSAGE_SELF)`` inside it; its CPU time is that of the
process tree (user + sys of the run and the workers it waited for).

``--compare TREE`` (repeatable): another checkout of the project, e.g. the commit before the
refactor of issue 16 (``git worktree add /tmp/bm-3a96b76 3a96b76``), run in the same benchmark
on the same cohort and executor (``PYTHONPATH=TREE``): cold, warm and +10 patients, interleaved
with the same runs of this tree with the stages the older tree has (``qc`` off here; it came
later), and printed side by side with the ratios this tree / TREE (wall and CPU time).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

#: In-plane resolution of the benchmark cohort (``synth --scale``): 4 gives 384x384 CT slices
#: at 0.85-0.9 mm and 192x192 PET at 1.7-1.8 mm, the resolution of clinical images, so that
#: each patient costs what a real one does. (At the demo's scale 1, 96x96 CT at 3.5 mm, a
#: patient costs ~0.1 s and the run's fixed costs, start-up and MLflow, dominate every ratio.)
SCALE = 4.0

RUNNER = r"""
import json, resource, sys, time
from pipelines import Pipeline, load_config
t0 = time.perf_counter()
p = Pipeline(load_config(sys.argv[1]), executor=sys.argv[2])
rep = p.run()
el = time.perf_counter() - t0
stages = {k: {"status": v.status, "s": v.elapsed_s, "computed": v.computed} for k, v in p.stages.items()}
print("@@" + json.dumps({"elapsed": el, "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                         "stages": stages, "counts": rep.counts()}))
"""


def burn(n: int) -> int:
    """Pure-CPU calibration work (no I/O, no numpy)."""
    acc = 0
    for i in range(n):
        acc = (acc * 31 + i) % 1000003
    return acc


def calibrate(workers: int, items: int, n: int) -> float:
    """Wall time of ``items`` calibration items through ``local:workers`` (pool already started)."""
    from biomarkers.executors import get_executor

    with get_executor(f"local:{workers}") as ex:
        for o in ex.map_unordered(burn, [(str(i), 1000) for i in range(2 * workers)]):  # start the workers
            assert o.ok, o.error
        t0 = time.perf_counter()
        for o in ex.map_unordered(burn, [(str(i), n) for i in range(items)]):
            assert o.ok, o.error
        return time.perf_counter() - t0


def write_config(root: Path, name: str, cohort: str, qc: bool | None = None) -> Path:
    """The benchmark's pipeline config ``ROOT/NAME.yaml`` (``qc``: the section ``qc: {enabled: qc}``,
    None: no ``qc`` section, as for a tree older than the stage)."""
    from pipelines.demo import DEMO_PARAMS, DEMO_SCHEMA

    for k, v in DEMO_PARAMS.items():
        (root / "params").mkdir(exist_ok=True)
        (root / "params" / f"{k}.yaml").write_text(yaml.safe_dump(v))
    cfg = {
        "name": name,
        "source": {"dicom": f"{cohort}/dicom", "clinical": [f"{cohort}/clinical/*.csv"]},
        "out": f"out_{name}",
        "tracking": {"uri": "mlflow.db", "experiment": "benchmark"},
        "deid": {"demo": True},
        "ingest": {"masks": {"rois": {"GTV": ["GTV", "GTV_primary", "gtv"]}}},
        "extract": {"params": {"CT": "params/ct.yaml", "PT": "params/pet.yaml"}},
        "clinical": {"schema": DEMO_SCHEMA},
        **({} if qc is None else {"qc": {"enabled": qc}}),
    }
    p = root / f"{name}.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def run(cfg: Path, executor: str, tree: Path = REPO) -> dict:
    """One pipeline run of the code in ``tree``: the runner's figures + ``cpu_s`` of its process tree."""
    import resource

    env = dict(os.environ)
    env.pop("BIOMARKERS_SECRET", None)  # demo secret (synthetic data)
    env.pop("MLFLOW_TRACKING_URI", None)
    # each configuration has its own hospital-side index cache: a cold run starts without one
    env["BIOMARKERS_CACHE_DIR"] = str(cfg.parent / f"cache_{cfg.stem}")
    env["PYTHONPATH"] = os.pathsep.join([str(tree)] + [x for x in env.get("PYTHONPATH", "").split(os.pathsep) if x])
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    p = subprocess.run([sys.executable, "-c", RUNNER, str(cfg), executor], cwd=cfg.parent, env=env,
                       capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = [ln for ln in p.stdout.splitlines() if ln.startswith("@@")]
    if p.returncode != 0 or not line:
        raise SystemExit(f"pipeline run failed ({cfg.name}, {executor}, {tree}):\n{p.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {**json.loads(line[0][2:]), "cpu_s": cpu}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patients", type=int, default=200)
    ap.add_argument("--centres", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--scale", type=float, default=SCALE,
                    help="in-plane resolution of the synthetic images (synth --scale; default %(default)s)")
    ap.add_argument("--out", type=Path, default=None, help="work folder (default: a temporary folder)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--compare", type=Path, action="append", default=[], metavar="TREE",
                    help="another checkout run on the same cohort (e.g. a git worktree of the commit before a "
                         "change); repeatable")
    a = ap.parse_args(argv)
    from biomarkers.synth import synthesize

    root = Path(a.out or tempfile.mkdtemp(prefix="bm-bench-pipeline-")).resolve()
    root.mkdir(parents=True, exist_ok=True)
    n, small, w = a.patients, max(1, a.patients // 4), a.workers
    print(f"benchmark folder: {root}; {n} patients, {a.centres} centres, scale {a.scale:g}, {w} workers, "
          f"{os.cpu_count()} CPUs")
    t0 = time.perf_counter()
    kw = dict(centres=a.centres, seed=1, executor=f"local:{w}", scale=a.scale)
    synthesize(root / "cohort", patients=n, **kw)
    synthesize(root / "cohort_small", patients=small, **kw)
    print(f"synthetic cohorts written in {time.perf_counter() - t0:.0f} s")

    # machine ceiling: the same executor, pure CPU work, 1 vs W workers
    # (measured twice before and twice after the pipeline runs, best of each: the machine may be shared)
    items, per = 8 * w, 4_000_000
    c1 = [calibrate(1, items, per) for _ in range(2)]
    cw = [calibrate(w, items, per) for _ in range(2)]

    # the MLflow store exists before the timed runs, so that no run pays its creation
    from biomarkers.tracking import get_or_create_experiment, tracking_uri

    get_or_create_experiment("benchmark", tracking_uri(str(root / "mlflow.db")))

    for tree in a.compare:
        if not (tree / "pipelines" / "__init__.py").is_file():
            raise SystemExit(f"--compare {tree}: not a checkout of this project (no pipelines/ package)")
    # this tree with the stages an older tree has (qc off), then each other tree: cold, warm (+10 patients below)
    trees = [("this tree, qc off", REPO, False)] + [(str(t), t.resolve(), None) for t in a.compare]
    cmp = {label: {} for label, _, _ in trees} if a.compare else {}
    one = run(write_config(root, "one", "cohort"), "local:1")
    cold = run(write_config(root, "main", "cohort"), f"local:{w}")
    warm = run(root / "main.yaml", f"local:{w}")
    for i, (label, tree, qc) in enumerate(trees if a.compare else []):
        cmp[label]["cold"] = run(write_config(root, f"cmp{i}", "cohort", qc=qc), f"local:{w}", tree)
        cmp[label]["warm"] = run(root / f"cmp{i}.yaml", f"local:{w}", tree)
    synthesize(root / "cohort", patients=n + 10, **kw)
    added = run(root / "main.yaml", f"local:{w}")
    for i, (label, tree, _) in enumerate(trees if a.compare else []):
        cmp[label]["added"] = run(root / f"cmp{i}.yaml", f"local:{w}", tree)
    small_run = run(write_config(root, "small", "cohort_small"), f"local:{w}")
    c1 += [calibrate(1, items, per) for _ in range(2)]
    cw += [calibrate(w, items, per) for _ in range(2)]
    ceiling = min(c1) / min(cw)

    speedup = one["elapsed"] / cold["elapsed"]
    par = {s: (one["stages"][s]["s"] / cold["stages"][s]["s"]) for s in ("ingest", "extract")
           if cold["stages"][s]["s"] > 0}
    rows = [
        ("cold time (s)", f"{cold['elapsed']:.1f}", ""),
        ("warm rerun / cold", f"{warm['elapsed'] / cold['elapsed']:.1%}", "< 5%"),
        ("10 added patients / cold", f"{added['elapsed'] / cold['elapsed']:.1%}", "< 10%"),
        (f"speed-up {w} workers vs 1 (whole pipeline)", f"{speedup:.2f}x", ""),
        ("  ... per stage (ingest, extract)", ", ".join(f"{k} {v:.2f}x" for k, v in par.items()), ""),
        (f"calibration ceiling {w} vs 1", f"{ceiling:.2f}x", ""),
        ("speed-up / ceiling", f"{speedup / ceiling:.0%}", ">= 90%"),
        (f"peak RSS coordinator, {small} patients (MB)", f"{small_run['maxrss_mb']:.0f}", ""),
        (f"peak RSS coordinator, {n} patients (MB)", f"{cold['maxrss_mb']:.0f}", ""),
        (f"peak RSS ratio {n}/{small}", f"{cold['maxrss_mb'] / small_run['maxrss_mb']:.2f}x", "<= 1.2x"),
    ]
    qc = {k: r["stages"].get("qc", {}) for k, r in (("cold", cold), ("warm", warm), ("added", added))}
    if qc["cold"]:  # stage qc: thumbnails of every mask/image (cold), none again when nothing changed
        rows += [("qc stage cold (s) / cold", f"{qc['cold']['s']:.1f} s = {qc['cold']['s'] / cold['elapsed']:.1%}",
                  "<= 10%"),
                 ("qc cards rendered: cold / warm / +10 patients", " / ".join(
                     str(qc[k].get("computed", 0)) for k in ("cold", "warm", "added")), "warm 0")]
    print()
    for k, v, t in rows:
        print(f"{k:<48} {v:>24}  {t}")
    print(f"\ncalibration seconds, 1 worker: {[round(x, 2) for x in c1]}; {w} workers: {[round(x, 2) for x in cw]}")
    print("stage seconds (cold, 1 worker):", {k: v["s"] for k, v in one["stages"].items() if v["s"]})
    print(f"stage seconds (cold, {w} workers):", {k: v["s"] for k, v in cold["stages"].items() if v["s"]})
    print("stage seconds (warm):", {k: v["s"] for k, v in warm["stages"].items() if v["s"]})
    print("stage seconds (+10 patients):", {k: v["s"] for k, v in added["stages"].items() if v["s"]},
          "computed:", {k: v["computed"] for k, v in added["stages"].items() if v["computed"]})
    print("CPU seconds of the process tree: " + ", ".join(
        f"{k} {r['cpu_s']:.1f}" for k, r in (("cold 1 worker", one), ("cold", cold), ("warm", warm), ("+10", added))))
    if cmp:
        base = trees[0][0]
        print(f"\ncomparison (same cohort, local:{w}; wall s / CPU s of the process tree):")
        print(f"{'tree':<44}" + "".join(f"{k:>26}" for k in ("cold", "warm", "+10 patients")))
        for label, runs in cmp.items():
            cells = [f"{runs[k]['elapsed']:.1f} / {runs[k]['cpu_s']:.1f}" for k in ("cold", "warm", "added")]
            print(f"{label:<44}" + "".join(f"{c:>26}" for c in cells))
            if label != base:
                ratios = [f"{cmp[base][k]['elapsed'] / runs[k]['elapsed']:.2f}x / "
                          f"{cmp[base][k]['cpu_s'] / runs[k]['cpu_s']:.2f}x" for k in ("cold", "warm", "added")]
                print(f"{'  ratio: this tree / it':<44}" + "".join(f"{c:>26}" for c in ratios))
    if not a.keep and a.out is None:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
