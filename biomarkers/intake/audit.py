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
    """Append-only JSON-lines log (each line flushed and fsync'ed), rotated by size. Thread-safe.

    Args:
        path: the log (``<spool>/audit.jsonl`` by default).
        rotate_bytes: when a line would take the file past this size, the file is renamed
            ``<stem>.<UTC time>.jsonl`` (a complete log: it ends with a whole line) and a new
            file is started; None: never rotated.
        keep: rotated files kept (the oldest beyond this are deleted); None: all.
    """

    def __init__(self, path: str | os.PathLike, rotate_bytes: int | None = None, keep: int | None = None):
        self.path = Path(path)
        self.rotate_bytes, self.keep = rotate_bytes, keep
        ensure_dir(self.path.parent)
        self._lock = threading.Lock()
        self._fd = self._open()
        self._size = os.fstat(self._fd).st_size

    def _open(self) -> int:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
        os.fchmod(fd, FILE_MODE)
        return fd

    def write(self, event: str, **fields) -> None:
        line = (json.dumps({"event": event, "time": utc_now(), **fields}, sort_keys=True) + "\n").encode("utf-8")
        with self._lock:
            if self._fd is None:
                return
            if self.rotate_bytes is not None and self._size and self._size + len(line) > self.rotate_bytes:
                self._rotate()
            os.write(self._fd, line)
            os.fsync(self._fd)
            self._size += len(line)

    def _rotate(self) -> None:
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        os.close(self._fd)
        self._fd = None
        target, n = self.path.with_name(f"{self.path.stem}.{stamp}{self.path.suffix}"), 0
        while target.exists():  # never overwrite a rotated file
            n += 1
            target = self.path.with_name(f"{self.path.stem}.{stamp}-{n}{self.path.suffix}")
        os.replace(self.path, target)
        self._fd = self._open()
        self._size = 0
        fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if self.keep is not None:
            for old in rotated(self.path)[:-self.keep]:
                old.unlink(missing_ok=True)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def rotated(path: str | os.PathLike) -> list[Path]:
    """The rotated files of an audit log, oldest first."""
    p = Path(path)
    return sorted(p.parent.glob(f"{p.stem}.*{p.suffix}"))


def read_audit(path: str | os.PathLike, with_rotated: bool = True) -> list[dict]:
    """Every entry of an audit log, oldest first (the rotated files' too, unless ``with_rotated=False``)."""
    p = Path(path)
    files = [*(rotated(p) if with_rotated else []), *([p] if p.is_file() else [])]
    return [json.loads(line) for f in files for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]
