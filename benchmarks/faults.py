"""Fault injection on a synthetic cohort: every fault followed by a rerun compared with a reference run.

Usage::

    .venv/bin/python benchmarks/faults.py [--injections 50] [--patients 4] [--seed 0] [--out DIR] [--keep]

Faults, drawn at random (``--seed``):

* ``sigint``: ``biomarkers run`` started in its own process group after the outputs of a random
  stage (ingest, extract or clinical) were removed, SIGINT sent to the whole group at a random
  moment of the rerun (as Ctrl-C does);
* ``sigterm``: the same with SIGTERM to the command's process alone (as a batch scheduler does);
* ``damage``: a random recorded output (NIfTI, sidecar, mask, manifest, item file, feature or
  clinical table, analysis table) truncated, deleted or overwritten in place;
* ``concurrent``: a second ``biomarkers run`` into the same OUT started at a random moment while
  the first runs (after it took OUT's lock; it may have finished meanwhile).

After each fault, ``biomarkers run`` again (no fault) and compare with the reference run:
feature tables (wide and long), manifest, clinical and analysis tables equal (exact), and
``biomarkers verify OUT`` clean. Printed: injections, runs that recovered to the reference
result, outputs lost (the rerun failed or an output is missing/unreadable or fails verify)
and silently wrong (the rerun succeeded and verified, but a table differs). Target: every
injection recovered, zero lost, zero silently wrong. Also printed: exit statuses of the
interrupted runs (0: the run completed before the signal arrived), and how often the second
concurrent run was refused (exit 2; 0: the first had finished).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SECRET = "faults-benchmark-secret-0123456789abcdef"
TABLES = ["dataset/manifest.parquet", "features/features_wide.parquet", "features/features_long.parquet",
          "clinical/clinical.parquet", "analysis.parquet"]
#: Columns of a table that differ between runs by design (none of these tables has any today).
RUN_SPECIFIC: dict[str, list[str]] = {}


def _env() -> dict:
    return {**os.environ, "BIOMARKERS_SECRET": SECRET, "PYTHONPATH": str(REPO)}


def _config(root: Path, out: Path, executor: str) -> Path:
    from biomarkers.pipeline.demo import DEMO_PARAMS, DEMO_SCHEMA

    for name in ("ct", "pet"):
        (root / f"{name}.yaml").write_text(yaml.safe_dump(DEMO_PARAMS[name]))
    cfg = {"name": "faults", "source": {"dicom": str(root / "cohort" / "dicom"),
                                        "clinical": [str(root / "cohort" / "clinical" / "*.csv")]},
           "out": str(out), "executor": executor, "tracking": {"enabled": False}, "qc": {"enabled": False},
           "extract": {"params": {"CT": str(root / "ct.yaml"), "PT": str(root / "pet.yaml")}},
           "clinical": {"schema": DEMO_SCHEMA}}
    path = root / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _start(cfg: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "biomarkers", "-q", "run", str(cfg)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env(), start_new_session=True)


def _run(cfg: Path) -> tuple[int, str, float]:
    t0 = time.perf_counter()
    p = _start(cfg)
    out, err = p.communicate(timeout=900)
    return p.returncode, out + err, time.perf_counter() - t0


def _tables(out: Path) -> dict:
    import pandas as pd

    res = {}
    for rel in TABLES:
        try:
            df = pd.read_parquet(out / rel)
        except Exception as err:  # noqa: BLE001 - a lost output
            res[rel] = err
            continue
        res[rel] = df.drop(columns=[c for c in RUN_SPECIFIC.get(rel, []) if c in df.columns])
    return res


def _compare(ref: dict, got: dict) -> tuple[list[str], list[str]]:
    """(lost, wrong) table names."""
    lost, wrong = [], []
    for rel, df in ref.items():
        g = got.get(rel)
        if isinstance(g, Exception) or g is None:
            lost.append(rel)
        elif not (list(g.columns) == list(df.columns) and g.reset_index(drop=True).equals(df.reset_index(drop=True))):
            wrong.append(rel)
    return lost, wrong


def _group_gone(pgid: int, timeout: float = 10.0) -> bool:
    """Whether no process of the group is left after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def _recorded(out: Path) -> list[str]:
    """Files of OUT with an integrity record (what a later step reads), relative to OUT."""
    from biomarkers.integrity import Ledger

    rels = []
    for sub in ("dataset", "features"):
        rels += [f"{sub}/{r}" for r in Ledger(out / sub).files]
    state = json.loads((out / ".pipeline" / "state.json").read_text())
    rels += [r for st in state.values() for r in st.get("records", {})]
    return sorted(set(r for r in rels if (out / r).is_file()))


def _damage(path: Path, how: str, rng: random.Random) -> None:
    if how == "truncate":
        os.truncate(path, rng.randrange(0, max(1, path.stat().st_size)))
    elif how == "delete":
        path.unlink()
    else:
        data = bytearray(path.read_bytes())
        if not data:
            data = bytearray(b"x")
        at = rng.randrange(len(data))
        n = min(len(data) - at, rng.randint(1, 64))
        data[at:at + n] = bytes((b + 1) % 256 for b in data[at:at + n])
        path.write_bytes(bytes(data))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--injections", type=int, default=50)
    ap.add_argument("--patients", type=int, default=4)
    ap.add_argument("--executor", default="local:2")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="faults-", dir=args.out))
    try:
        from biomarkers.synth import synthesize

        os.environ["BIOMARKERS_SECRET"] = SECRET
        synthesize(root / "cohort", patients=args.patients, centres=2, seed=args.seed, executor="serial")
        ref_cfg = _config(root, root / "ref", args.executor)
        rc, log, cold = _run(ref_cfg)
        if rc != 0:
            print(log)
            return 1
        ref = _tables(root / "ref")
        out = root / "out"
        cfg = _config(root, out, args.executor)
        shutil.copytree(root / "ref", out)
        durations = {}  # stage removed -> seconds of the rerun that redoes it
        for stage, sub in (("ingest", "dataset"), ("extract", "features"), ("clinical", "clinical")):
            shutil.rmtree(out / sub, ignore_errors=True)
            rc, log, durations[stage] = _run(cfg)
            assert rc == 0, log
        print(f"cohort: {args.patients} patients (CT+PET), executor {args.executor}; reference run {cold:.1f} s; "
              f"rerun after removing dataset/features/clinical: "
              + ", ".join(f"{k} {v:.1f} s" for k, v in durations.items()), flush=True)
        kinds = Counter()
        recovered, lost, wrong = 0, [], []
        exits: Counter = Counter()
        groups_left = 0
        refused = Counter()
        for i in range(args.injections):
            kind = rng.choice(["sigint", "sigterm", "damage", "concurrent"])
            kinds[kind] += 1
            what = kind
            if kind in ("sigint", "sigterm"):
                stage = rng.choice(list(durations))
                shutil.rmtree(out / {"ingest": "dataset", "extract": "features", "clinical": "clinical"}[stage],
                              ignore_errors=True)
                p = _start(cfg)
                delay = rng.uniform(0.3, durations[stage])
                time.sleep(delay)
                if p.poll() is None:
                    if kind == "sigint":
                        os.killpg(p.pid, signal.SIGINT)
                    else:
                        os.kill(p.pid, signal.SIGTERM)
                try:
                    p.communicate(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.communicate()
                exits[(kind, p.returncode)] += 1
                if not _group_gone(p.pid):
                    groups_left += 1
                    os.killpg(p.pid, signal.SIGKILL)
                what = f"{kind} after {delay:.1f} s ({stage} redone)"
            elif kind == "damage":
                rel = rng.choice(_recorded(out))
                how = rng.choice(["truncate", "delete", "overwrite"])
                _damage(out / rel, how, rng)
                what = f"{how} {rel}"
            else:
                shutil.rmtree(out / "features", ignore_errors=True)  # the first run has work to do
                first = _start(cfg)
                deadline = time.monotonic() + 60
                while not (out / ".lock").exists() and first.poll() is None and time.monotonic() < deadline:
                    time.sleep(0.01)  # the first holds OUT: the second starts at a random moment of its run
                time.sleep(rng.uniform(0.0, durations["extract"] / 2))
                second = _start(cfg)
                second.communicate(timeout=900)
                first.communicate(timeout=900)
                refused[second.returncode] += 1
                exits[("first of two", first.returncode)] += 1
                what = f"second run (exit {second.returncode}) while the first ran (exit {first.returncode})"
            rc, log, _ = _run(cfg)
            from biomarkers.cli.verify import tree_problems

            problems = tree_problems(out)[0] if rc == 0 else []
            l_, w_ = _compare(ref, _tables(out))
            if rc != 0 or l_ or problems:
                lost.append(f"#{i} {what}: rerun exit {rc}; lost {l_}; verify {[str(p) for p in problems][:3]}"
                            + (f"\n{log[-2000:]}" if rc != 0 else ""))
            elif w_:
                wrong.append(f"#{i} {what}: tables differ: {w_}")
            else:
                recovered += 1
            print(f"  #{i:02d} {what}: rerun exit {rc}, " + ("recovered" if rc == 0 and not (l_ or w_ or problems)
                                                           else "NOT recovered"), flush=True)
        n = args.injections
        print(f"\ninjections: {n} ({', '.join(f'{k} {v}' for k, v in sorted(kinds.items()))})")
        print(f"recovered to the reference result: {recovered}/{n}")
        print(f"outputs lost: {len(lost)}")
        print(f"silently wrong: {len(wrong)}")
        print("exit statuses of interrupted/concurrent runs: "
              + ", ".join(f"{k} -> {c}: {v}" for (k, c), v in sorted(exits.items(), key=str)))
        print("second concurrent run: " + ", ".join(f"exit {k}: {v}" for k, v in sorted(refused.items())))
        print(f"process groups with a process left 10 s after the interrupted run ended: {groups_left}")
        for line in lost + wrong:
            print("  " + line)
        return 0 if recovered == n else 1
    finally:
        if args.keep:
            print(f"kept: {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
