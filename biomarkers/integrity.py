"""Integrity on read: the record of every output written, verified before a later step uses it.

One mechanism for every stage. A folder a step writes (an ingest ``OUT``, a ``FEATURES``
folder, a pipeline ``OUT``'s stage state) keeps a :class:`Ledger` (``.integrity.json`` in the
folder): one :class:`FileRecord` per file written, keyed by its path relative to the folder:
byte size, SHA-256 of the bytes, CRC-32 of each of (at most 64) blocks, the modification time seen right
after writing and when (UTC). Before an output is reused or read by the next step it is
checked against its record (:func:`check`):

- ``missing``: the file is gone;
- ``truncated``: shorter than written, and every whole block it still has is as written;
- ``changed since written``: any other difference of size or content.

Fast path: a file whose size and modification time are those recorded is taken as
written (one ``stat``; a warm rerun reads no byte); otherwise it is read and hashed, and
a file merely touched or copied (same bytes) passes. ``full=True`` (``biomarkers verify``)
always hashes. A file without a record is never reused: the step recomputes it.

Problems name the file relative to the output folder of the command (never a source path).
The records hold no identifier: paths are pseudonymised output names, digests are of outputs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
import zlib
from dataclasses import asdict, dataclass, replace
from pathlib import Path

LEDGER = ".integrity.json"
SCHEMA = "biomarkers.integrity/1"
BLOCKS = 64  # CRC-32 blocks per file (at most): block size a power of two, at least 256 bytes

MISSING = "missing"
TRUNCATED = "truncated"
CHANGED = "changed since written"


@dataclass(frozen=True)
class FileRecord:
    """What a file was when it was written: ``size`` (bytes), ``sha256`` (hex, of the bytes),
    ``blocks`` (CRC-32 of each ``block`` bytes, 8 hex digits each, concatenated: tells a truncated
    file from another one), ``mtime_ns`` (its modification time just after writing) and
    ``written_at`` (UTC, ISO 8601)."""

    size: int
    sha256: str
    blocks: str = ""
    mtime_ns: int = 0
    written_at: str = ""
    block: int = 1 << 20

    @classmethod
    def of(cls, path: str | os.PathLike) -> "FileRecord":
        """The record of ``path`` as it is now (one read)."""
        st = os.stat(path)
        block = max(256, 1 << max(0, (st.st_size // BLOCKS)).bit_length())
        sha, blocks = _digest(path, block)
        return cls(st.st_size, sha, blocks, st.st_mtime_ns, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), block)

    @classmethod
    def from_dict(cls, d: dict) -> "FileRecord":
        return cls(int(d["size"]), str(d["sha256"]), str(d.get("blocks", "")), int(d.get("mtime_ns", 0)),
                   str(d.get("written_at", "")), int(d.get("block", 1 << 20)))


def _digest(path, block: int = 1 << 20, limit: int | None = None) -> tuple[str, str]:
    """SHA-256 and per-block CRC-32s of a file's bytes (the first ``limit`` bytes when given)."""
    h = hashlib.sha256()
    crcs = []
    left = limit
    with open(path, "rb", buffering=0) as fh:
        while left is None or left > 0:
            block_ = fh.read(block if left is None else min(block, left))
            if not block_:
                break
            h.update(block_)
            crcs.append(f"{zlib.crc32(block_) & 0xFFFFFFFF:08x}")
            if left is not None:
                left -= len(block_)
    return h.hexdigest(), "".join(crcs)


@dataclass(frozen=True)
class Problem:
    """A file that is not as written: ``path`` (relative to the output folder), ``word``
    (:data:`MISSING`, :data:`TRUNCATED`, :data:`CHANGED`) and ``detail``."""

    path: str
    word: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.path}: {self.word}" + (f" ({self.detail})" if self.detail else "")


def check(path: str | os.PathLike, rec: FileRecord, name: str, full: bool = False) -> Problem | None:
    """Compare ``path`` with its record; None when it is as written. ``name``: how the problem names it."""
    return _check(path, rec, name, full)[0]


def _check(path, rec: FileRecord, name: str, full: bool) -> tuple[Problem | None, int]:
    """:func:`check`, and the file's modification time (ns; 0 when it cannot be read)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return Problem(name, MISSING, f"written {rec.written_at}" if rec.written_at else ""), 0
    except OSError as err:
        return Problem(name, MISSING, f"cannot be read: {err.strerror}"), 0
    if st.st_size < rec.size:
        whole = st.st_size // rec.block if rec.blocks else 0  # blocks the file still has in full
        _, blocks = _digest(path, rec.block, whole * rec.block) if whole else ("", "")
        if blocks == rec.blocks[: 8 * whole]:  # (no block checksums recorded: any shorter file)
            return Problem(name, TRUNCATED, f"{st.st_size} of {rec.size} bytes"), st.st_mtime_ns
        return Problem(name, CHANGED, f"{st.st_size} bytes, {rec.size} written"), st.st_mtime_ns
    if st.st_size != rec.size:
        return Problem(name, CHANGED, f"{st.st_size} bytes, {rec.size} written"), st.st_mtime_ns
    if not full and st.st_mtime_ns == rec.mtime_ns:
        return None, st.st_mtime_ns
    sha, _ = _digest(path, rec.block)
    return (None if sha == rec.sha256 else Problem(name, CHANGED, "content differs from the recorded SHA-256")), \
        st.st_mtime_ns


class Ledger:
    """The records of the files one output folder holds (``ROOT/.integrity.json``).

    Args:
        root: the folder; records are keyed by paths relative to it (``/``-separated).
        prefix: how problems name the folder (e.g. ``dataset/`` for a pipeline's ingest output).

    The step that writes the folder calls :meth:`add` after writing each file and
    :meth:`save` (atomic) at the end and at intervals; readers call :meth:`verify` or :meth:`problems`.
    """

    def __init__(self, root: str | os.PathLike, prefix: str = ""):
        self.root = Path(root)
        self.path = self.root / LEDGER
        self.prefix = prefix
        self.present = self.path.is_file()
        self.damaged = False
        self.files: dict[str, FileRecord] = {}
        if self.present:
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
                self.files = {k: FileRecord.from_dict(v) for k, v in data["files"].items()}
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                self.damaged = True  # every record lost: nothing is reused, everything is redone
        self._dirty = False
        self._saved = time.monotonic()

    def name(self, rel: str) -> str:
        return f"{self.prefix}{rel}"

    def get(self, rel: str) -> FileRecord | None:
        return self.files.get(rel)

    def add(self, rel: str) -> FileRecord:
        """Record ``ROOT/rel`` as just written (reads it once)."""
        rec = self.files[rel] = FileRecord.of(self.root / rel)
        self._dirty = True
        return rec

    def forget(self, rel: str) -> None:
        if self.files.pop(rel, None) is not None:
            self._dirty = True

    def verify(self, rel: str, full: bool = False) -> Problem | None:
        """:func:`check` of ``ROOT/rel`` against its record; a file without a record is a problem too
        (``missing``, or ``changed since written`` when the file exists: reuse needs a record).
        A file with the recorded bytes but another modification time (touched, copied) gets that
        time in its record (kept when the folder's writer saves it): the next check is one ``stat``."""
        rec = self.files.get(rel)
        if rec is None:
            return Problem(self.name(rel), MISSING, "no integrity record") if not (self.root / rel).is_file() \
                else Problem(self.name(rel), CHANGED, "no integrity record: written by an interrupted or older run")
        p, mtime_ns = _check(self.root / rel, rec, self.name(rel), full)
        if p is None and mtime_ns != rec.mtime_ns:
            self.files[rel] = replace(rec, mtime_ns=mtime_ns)
            self._dirty = True
        return p

    def reusable(self, rel: str, redo: str = "", adopt=None) -> bool:
        """Whether ``ROOT/rel`` can be reused: it has a record and is as written (fast path). A damaged
        file is reported (one warning naming it, the word and ``redo``: what is done about it).

        A file without a record (written by a run interrupted before it saved its records, or by
        an older version) is reused only when ``adopt(path)`` checks its content against what
        the step knows of it (e.g. the voxel hash of its sidecar, the item key inside an item
        file); it is then recorded. Otherwise it is silently redone.
        """
        if rel not in self.files:
            path = self.root / rel
            if adopt is None or not path.is_file():
                return False
            try:
                ok = bool(adopt(path))
            except Exception:  # noqa: BLE001 - an unreadable file is redone
                ok = False
            if ok:
                self.add(rel)
            return ok
        problem = self.verify(rel)
        if problem is not None:
            report_problems([problem], redo)
        return problem is None

    def problems(self, rels=None, full: bool = False) -> list[Problem]:
        """:meth:`verify` of every recorded file (or of ``rels``), the ledger's own state first."""
        out = []
        if self.damaged:
            out.append(Problem(self.name(LEDGER), CHANGED, "unreadable integrity record"))
        elif not self.present:
            out.append(Problem(self.name(LEDGER), MISSING, "no integrity record of this folder"))
        for rel in sorted(self.files if rels is None else rels):
            p = self.verify(rel, full)
            if p is not None:
                out.append(p)
        return out

    @contextlib.contextmanager
    def writing(self, command: str):
        """Hold the folder's lock (:func:`biomarkers.locks.output_lock`) while the block writes it;
        the records are saved at the end, also when the block fails or is interrupted."""
        from .locks import output_lock

        with output_lock(self.root, command):
            try:
                yield self
            finally:
                self.save()

    def save(self, every_s: float = 0.0) -> None:
        """Write the records atomically (with ``every_s``: only when that long since the last save)."""
        if not self._dirty or (every_s and time.monotonic() - self._saved < every_s):
            return
        from .io import write_json

        write_json(self.path, {"schema": SCHEMA, "files": {k: asdict(v) for k, v in sorted(self.files.items())}})
        self.present, self.damaged, self._dirty, self._saved = True, False, False, time.monotonic()


def report_problems(problems, what: str = "") -> None:
    """Log one warning line per problem, with what is done about it (``what``)."""
    import logging

    log = logging.getLogger(__name__)
    for p in problems:
        log.warning("%s%s", p, f"; {what}" if what else "")
