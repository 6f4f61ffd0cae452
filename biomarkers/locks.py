"""One run per output folder: the lock every command that writes a folder holds while it runs.

:func:`output_lock` creates ``FOLDER/.lock`` with ``O_CREAT | O_EXCL`` (atomic: of two
runs starting together exactly one creates it) holding the holder's pid, host, process
start time, start time (UTC) and command, and keeps an ``flock`` on it. A second run is
refused at once (:class:`LockError`, exit status 2) naming the holder. The lock of a run
that died is taken over: on the same host when its pid is no longer alive, or is alive
but is another process (its start time differs from the recorded one: pid reuse). A lock
held from another host is never taken over (its pid cannot be checked from here): the
message says to delete the file once that run is known to be gone.

Within one process the lock is re-entrant (``biomarkers run`` holds the pipeline's OUT
and its stages take their own folders below it).

Network file systems: ``O_EXCL`` creation is atomic on NFSv3 and later (Linux clients
since 2.6.5) and on SMB, so two hosts never both get the lock; ``flock`` on NFS is
emulated by byte-range locks (NLM / NFSv4 leases) and not relied upon. What NFS does not
give: detection of a holder that died on another host (its lock stays until deleted by
hand), and cached attributes may delay a release seen from another host by a few seconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Iterator

from .errors import InputError

LOCK = ".lock"

_held: dict[str, int] = {}  # resolved folder -> depth (this process)
_guard = threading.Lock()


class LockError(InputError):
    """Another run holds the output folder (exit status 2)."""


def _start_ticks(pid: int) -> str:
    """The start time of process ``pid`` in clock ticks since boot (Linux ``/proc``; '' elsewhere)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[-1].split()[19]


def _alive(pid: int, ticks: str) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, another user's
    now = _start_ticks(pid)
    return not (ticks and now and now != ticks)  # a reused pid is another process


def holder(folder: str | os.PathLike) -> dict | None:
    """The recorded holder of ``FOLDER/.lock`` (None when there is no lock file)."""
    try:
        return json.loads((Path(folder) / LOCK).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # being written, or damaged


def _describe(h: dict) -> str:
    if not h:
        return "its lock file is unreadable: empty or damaged"
    return (f"pid {h.get('pid', '?')} on host {h.get('host', '?')}, started {h.get('started', '?')}"
            + (f": {h['command']}" if h.get("command") else ""))


@contextlib.contextmanager
def output_lock(folder: str | os.PathLike, command: str = "", tree: bool = True) -> Iterator[Path]:
    """Hold ``FOLDER/.lock`` for the duration of the block (creates ``FOLDER``). ``command``: what
    holds it, as the refusal of a second run names it (e.g. ``biomarkers ingest``; no paths).
    ``tree=False`` when FOLDER is only the folder of output files (``link --out T.parquet``): the
    temporaries removed on taking the lock are then FOLDER's own, none below it.

    Raises:
        LockError: another live run holds the folder (names pid, host, start time).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    key = str(folder.resolve())
    with _guard:
        if _held.get(key):
            _held[key] += 1
            reentrant = True
        else:
            reentrant = False
    if reentrant:
        try:
            yield folder / LOCK
        finally:
            with _guard:
                _held[key] -= 1
        return
    fd = _acquire(folder, command or "biomarkers")  # never argv: it may hold source paths
    with _guard:
        _held[key] = 1
    try:
        from .io import remove_partial

        remove_partial(folder, tree)  # temporary files of an interrupted run's writes (no live writer: we hold the lock)
        yield folder / LOCK
    finally:
        with _guard:
            _held.pop(key, None)
        with contextlib.suppress(OSError):
            (folder / LOCK).unlink()
        os.close(fd)


def _acquire(folder: Path, command: str) -> int:
    path = folder / LOCK
    me = {"pid": os.getpid(), "host": socket.gethostname(), "ticks": _start_ticks(os.getpid()),
          "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "command": command[:200]}
    for _ in range(100):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            h = holder(folder)
            if h is None:
                continue  # released meanwhile: try again
            if not h and time.time() - _mtime(path) < 2:
                time.sleep(0.05)  # being written by the other run: give it a moment
                continue
            if (h and h.get("host") == me["host"] and not _alive(int(h.get("pid", 0)), str(h.get("ticks", "")))) \
                    or (not h and not _flocked(path)):
                _take_over(path, h)
                continue
            where = "" if not h or h.get("host") == me["host"] else (
                "; it runs on another host, so it cannot be checked from here")
            raise LockError(f"{folder}: another biomarkers run is writing this folder ({_describe(h or {})}){where}; "
                            f"wait for it to finish, or delete {path} if that run is no longer running")
        try:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except (ImportError, OSError):
            pass  # advisory extra only (e.g. NFS without lock manager): O_EXCL is the lock
        os.write(fd, (json.dumps(me) + "\n").encode())
        os.fsync(fd)
        return fd
    raise LockError(f"{folder}: could not take {path} (it keeps changing: another run starting?)")


def _flocked(path: Path) -> bool:
    """Whether a process holds an ``flock`` on ``path`` (a damaged lock file's holder still running)."""
    try:
        import fcntl

        fd = os.open(path, os.O_RDONLY)
    except (ImportError, OSError):
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _take_over(path: Path, h: dict) -> None:
    """Remove the lock of a dead holder: renamed aside first, so of two runs taking it over
    only one removes it (the other's rename fails and it retries the creation)."""
    import logging

    aside = path.with_name(f"{LOCK}.stale.{os.getpid()}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return
    try:
        stale = json.loads(aside.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        stale = {}
    if stale.get("pid") != h.get("pid") or stale.get("ticks") != h.get("ticks"):
        # another run took it over and locked meanwhile: put its lock back
        with contextlib.suppress(OSError):
            os.link(aside, path)
        aside.unlink(missing_ok=True)
        return
    aside.unlink(missing_ok=True)
    logging.getLogger(__name__).warning("%s: lock of a run that is no longer running taken over (%s)",
                                        path.parent.name, _describe(h))
