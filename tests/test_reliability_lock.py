"""One run per output folder (issue 14, item 3): a second run into a locked OUT is refused at once
with exit status 2 naming the holder; the lock of a dead run is taken over; real processes only."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from biomarkers.locks import LOCK, LockError, output_lock
from biomarkers.synth import synthesize

SECRET = "test-secret-0123456789abcdef-locks"


def _env() -> dict:
    return {**os.environ, "BIOMARKERS_SECRET": SECRET}


def _cli(*args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "biomarkers", *map(str, args)], capture_output=True, text=True,
                          env=_env(), timeout=timeout)


@pytest.fixture(scope="module")
def src(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("locks")
    synthesize(root / "cohort", patients=2, centres=1, seed=2, executor="serial", pet=False, ct_size=64)
    return root / "cohort" / "dicom"


def _holder(folder: Path) -> subprocess.Popen:
    """Another process holding ``folder``'s lock until its stdin closes."""
    code = ("import sys; from biomarkers.locks import output_lock\n"
            f"with output_lock({str(folder)!r}, 'holder test'):\n"
            "    print('held', flush=True); sys.stdin.read()\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_second_run_refused_naming_holder(src, tmp_path):
    """ingest and extract into a folder another process holds: exit 2 at once, pid, host and start named."""
    out = tmp_path / "out"
    h = _holder(out)
    try:
        info = json.loads((out / LOCK).read_text())
        t0 = time.monotonic()
        r = _cli("ingest", src, out, "-e", "serial")
        assert r.returncode == 2, r.stdout + r.stderr
        assert f"pid {h.pid}" in r.stderr and socket.gethostname() in r.stderr and info["started"] in r.stderr
        assert not (out / "manifest.parquet").exists()
        r = _cli("extract", out, "--params", "x.yaml", "--out", out, "-e", "serial")
        assert r.returncode == 2
        cfg = tmp_path / "run.yaml"  # a pipeline into the held folder
        cfg.write_text(json.dumps({"name": "t", "source": {"dicom": str(src)}, "out": str(out), "executor": "serial",
                                   "tracking": {"enabled": False}, "qc": {"enabled": False},
                                   "extract": {"enabled": False, "params": str(cfg)}}))
        r = _cli("run", cfg)
        assert r.returncode == 2 and f"pid {h.pid}" in r.stderr, r.stdout + r.stderr
        assert time.monotonic() - t0 < 60  # refused, not waiting for the holder
    finally:
        h.stdin.close()
        h.wait(10)
    assert not (out / LOCK).exists()  # released when the holder ends
    assert _cli("ingest", src, out, "-e", "serial").returncode == 0


def test_two_concurrent_ingests(tmp_path):
    """A second ingest started while the first runs into the same OUT is refused with exit 2 naming
    the first (its pid); the first completes, the OUT verifies and a rerun converts nothing."""
    synthesize(tmp_path / "cohort", patients=8, centres=1, seed=3, executor="serial", pet=False, ct_size=64)
    src = tmp_path / "cohort" / "dicom"  # a run of several seconds (no header cache): the second starts meanwhile
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "biomarkers", "ingest", str(src), str(out), "-e", "serial", "--index-cache", "off"]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    deadline = time.monotonic() + 60
    while not (out / LOCK).exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    second = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300)
    assert first.wait(300) == 0, first.stderr.read()
    assert second.returncode == 2, second.stdout + second.stderr
    assert "another biomarkers run is writing this folder" in second.stderr
    assert f"pid {first.pid}" in second.stderr
    assert _cli("verify", out).returncode == 0
    r = _cli("ingest", src, out, "-e", "serial", "--index-cache", "off")
    assert r.returncode == 0 and "(0 computed)" in r.stdout, r.stdout


def test_stale_lock_of_dead_pid_taken_over(src, tmp_path):
    """A lock left by a process that died (same host, pid gone) is taken over: the run completes."""
    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / LOCK).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "ticks": "1",
                                        "started": "2026-01-01T00:00:00Z", "command": "biomarkers ingest"}))
    r = _cli("ingest", src, out, "-e", "serial")
    assert r.returncode == 0, r.stderr
    assert "taken over" in r.stderr
    assert not (out / LOCK).exists()


def test_reused_pid_and_other_host(tmp_path):
    """A recorded pid now used by another process (other start time) is stale; a lock from another host
    is refused (its pid cannot be checked here) and says so."""
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK).write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname(), "ticks": "1",
                                        "started": "2026-01-01T00:00:00Z"}))
    with output_lock(out, "test"):
        assert json.loads((out / LOCK).read_text())["pid"] == os.getpid()
    (out / LOCK).write_text(json.dumps({"pid": 1, "host": "elsewhere.example", "started": "2026-01-01T00:00:00Z"}))
    with pytest.raises(LockError, match="host elsewhere.example.*another host"):
        with output_lock(out, "test"):
            pass
    assert (out / LOCK).exists()  # not ours to remove


def test_reentrant_in_one_process(tmp_path):
    """biomarkers run holds OUT and its stages their folders: the same process may nest the lock."""
    with output_lock(tmp_path, "outer"):
        with output_lock(tmp_path, "inner"):
            pass
        assert (tmp_path / LOCK).exists()
    assert not (tmp_path / LOCK).exists()


def test_damaged_lock_file(tmp_path, caplog):
    """An unreadable lock file (its holder died while writing it): taken over when no process holds it
    (flock), refused while one does; both say the lock file is unreadable, not 'pid ?'."""
    import logging

    out = tmp_path / "out"
    out.mkdir()
    old = time.time() - 10  # not being written right now

    def damage():
        (out / LOCK).write_text("{\"pid\": 12")  # same inode: a holder's flock stays
        os.utime(out / LOCK, (old, old))

    damage()
    with caplog.at_level(logging.WARNING, logger="biomarkers"), output_lock(out, "test"):
        assert json.loads((out / LOCK).read_text())["pid"] == os.getpid()
    assert "taken over (its lock file is unreadable" in caplog.text, caplog.text
    h = _holder(out)
    try:
        damage()
        with pytest.raises(LockError, match=r"another biomarkers run is writing this folder \(its lock file is unreadable"):
            with output_lock(out, "test"):
                pass
    finally:
        h.stdin.close()
        h.wait(10)
