"""Issue 14 item 2: interruptions. SIGINT to the process group (Ctrl-C) and SIGTERM to the command alone
(a batch scheduler), during ingest, during extraction and during a full ``biomarkers run``, with the local
pool and with a real dask LocalCluster: exit 130/143 with one line and no traceback, nothing of the
command's process group left after 10 s (psutil), the pipeline's MLflow run KILLED, no partial file but
temporary ones (removed by the rerun), and the rerun equals an uninterrupted run (tables compared exactly).
The signal is sent after a progress marker (the command's own line, then a first output file), never
after a blind sleep.
"""

from __future__ import annotations

import os
import selectors
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
import yaml

SECRET = "signals-test-secret-0123456789abcdef"
TABLES = {"ingest": ["manifest.parquet"], "extract": ["features_wide.parquet", "features_long.parquet"],
          "run": ["dataset/manifest.parquet", "features/features_wide.parquet", "features/features_long.parquet",
                  "clinical/clinical.parquet", "analysis.parquet"]}


def _env() -> dict:
    return {**os.environ, "BIOMARKERS_SECRET": SECRET, "PYTHONUNBUFFERED": "1"}


def _cmd(*args) -> list[str]:
    return [sys.executable, "-m", "biomarkers", *map(str, args)]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    from biomarkers.pipeline.demo import DEMO_PARAMS
    from biomarkers.synth import synthesize

    root = tmp_path_factory.mktemp("signals")
    synthesize(root / "cohort", patients=3, centres=2, seed=3, executor="serial")
    for name in ("ct", "pet"):
        (root / f"{name}.yaml").write_text(yaml.safe_dump(DEMO_PARAMS[name]))
    return root


def _pipeline_config(root: Path, out: Path, executor: str, uri: str | None) -> Path:
    from biomarkers.pipeline.demo import DEMO_SCHEMA

    cfg = {"name": "signals", "source": {"dicom": str(root / "cohort" / "dicom"),
                                         "clinical": [str(root / "cohort" / "clinical" / "*.csv")]},
           "out": str(out), "executor": executor, "qc": {"enabled": False},
           "tracking": {"enabled": uri is not None, **({"uri": uri} if uri else {})},
           "extract": {"params": {"CT": str(root / "ct.yaml"), "PT": str(root / "pet.yaml")}},
           "clinical": {"schema": DEMO_SCHEMA}}
    path = out.parent / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _args(command: str, root: Path, out: Path, executor: str, uri: str | None = None) -> list[str]:
    if command == "ingest":
        return _cmd("ingest", root / "cohort" / "dicom", out, "-e", executor)
    if command == "extract":
        return _cmd("extract", root / "reference" / "dataset", "--params", f"CT={root / 'ct.yaml'}",
                    "--params", f"PT={root / 'pet.yaml'}", "--out", out, "-e", executor)
    return _cmd("run", _pipeline_config(root, out, executor, uri))


@pytest.fixture(scope="module")
def reference(cohort) -> dict:
    """Uninterrupted runs of the three commands (local pool): their tables."""
    ref = cohort / "reference"
    ref.mkdir()
    tables = {}
    for command, out in (("ingest", ref / "dataset"), ("extract", ref / "features"), ("run", ref / "pipeline")):
        r = subprocess.run(_args(command, cohort, out, "local:2"), capture_output=True, text=True, env=_env(),
                           timeout=600)
        assert r.returncode == 0, r.stdout + r.stderr
        tables[command] = {t: pd.read_parquet(out / t) for t in TABLES[command]}
    return tables


def _first_output(command: str, out: Path) -> bool:
    """A first finished output of the interrupted step exists (items remain to do)."""
    sub = {"ingest": out / "images", "extract": out / "items", "run": out / "features" / "items"}[command]
    return sub.is_dir() and any(p.is_file() and not p.name.startswith(".") for p in sub.rglob("*"))


MARKERS = {"ingest": "converting on", "extract": "extract plan", "run": "[extract] running"}


def _interrupt(args: list[str], command: str, out: Path, how: str) -> tuple[int, str, int]:
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(),
                         start_new_session=True)
    sel = selectors.DefaultSelector()
    sel.register(p.stdout, selectors.EVENT_READ)
    log, deadline = "", time.monotonic() + 300
    while MARKERS[command] not in log and time.monotonic() < deadline and p.poll() is None:
        if sel.select(0.5):
            log += p.stdout.readline()
    while not _first_output(command, out) and time.monotonic() < deadline and p.poll() is None:
        time.sleep(0.05)
    assert p.poll() is None, f"{command} ended before the signal:\n{log}"
    if how == "SIGINT":
        os.killpg(p.pid, signal.SIGINT)  # Ctrl-C: the whole foreground process group
    else:
        os.kill(p.pid, signal.SIGTERM)   # a batch scheduler: the command alone
    rest, _ = p.communicate(timeout=120)
    return p.returncode, log + rest, p.pid


def _group_left(pgid: int, timeout: float = 10.0) -> list:
    deadline = time.monotonic() + timeout
    while True:
        left = []
        for q in psutil.process_iter(["pid", "cmdline", "status"]):
            try:
                if os.getpgid(q.pid) == pgid and q.info["status"] != psutil.STATUS_ZOMBIE:
                    left.append((q.pid, " ".join(q.info["cmdline"] or [])[:120]))
            except (ProcessLookupError, psutil.Error):
                continue
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def _check(cohort, reference, command: str, how: str, executor: str, tmp_path: Path) -> None:
    out = tmp_path / command
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}" if command == "run" else None
    args = _args(command, cohort, out, executor, uri)
    rc, log, pgid = _interrupt(args, command, out, how)
    assert rc == (130 if how == "SIGINT" else 143), log
    assert "Traceback" not in log and "KeyboardInterrupt" not in log, log
    lines = [ln for ln in log.splitlines() if ln.startswith("interrupted: ")]
    assert len(lines) == 1 and f"biomarkers {command}" in lines[0] and "again to resume" in lines[0], log
    assert ("Ctrl-C (SIGINT)" if how == "SIGINT" else "SIGTERM") in lines[0]
    assert _group_left(pgid) == [], "processes of the interrupted command's group are still running"
    if command == "run":
        from mlflow import MlflowClient

        c = MlflowClient(uri)
        runs = [r for e in c.search_experiments() for r in c.search_runs([e.experiment_id])]
        assert [r.info.status for r in runs] == ["KILLED"], [(r.info.status, r.data.tags) for r in runs]
        assert runs[0].data.tags["biomarkers.interrupted"] == how
    r = subprocess.run(args, capture_output=True, text=True, env=_env(), timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    for t, ref in reference[command].items():
        got = pd.read_parquet(out / t)
        pd.testing.assert_frame_equal(got.reset_index(drop=True), ref.reset_index(drop=True), check_exact=True)
    from biomarkers.io import PARTIAL_NAME

    assert not [p for p in out.rglob("*") if PARTIAL_NAME.match(p.name)], "temporary files left after the rerun"
    if command == "run":
        statuses = sorted(r.info.status for e in c.search_experiments() for r in c.search_runs([e.experiment_id]))
        assert statuses == ["FINISHED", "KILLED"]


SLOW = pytest.mark.slow
LOCAL = [("ingest", "SIGINT"), pytest.param("ingest", "SIGTERM", marks=SLOW), pytest.param("extract", "SIGINT", marks=SLOW),
         ("extract", "SIGTERM"), ("run", "SIGINT"), pytest.param("run", "SIGTERM", marks=SLOW)]


@pytest.mark.parametrize("command,how", LOCAL)
def test_interrupted_local_pool(cohort, reference, command, how, tmp_path):
    _check(cohort, reference, command, how, "local:2", tmp_path)


@pytest.fixture(scope="module")
def dask_cluster():
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    try:
        yield cluster.scheduler_address
    finally:
        cluster.close()


DASK = [("ingest", "SIGTERM"), ("extract", "SIGINT"), ("run", "SIGTERM")]


@pytest.mark.slow
@pytest.mark.parametrize("command,how", DASK)
def test_interrupted_dask_cluster(cohort, reference, dask_cluster, command, how, tmp_path):
    _check(cohort, reference, command, how, "dask://" + dask_cluster.split("://", 1)[1], tmp_path)


def test_normal_ingest_leaves_no_worker(cohort, tmp_path):
    """Even an uninterrupted ingest leaves no process of its group behind when it exits."""
    p = subprocess.Popen(_args("ingest", cohort, tmp_path / "ds", "local:2"), stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, env=_env(), start_new_session=True)
    out, _ = p.communicate(timeout=600)
    assert p.returncode == 0, out
    assert _group_left(p.pid, timeout=0.0) == []


def test_partial_files_removed_by_next_run(tmp_path):
    """Temporary files of interrupted atomic writes (a killed worker's ``.NAME.XXXXXXXX.tmp.nii.gz``, an
    interrupted release's temporary folder) are removed when the folder's lock is next taken; other files stay."""
    from biomarkers.io import atomic_path
    from biomarkers.locks import output_lock

    out = tmp_path / "out"
    with atomic_path(out / "images" / "a.nii.gz") as tmp:
        leftover = tmp.with_name(".b" + tmp.name[2:])  # what a writer killed in the block leaves
        leftover.write_bytes(b"partial")
        tmp.write_bytes(b"whole")
    (out / "releases" / ".sts-1.0.0.k3j_x9a2.tmp").mkdir(parents=True)
    (out / "notes.tmp.txt").write_text("a user's file")  # not a temporary name of ours
    with output_lock(out, "test"):
        pass
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [
        "images", "images/a.nii.gz", "notes.tmp.txt", "releases"]


def _deadlines():
    import threading

    return [t for t in threading.enumerate() if isinstance(t, threading.Timer) and not t.finished.is_set()]


@pytest.mark.parametrize("keep", [False, True])
def test_restore_cancels_the_exit_deadline_for_in_process_callers(keep):
    """A signal starts a timer that ends the process GRACE_S later (a hung clean-up cannot keep it
    alive); an in-process caller of ``biomarkers.cli.main`` goes on after the interrupted command, so
    restoring the handlers cancels it, while the console script (keep_deadline=True) keeps it."""
    import os
    import signal
    import time

    from biomarkers import interrupts

    restore = interrupts.install()
    try:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1)
        raise AssertionError("the SIGINT was not delivered")
    except interrupts.Interrupted:
        pass
    finally:
        restore(keep_deadline=keep)
    try:
        assert len(_deadlines()) == (1 if keep else 0)
    finally:
        for t in _deadlines():
            t.cancel()
