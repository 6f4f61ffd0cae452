"""Benchmark of the intake gateway against dcmtk's storescp, all figures from one run.

Usage::

    .venv/bin/python benchmarks/gateway.py [--instances 5000] [--associations 4] [--keep]

1. **Load**: ``--instances`` distinct instances (copies of the shared STS CT images with new
   Study / Series / SOP Instance UIDs: one study per copy of a series), split over
   ``--associations`` folders.
2. **Throughput**: the same load is sent by ``--associations`` concurrent dcmtk ``storescu``
   processes (``TCP_NODELAY=1``: dcmtk otherwise waits ~40 ms per instance for a delayed ACK,
   whoever receives) to

   * ``biomarkers gateway`` with ``scp.fsync: false`` and with ``fsync: true`` (the default:
     each instance and its folder fsync'ed before the success status),
   * dcmtk ``storescp +B`` (bit-preserving; a single process: associations one after another,
     its default) and ``storescp +B --fork`` (one process per association). storescp has no
     fsync option: its success status precedes any flush to disk, so it compares with the
     gateway *without* fsync.

   Each receiver starts fresh on an empty folder; the time is from the first sender's start to
   the last sender's end; every receiver must hold all instances afterwards. Printed:
   instances/s, MB/s (file bytes sent), the receiver's CPU per instance (user + system of all
   its threads between the first and the last send, read from ``/proc``; not for ``--fork``,
   whose children are not ours), the senders' CPU per instance, the ratios (target: gateway
   without fsync >= 0.8x storescp; the fsync cost is the ratio of the two gateway runs) and the
   load average (other work on the machine changes every figure).
3. **Stable -> features**: a three-series study (STS_001: CT, MR, PET images, each with its
   RTSTRUCT) sent to a gateway with ``stable_seconds: 2`` running the pipeline (ingest with
   de-identification, CT/MR/PET radiomics): seconds from the audit log's ``study_stable`` to
   the features table's write (features available) and to ``study_processed`` (the whole pipeline,
   QC report included, done), median of ``--repeats``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("BIOMARKERS_SHARED_DATA", REPO.parent / "shared" / "data"))
STS = SHARED / "sts" / "dicom"
SECRET = os.environ.get("BIOMARKERS_SECRET", "benchmark-secret-0123456789")
ENV = {**os.environ, "BIOMARKERS_SECRET": SECRET, "TCP_NODELAY": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


def make_load(root: Path, n: int, parts: int) -> tuple[list[Path], int]:
    """``n`` distinct CT instances in ``parts`` folders; returns the folders and the total file bytes."""
    import pydicom
    from pydicom.uid import generate_uid

    series = sorted({p.parent for p in STS.glob("STS_*/CT/image/*.dcm")})
    sources = [sorted(s.glob("*.dcm")) for s in series]
    datasets = [[pydicom.dcmread(f) for f in fs] for fs in sources]
    folders = [root / f"sender{i}" for i in range(parts)]
    for f in folders:
        f.mkdir(parents=True)
    made, total, copy = 0, 0, 0
    while made < n:
        for dss in datasets:
            study, ser = generate_uid(), generate_uid()
            for ds in dss:
                if made >= n:
                    break
                ds.StudyInstanceUID, ds.SeriesInstanceUID = study, ser
                ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
                dest = folders[made % parts] / f"{made:06d}.dcm"
                ds.save_as(dest, enforce_file_format=True)
                total += dest.stat().st_size
                made += 1
        copy += 1
    return folders, total


def send(port: int, aec: str, folders: list[Path]) -> tuple[float, float]:
    """Concurrent storescu per folder; returns the wall time and the senders' CPU seconds. Raises when one failed."""
    t0 = time.perf_counter()
    procs = [subprocess.Popen(["storescu", "-aet", "BENCH", "-aec", aec, "+sd", "+r", "-to", "120", "-ta", "120",
                               "-td", "120", "127.0.0.1", str(port), str(f)], env=ENV,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for f in folders]
    errs, cpu = [], 0.0
    for p in procs:
        errs.append(p.stderr.read())
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        cpu += ru.ru_utime + ru.ru_stime
    el = time.perf_counter() - t0
    bad = [e for p, e in zip(procs, errs) if p.returncode != 0]
    if bad:
        raise RuntimeError(f"a sender failed: {bad[0][-500:]}")
    return el, cpu


def count_files(root: Path) -> int:
    return sum(1 for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))


def gateway_config(root: Path, name: str, fsync: bool, stable: float = 3600, run: bool = False,
                   params: dict | None = None) -> tuple[Path, int]:
    site = root / name
    site.mkdir(parents=True)
    pipe = {"name": name, "source": {"dicom": str(site / "received")}, "out": str(site / "out"),
            "executor": "local:2", "tracking": {"enabled": False},
            "ingest": {"masks": {"rois": {"GTV": ["GTV*", "gtv*"]}}},
            "extract": {"params": params or {"CT": str(REPO / "configs" / "radiomics" / "ct.yaml")}}}
    (site / "pipeline.yaml").write_text(yaml.safe_dump(pipe))
    port = free_port()
    cfg = {"pipeline": "pipeline.yaml", "spool": "spool", "stable_seconds": stable, "run_pipeline": run,
           "scp": {"ae_title": "GATEWAY", "port": port, "fsync": fsync, "max_associations": 8,
                   "peers": [{"ae_title": "BENCH", "addresses": ["127.0.0.1"]}]}}
    (site / "gateway.yaml").write_text(yaml.safe_dump(cfg))
    return site / "gateway.yaml", port


def start_gateway(cfg: Path, port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "biomarkers", "-q", "gateway", str(cfg)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=str(cfg.parent))
    wait_port(port)
    return proc


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system, every thread) a running process used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop(proc: subprocess.Popen) -> float:
    """SIGTERM, wait; returns the process's CPU seconds (user + system)."""
    proc.send_signal(signal.SIGTERM)
    deadline = time.time() + 60
    while time.time() < deadline:
        pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return ru.ru_utime + ru.ru_stime
        time.sleep(0.05)
    proc.kill()
    _, _, ru = os.wait4(proc.pid, 0)
    return ru.ru_utime + ru.ru_stime


def bench_gateway(root: Path, folders, n: int, fsync: bool) -> tuple[float, float, float]:
    """Wall time, the gateway's CPU seconds while receiving (start-up excluded), the senders' CPU seconds."""
    cfg, port = gateway_config(root, f"gw-fsync-{fsync}", fsync)
    proc = start_gateway(cfg, port)
    try:
        before = process_cpu(proc.pid)
        el, senders = send(port, "GATEWAY", folders)
        cpu = process_cpu(proc.pid) - before
    finally:
        stop(proc)
    got = count_files(cfg.parent / "spool" / "incoming")
    if got != n:
        raise RuntimeError(f"gateway (fsync={fsync}) holds {got} of {n} instances")
    return el, cpu, senders


def bench_storescp(root: Path, folders, n: int, fork: bool) -> tuple[float, float | None, float]:
    """Wall time, storescp's CPU seconds (None with --fork: its children are not ours), the senders' CPU."""
    out = root / f"storescp-fork-{fork}"
    out.mkdir()
    port = free_port()
    proc = subprocess.Popen(["storescp", "+B", *(["--fork"] if fork else []), "-aet", "REF", "-od", str(out),
                             str(port)], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    try:
        before = process_cpu(proc.pid)
        el, senders = send(port, "REF", folders)
        cpu = None if fork else process_cpu(proc.pid) - before
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    time.sleep(0.5 if fork else 0)  # forked children finish writing
    got = count_files(out)
    if got != n:
        raise RuntimeError(f"storescp (fork={fork}) holds {got} of {n} instances")
    return el, cpu, senders


def bench_stable_to_features(root: Path, repeats: int) -> list[float]:
    """Seconds from study_stable to study_processed for STS_001 (three image series + RTSTRUCTs)."""
    r = REPO / "configs" / "radiomics"
    out = []
    for i in range(repeats):
        cfg, port = gateway_config(root, f"stable-{i}", fsync=True, stable=2, run=True,
                                   params={"CT": str(r / "ct.yaml"), "MR": str(r / "mr.yaml"),
                                           "PT": str(r / "pet.yaml")})
        proc = start_gateway(cfg, port)
        try:
            send(port, "GATEWAY", [STS / "STS_001"])
            audit = cfg.parent / "spool" / "audit.jsonl"
            deadline = time.time() + 600
            events = []
            while time.time() < deadline:
                events = [json.loads(x) for x in audit.read_text().splitlines()]
                if any(e["event"] in ("study_processed", "study_failed") for e in events):
                    break
                time.sleep(0.2)
        finally:
            stop(proc)
        import datetime as dt

        def t(e):
            return dt.datetime.strptime(e["time"], "%Y-%m-%dT%H:%M:%S.%fZ").timestamp()

        stable = next(e for e in events if e["event"] == "study_stable")
        done = next(e for e in events if e["event"] in ("study_processed", "study_failed"))
        if done["event"] != "study_processed":
            raise RuntimeError(f"the pipeline failed: {done.get('reason')}")
        import pandas as pd

        table = cfg.parent / "out" / "features" / "features_wide.parquet"
        wide = pd.read_parquet(table)
        if sorted(wide["modality"]) != ["CT", "MR", "PT"]:
            raise RuntimeError(f"features for {sorted(wide['modality'])}, expected CT, MR and PT")
        out.append((table.stat().st_mtime - t(stable), t(done) - t(stable)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--instances", type=int, default=5000, help="0: only the stable -> features measurement")
    ap.add_argument("--associations", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3, help="stable->features measurements (median)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    a = ap.parse_args()
    for tool in ("storescu", "storescp"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found: install the Debian package dcmtk")
    root = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    try:
        if a.instances:
            t0 = time.perf_counter()
            folders, nbytes = make_load(root / "load", a.instances, a.associations)
            mb = nbytes / 1e6
            print(f"load: {a.instances} instances, {mb:.0f} MB ({nbytes / a.instances / 1e3:.0f} kB each), "
                  f"{a.associations} concurrent storescu associations (made in {time.perf_counter() - t0:.0f} s)")
            runs = {}
            for label, fn in (("storescp (single process)", lambda: bench_storescp(root, folders, a.instances, False)),
                              ("storescp --fork", lambda: bench_storescp(root, folders, a.instances, True)),
                              ("gateway, no fsync", lambda: bench_gateway(root, folders, a.instances, False)),
                              ("gateway, fsync", lambda: bench_gateway(root, folders, a.instances, True))):
                runs[label] = fn()
                el, cpu, senders = runs[label]
                per = "    --   " if cpu is None else f"{1e3 * cpu / a.instances:5.2f} ms"
                print(f"  {label:<27} {el:7.2f} s  {a.instances / el:8.0f} instances/s  {mb / el:7.1f} MB/s  "
                      f"receiver CPU {per}/instance, senders {1e3 * senders / a.instances:.2f} ms/instance")
            print("  (CPU = user + system of every thread while receiving; 2 cores shared by receiver and senders)")
            ref, gw, gw_sync = (runs[k][0] for k in ("storescp (single process)", "gateway, no fsync", "gateway, fsync"))
            print(f"gateway without fsync / storescp: {ref / gw:.2f}x (target >= 0.8x); "
                  f"/ storescp --fork: {runs['storescp --fork'][0] / gw:.2f}x")
            print(f"fsync cost: the gateway with fsync runs at {gw / gw_sync:.2f}x its speed without "
                  f"({1e3 * (gw_sync - gw) / a.instances:.2f} ms per instance)")
            print(f"load average (1 min) at the end: {os.getloadavg()[0]:.2f}")
        if a.repeats:
            s = bench_stable_to_features(root, a.repeats)
            feat, done = [x[0] for x in s], [x[1] for x in s]
            print(f"study stable -> features table written (STS_001: CT, MR, PET + RTSTRUCTs, de-identified ingest "
                  f"and CT/MR/PET radiomics): median {statistics.median(feat):.1f} s of {[round(x, 1) for x in feat]}; "
                  f"-> study_processed (pipeline done, QC report included): median {statistics.median(done):.1f} s")
    finally:
        if a.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
