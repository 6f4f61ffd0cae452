"""The gateway's audit log: who sent what, when (JSON lines, site side, mode 0600).

One line per event, e.g.::

    {"event": "association", "time": "2026-12-01T09:00:00.123Z", "calling_ae": "PACS", "peer": "10.0.0.5",
     "accepted": true}
    {"event": "association_end", ..., "instances": 48, "duplicates": 0, "refused": 1, "bytes": 4101234,
     "studies": {"2.25.1234...": 48}, "duration_s": 1.2}
    {"event": "study_processed", "study": "2.25.1234...", "instances": 49, "seconds": 6.1}

Studies are referenced by their keyed pseudonym (the de-identified Study Instance UID that
ingest writes to the manifest), never by the original UID. Times are the gateway's clock
(UTC) of the transfers, not dates from the data.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
from pathlib import Path

from .spool import FILE_MODE, ensure_dir


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class AuditLog:
    """Append-only JSON-lines log (each line flushed and fsync'ed). Thread-safe."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        ensure_dir(self.path.parent)
        self._lock = threading.Lock()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
        os.fchmod(fd, FILE_MODE)
        self._fd = fd

    def write(self, event: str, **fields) -> None:
        line = json.dumps({"event": event, "time": utc_now(), **fields}, sort_keys=True) + "\n"
        with self._lock:
            if self._fd is None:
                return
            os.write(self._fd, line.encode("utf-8"))
            os.fsync(self._fd)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def read_audit(path: str | os.PathLike) -> list[dict]:
    """Every entry of an audit log (for reports and tests)."""
    p = Path(path)
    if not p.is_file():
        return []
    return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
