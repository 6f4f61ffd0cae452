"""``biomarkers gateway``: the long-running site service (SCP + stable-study detection + pipeline hand-off).

:class:`Gateway` ``start()`` s the C-STORE SCP (:mod:`biomarkers.intake.scp`), a monitor thread
and, when configured, the health endpoint; ``stop()`` ends them. The monitor

1. writes ``<spool>/state/status.json`` about once a second (what ``biomarkers gateway status``
   and ``GET /status`` show: queue, counts, last errors; no identifiers, paths or dates);
2. releases every study without a new instance for ``stable_seconds`` from the spool to the
   pipeline's ``source.dicom`` folder, recording it in ``state/pending.json`` first;
3. runs the pipeline (``python -m biomarkers run PIPELINE.yaml``, its output in
   ``state/pipeline.log``) once for the released batch. The pipeline's stages are incremental:
   ingest converts only new or changed stacks, extraction only new items. A study that grows
   later is released and processed again. ``pending.json`` is cleared only after the run, so a
   gateway killed meanwhile runs the pipeline again at its next start.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from ..errors import BiomarkersError
from ..io import write_json
from .audit import AuditLog
from .config import GatewayConfig
from .spool import FILE_MODE, Spool, SpoolLock, ensure_dir

LOG = logging.getLogger("biomarkers.intake")

COUNTERS = ("associations_accepted", "associations_rejected", "instances_received", "bytes_received",
            "duplicates", "instances_refused", "studies_received", "studies_processed", "studies_failed",
            "pipeline_runs")


class GatewayState:
    """Counters, queue and last errors of a gateway (persisted in ``state/status.json``). Thread-safe."""

    def __init__(self, path: Path, last_errors: int = 20):
        self.path = path
        self._lock = threading.Lock()
        self.counts = dict.fromkeys(COUNTERS, 0)
        self.errors: collections.deque = collections.deque(maxlen=last_errors)
        self.started = time.time()
        self.last_processing_s: float | None = None
        self.processing = False
        self._seen_studies: set[str] = set()
        try:
            old = json.loads(path.read_text())
            for k in COUNTERS:
                self.counts[k] = int(old.get("counts", {}).get(k, 0))
        except (OSError, ValueError):
            pass

    def add(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counts[key] += n

    def error(self, message: str) -> None:
        with self._lock:
            self.errors.append((time.time(), message))

    def event(self, kind: str, **kw) -> None:
        """:class:`~biomarkers.intake.scp.StoreService` notifications."""
        if kind == "stored":
            with self._lock:
                self.counts["instances_received"] += 1
                self.counts["bytes_received"] += kw.get("nbytes", 0)
                if kw["study"] not in self._seen_studies:
                    self._seen_studies.add(kw["study"])
                    self.counts["studies_received"] += 1
        elif kind == "duplicate":
            self.add("duplicates")
        elif kind == "refused":
            self.add("instances_refused")
            self.error(f"instance refused: {kw.get('reason', '')}")
        elif kind == "error":
            self.add("instances_refused")
            self.error(kw.get("reason", "error"))
        elif kind == "rejected":
            self.add("associations_rejected")
            self.error(f"association rejected: {kw.get('reason', '')}")
        elif kind == "accepted":
            self.add("associations_accepted")

    def snapshot(self, spool: Spool, pending_pipeline: int, running: bool = True) -> dict:
        now = time.time()
        q = spool.counts()
        with self._lock:
            return {
                "state": "running" if running else "stopped",
                "pid": os.getpid(),
                "uptime_s": round(now - self.started, 1),
                "queue": {"studies_waiting_stable": q["studies"], "instances_waiting_stable": q["instances"],
                          "studies_waiting_pipeline": pending_pipeline, "pipeline_running": self.processing},
                "counts": dict(self.counts),
                "last_processing_s": self.last_processing_s,
                "last_errors": [{"age_s": round(now - t, 1), "message": m} for t, m in self.errors],
            }


class Gateway:
    """The site service of ``biomarkers gateway CONFIG.yaml`` (see the module docstring).

    Args:
        config: the validated :class:`GatewayConfig` (paths resolved).
        pipeline: the pipeline's validated config (``source.dicom``: received folder, ``out``: OUT, ``deid``).
        pipeline_config_path: the pipeline YAML passed to ``biomarkers run``.
    """

    def __init__(self, config: GatewayConfig, pipeline, pseudonymizer=None):
        from ..deid import Pseudonymizer

        self.cfg = config
        self.pipeline = pipeline
        d = pipeline.deid
        self.pseudo = pseudonymizer or Pseudonymizer.from_env(demo=d.demo, prefix=d.prefix, uid_root=d.uid_root,
                                                               max_shift_days=d.max_shift_days)
        self.state_dir = ensure_dir(config.spool / "state")
        self.spool = Spool(config.spool, Path(pipeline.source.dicom), self.pseudo, fsync=config.scp.fsync)
        rotate = None if config.audit_rotate_mb is None else int(config.audit_rotate_mb * 1e6)
        self.audit = AuditLog(config.audit_log, rotate_bytes=rotate, keep=config.audit_keep)
        self.state = GatewayState(self.state_dir / "status.json", config.status.last_errors)
        self.pending_path = self.state_dir / "pending.json"
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._server = None
        self._http = None
        self._proc: subprocess.Popen | None = None

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> "Gateway":
        from .scp import StoreService, ssl_context
        from .ul import Acceptor

        c = self.cfg.scp
        self._lock = SpoolLock(self.cfg.spool)
        if not self._lock.acquire():
            raise BiomarkersError("another gateway (or a pull) is using this spool; stop it first")
        self.store = StoreService(self.spool, self.audit, on_event=self._on_event, peers=c.peers)
        self._server = Acceptor(self.store, c.ae_title, c.max_pdu, c.max_associations, c.network_timeout_s,
                                ssl_context(c.tls) if c.tls is not None else None, fsync=c.fsync).start(c.host, c.port)
        self.port = self._server.server_address[1]
        if self.cfg.status.http_port is not None:
            self._start_http()
        t = threading.Thread(target=self._monitor, name="gateway-monitor", daemon=True)
        t.start()
        self._threads.append(t)
        self.audit.write("gateway_start", ae_title=c.ae_title, port=self.port, tls=c.tls is not None)
        LOG.info("gateway %s listening on %s:%d%s; stable after %gs", c.ae_title, c.host, self.port,
                 " (TLS)" if c.tls else "", self.cfg.stable_seconds)
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        if self._http is not None:
            self._http.shutdown()
            self._http = None
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
        for t in self._threads:
            t.join(timeout=30)
        self._write_status(running=False)
        self.audit.write("gateway_stop")
        self.audit.close()
        if getattr(self, "_lock", None) is not None:
            self._lock.release()

    def _on_event(self, kind: str, **kw) -> None:
        self.state.event(kind, **kw)

    # ----------------------------------------------------------------- monitor
    def _pending(self) -> list[str]:
        try:
            return list(json.loads(self.pending_path.read_text()))
        except (OSError, ValueError):
            return []

    def _set_pending(self, refs: list[str]) -> None:
        write_json(self.pending_path, sorted(set(refs)))
        os.chmod(self.pending_path, FILE_MODE)

    def _write_status(self, running: bool = True) -> None:
        try:
            write_json(self.state.path, self.state.snapshot(self.spool, len(self._pending()), running))
            os.chmod(self.state.path, FILE_MODE)
        except OSError as err:
            LOG.warning("cannot write the status file (%s)", err.strerror)

    def _monitor(self) -> None:
        tick = min(1.0, max(0.05, self.cfg.stable_seconds / 5))
        last_status = 0.0
        while not self._stop.is_set():
            try:
                self.process_stable()
            except Exception as err:  # noqa: BLE001 - the service keeps running; the error is shown
                LOG.exception("processing stable studies failed")
                self.state.error(f"processing failed: {type(err).__name__}")
            if time.time() - last_status >= 1.0:
                self._write_status()
                last_status = time.time()
            self._stop.wait(tick)

    def process_stable(self, force: bool = False, only: set[str] | None = None) -> list[str]:
        """Release the stable studies (all waiting ones with ``force``; with ``only``, just these study
        references) and run the pipeline on them, together with any batch an interrupted run left in
        ``pending.json`` (released already, never processed)."""
        ready = self.spool.pending() if force else self.spool.stable(self.cfg.stable_seconds)
        if only is not None:
            ready = [e for e in ready if e.ref in only]
        pending = self._pending()
        if not ready and not pending:
            return []
        t0 = time.time()
        refs = [e.ref for e in ready]
        self._set_pending(pending + refs)
        for e in ready:
            n = self.spool.release(e.ref)
            self.audit.write("study_stable", study=e.ref, instances=n, bytes=e.bytes,
                             quiet_s=round(t0 - e.last_arrival, 1))
        batch = sorted(set(pending + refs))
        if not self.cfg.run_pipeline:
            self._set_pending([])
            self.state.add("studies_processed", len(batch))
            return batch
        ok, reason = self._run_pipeline()
        seconds = round(time.time() - t0, 3)
        if self._stop.is_set() and not ok:
            return batch  # interrupted by stop(): pending.json keeps the batch for the next start
        self.state.last_processing_s = seconds
        self.state.add("pipeline_runs")
        self.state.add("studies_processed" if ok else "studies_failed", len(batch))
        if not ok:
            self.state.error(f"pipeline failed for {len(batch)} stud{'y' if len(batch) == 1 else 'ies'}: {reason}")
        for ref in batch:
            self.audit.write("study_processed" if ok else "study_failed", study=ref, seconds=seconds,
                             **({} if ok else {"reason": reason}))
        self._set_pending([])
        self._write_status()
        return batch

    def _run_pipeline(self) -> tuple[bool, str]:
        """``python -m biomarkers run PIPELINE.yaml`` (the public entry point) in a child process."""
        log = self.state_dir / "pipeline.log"
        cmd = [sys.executable, "-m", "biomarkers", "run", str(self.cfg.pipeline)]
        self.state.processing = True
        try:
            fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
            with os.fdopen(fd, "ab") as fh:
                fh.write(f"\n=== pipeline run {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n".encode())
                fh.flush()
                self._proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                              cwd=str(self.cfg.pipeline.parent))
                rc = self._proc.wait()
        finally:
            self._proc = None
            self.state.processing = False
        if rc == 0:
            return True, ""
        meaning = {2: "invalid input or configuration, or a stage failed", 1: "unexpected error"}.get(rc, "killed")
        return False, f"biomarkers run exited with status {rc} ({meaning}; see the gateway's state/pipeline.log)"

    # ----------------------------------------------------------------- health endpoint
    def _start_http(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        gw = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's API
                if self.path.rstrip("/") not in ("/status", "/health", ""):
                    self.send_error(404)
                    return
                body = json.dumps(gw.state.snapshot(gw.spool, len(gw._pending()))).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):  # no access log on stderr
                pass

        s = self.cfg.status
        self._http = ThreadingHTTPServer((s.http_host, s.http_port), Handler)
        self.http_port = self._http.server_address[1]
        t = threading.Thread(target=self._http.serve_forever, name="gateway-http", daemon=True)
        t.start()
        self._threads.append(t)


def read_status(config: GatewayConfig) -> dict:
    """The last status a gateway wrote (``state/status.json``), with ``state`` corrected when it is not running."""
    p = config.spool / "state" / "status.json"
    if not p.is_file():
        return {"state": "never started", "counts": {}, "queue": {}, "last_errors": []}
    st = json.loads(p.read_text())
    alive = True
    try:
        os.kill(int(st.get("pid", 0)), 0)
    except (OSError, ValueError):
        alive = False
    # a running gateway rewrites the file about once a second (its age is the heartbeat)
    if st.get("state") == "running" and (not alive or time.time() - p.stat().st_mtime > 10):
        st["state"] = "not running (no heartbeat)"
    return st
