"""The site-side spool: durable storage of received instances until their study is stable.

Layout (every folder mode 0700, every file 0600; names are keyed pseudonyms, never UIDs)::

    <spool>/tmp/                          instances being written
    <spool>/incoming/<study_ref>/<sop_ref>.dcm
    <received>/<study_ref>/<sop_ref>.dcm   stable studies (the pipeline's source.dicom = ingest SRC)

``study_ref`` / ``sop_ref`` are :meth:`Pseudonymizer.uid` of the Study / SOP Instance UID,
i.e. the de-identified UIDs ingest writes to the manifest, so an audit entry can be matched
to a dataset row without the original UID.

:meth:`Spool.store` writes a temporary file, fsyncs it, renames it into place and fsyncs
the folder before it returns: an instance it reported as stored survives a crash (``kill -9``)
or a power failure. A second copy of an instance (same SOP Instance UID, same dataset
bytes, or the same elements and values encoded differently) is a ``duplicate`` and is not written
again; the same UID with different content is a ``conflict`` (the first copy is kept, the sender
gets a failure status).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

FILE_MODE = 0o600
DIR_MODE = 0o700


def split_meta(data: bytes | memoryview) -> int:
    """Offset of the dataset in a DICOM Part 10 file (after preamble, ``DICM`` and the group 0002 meta).

    The meta group is always explicit VR little endian (PS3.10 7.1); the offset is found by
    walking its elements, so a missing or wrong (0002,0000) group length does not matter.
    Raises ValueError when ``data`` is not a Part 10 file.
    """
    if len(data) < 132 or bytes(data[128:132]) != b"DICM":
        raise ValueError("not a DICOM Part 10 file (no DICM prefix)")
    pos = 132
    while pos + 8 <= len(data):
        group = struct.unpack_from("<H", data, pos)[0]
        if group != 0x0002:
            return pos
        vr = bytes(data[pos + 4:pos + 6])
        if vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN", b"UC", b"UR", b"OD", b"OL", b"OV", b"SV", b"UV"):
            length = struct.unpack_from("<I", data, pos + 8)[0]
            pos += 12 + length
        else:
            length = struct.unpack_from("<H", data, pos + 6)[0]
            pos += 8 + length
    return pos


def dataset_bytes(path: str | os.PathLike) -> bytes:
    """The encoded dataset of a Part 10 file (what a C-STORE carries), without preamble and meta."""
    data = Path(path).read_bytes()
    return data[split_meta(data):]


def _same_content(existing: Path, encoded: bytes) -> bool:
    """Same elements and values, encoded differently (a sender that re-encodes: e.g. dcmtk writes
    sequences with explicit lengths where the file had undefined lengths)."""
    import io
    import warnings

    from pydicom import dcmread

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return dcmread(existing) == dcmread(io.BytesIO(encoded))
    except Exception:  # noqa: BLE001 - unreadable: not the same content
        return False


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_dir(path: Path, sync: bool = True) -> Path:
    """Create ``path`` (and parents) owner-only; fsync the parent of every folder created."""
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(d, DIR_MODE)
            if sync:
                _fsync_dir(d.parent)
    return path


@dataclass
class StudyEntry:
    """A study waiting in the spool: when its last instance arrived (epoch seconds) and how much is there."""

    ref: str
    last_arrival: float = 0.0
    instances: int = 0
    bytes: int = 0


@dataclass
class StoreResult:
    status: str  # stored | duplicate | conflict
    study_ref: str
    sop_ref: str
    nbytes: int = 0


@dataclass
class Spool:
    """Durable instance store (see the module docstring). Thread-safe.

    Args:
        root: the spool folder (site side, outside every output).
        received: the received-studies folder (the pipeline's ``source.dicom``).
        pseudonymizer: keyed pseudonymiser naming studies and instances.
        fsync: fsync each instance and its folder before :meth:`store` returns.
    """

    root: Path
    received: Path
    pseudonymizer: object
    fsync: bool = True
    recover: bool = True  # remove unacknowledged temporary files at start (False: a read-only view)
    index: dict = field(default_factory=dict)  # sop_ref -> Path (incoming or received)
    studies: dict = field(default_factory=dict)  # study_ref -> StudyEntry (incoming only)

    def __post_init__(self) -> None:
        self.root, self.received = Path(self.root), Path(self.received)
        self.tmp, self.incoming = self.root / "tmp", self.root / "incoming"
        self._tmp, self._incoming = str(self.tmp), str(self.incoming)
        self._folders: set[str] = set()  # incoming/<study_ref> folders known to exist
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._inflight: set[str] = set()
        for d in (self.root, self.tmp, self.incoming, self.received):
            ensure_dir(d)
        os.chmod(self.root, DIR_MODE)
        self.scan()

    # ------------------------------------------------------------------ naming
    def study_ref(self, study_uid: str) -> str:
        return self.pseudonymizer.uid(study_uid)

    def sop_ref(self, sop_uid: str) -> str:
        return self.pseudonymizer.uid(sop_uid)

    # ------------------------------------------------------------------ startup
    def scan(self) -> None:
        """Rebuild the index from disk (after a restart): received first, then the spool."""
        if self.recover:
            for f in self.tmp.iterdir():  # half-written instances were never acknowledged
                with contextlib.suppress(OSError):
                    f.unlink()
        index, studies = {}, {}
        started = time.time()
        for base, pending in ((self.received, False), (self.incoming, True)):
            for d in base.iterdir() if base.is_dir() else ():
                if not d.is_dir():
                    continue
                for f in d.glob("*.dcm"):
                    index[f.stem] = f
                    if pending:
                        # the stability clock restarts now: a sender cut off by a restart gets the
                        # whole stable_seconds to retry before its partial study goes to the pipeline
                        e = studies.setdefault(d.name, StudyEntry(d.name, last_arrival=started))
                        e.instances += 1
                        e.bytes += f.stat().st_size
        with self._lock:
            self.index, self.studies = index, studies

    def has(self, sop_uid: str) -> bool:
        """True when the instance is already in the spool or the received-studies folder."""
        with self._lock:
            return self.sop_ref(sop_uid) in self.index

    # ------------------------------------------------------------------ store
    def store(self, encoded: bytes, sop_uid: str, study_uid: str) -> StoreResult:
        """Write one instance (a whole Part 10 file) durably; see the module docstring.

        Raises OSError when it cannot be written (the caller returns an out-of-resources status).
        """
        sop, study = self.sop_ref(sop_uid), self.study_ref(study_uid)
        with self._cond:
            while sop in self._inflight:
                self._cond.wait()
            existing = self.index.get(sop)
            if existing is None:
                self._inflight.add(sop)
        if existing is not None:
            return StoreResult(self._compare(sop, existing, encoded), study, sop)
        ok = False
        try:
            folder = f"{self._incoming}/{study}"
            dest = f"{folder}/{sop}.dcm"
            tmp = self._write_tmp(encoded, sop)
            with self._lock:
                if folder not in self._folders:  # release() removes a study's folder (under the lock)
                    ensure_dir(Path(folder), sync=self.fsync)
                    self._folders.add(folder)
                os.replace(tmp, dest)
            if self.fsync:
                _fsync_dir(folder)
            ok = True
        finally:
            with self._cond:
                self._inflight.discard(sop)
                if ok:
                    self.index[sop] = Path(dest)
                    e = self.studies.setdefault(study, StudyEntry(study))
                    e.instances += 1
                    e.bytes += len(encoded)
                    e.last_arrival = time.time()
                self._cond.notify_all()
        return StoreResult("stored", study, sop, len(encoded))

    def _write_tmp(self, data: bytes, sop: str) -> str:
        """``tmp/<sop_ref>.dcm`` (one writer per instance: ``_inflight``; leftovers are removed at start)."""
        tmp = f"{self._tmp}/{sop}.dcm"
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(tmp, flags, FILE_MODE)
        try:
            os.fchmod(fd, FILE_MODE)
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            if self.fsync:
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        os.close(fd)
        return tmp

    def _compare(self, sop: str, existing: Path, encoded: bytes) -> str:
        new = memoryview(encoded)[split_meta(encoded):]
        for _ in range(3):  # the file may be moving from the spool to the received folder
            try:
                old = dataset_bytes(existing)
                return "duplicate" if old == new or _same_content(existing, encoded) else "conflict"
            except FileNotFoundError:
                with self._lock:
                    existing = self.index.get(sop, existing)
        raise FileNotFoundError(errno.ENOENT, "spooled instance vanished", existing.name)

    # ------------------------------------------------------------------ stable studies
    def stable(self, seconds: float, now: float | None = None) -> list[StudyEntry]:
        """Studies in the spool whose last instance arrived at least ``seconds`` ago."""
        now = time.time() if now is None else now
        with self._lock:
            return [StudyEntry(**vars(e)) for e in self.studies.values() if now - e.last_arrival >= seconds]

    def pending(self) -> list[StudyEntry]:
        with self._lock:
            return [StudyEntry(**vars(e)) for e in self.studies.values()]

    def release(self, study_ref: str) -> int:
        """Move a study's spooled instances to ``<received>/<study_ref>/`` (merging with what is there).

        Returns the number of instances moved. Instances arriving meanwhile stay in the spool
        (a new entry: the study is released again once it is stable again), and so does one
        whose :meth:`store` has renamed it into place but not yet returned (its folder is being
        flushed and its index entry is not written yet).
        """
        src = self.incoming / study_ref
        dest = ensure_dir(self.received / study_ref, sync=self.fsync)
        moved = 0
        with self._lock:
            files = [f for f in sorted(src.glob("*.dcm")) if f.stem not in self._inflight] if src.is_dir() else []
            for f in files:
                target = dest / f.name
                try:
                    os.replace(f, target)
                except OSError as err:
                    if err.errno != errno.EXDEV:
                        raise
                    shutil.copyfile(f, target)
                    os.chmod(target, FILE_MODE)
                    with open(target, "rb+") as fh:
                        os.fsync(fh.fileno())
                    f.unlink()
                self.index[f.stem] = target
                moved += 1
            self.studies.pop(study_ref, None)
            self._folders.discard(str(src))
            with contextlib.suppress(OSError):
                src.rmdir()
        if self.fsync and moved:
            _fsync_dir(dest)
            _fsync_dir(self.incoming)
        return moved

    def counts(self) -> dict:
        with self._lock:
            return {"studies": len(self.studies), "instances": sum(e.instances for e in self.studies.values())}


class SpoolLock:
    """Exclusive lock (``<spool>/state/lock``) held by the one process writing a spool (gateway or pull)."""

    def __init__(self, spool: Path):
        self.path = ensure_dir(Path(spool) / "state") / "lock"
        self._fh = None

    def acquire(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fh = fd
        return True

    def release(self) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            os.close(self._fh)
            self._fh = None
