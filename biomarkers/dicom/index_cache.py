"""Hospital-side cache of DICOM header reads, so a growing datalake is not re-indexed.

Indexing reads one header per file (:func:`biomarkers.dicom.header.read_header`); on
a cohort of 10^4-10^6 files that is most of an incremental run. The cache remembers,
per file, the result of that read together with the file's size and modification
time (ns), the same test git's index uses: a file whose size or mtime changed is read
again, a file that disappeared is dropped, and a new file is read.

Privacy: the cached header values are the *original* ones (PatientID, UIDs,
acquisition dates, file paths relative to SRC), exactly what the index holds in
memory. The cache is therefore kept on the source (hospital) side, never in the
output folder: by default under the user's cache folder (``$BIOMARKERS_CACHE_DIR``,
else ``$XDG_CACHE_HOME/biomarkers``, else ``~/.cache/biomarkers``), one SQLite file per
source folder (named by a hash of its resolved path), created with owner-only
permissions (folder 0700, file 0600). :func:`resolve_cache_path` refuses a location
inside the output or the source folder.

The cache is an accelerator only: it can be deleted at any time, and when it cannot
be opened or written the index is read from the files as without it (a warning is
logged, the run goes on).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import sqlite3
import time
from pathlib import Path
from typing import Iterable

from ..errors import InputError
from .header import HeaderKind, HeaderResult, UnusedFile, intern_shared
from .model import DicomFile, SegmentationObject

log = logging.getLogger(__name__)

#: Bump when read_header's result for the same file can change (new tags, new reasons...).
INDEX_CACHE_VERSION = 9
CACHE_ENV = "BIOMARKERS_CACHE_DIR"

#: Fields stored as JSON lists and read back as tuples.
_TUPLE_FIELDS = {f.name for c in (DicomFile, SegmentationObject) for f in dataclasses.fields(c) if "tuple" in str(f.type)}


def default_cache_dir() -> Path:
    """``$BIOMARKERS_CACHE_DIR``, else ``$XDG_CACHE_HOME/biomarkers``, else ``~/.cache/biomarkers``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "biomarkers"


def resolve_cache_path(setting: str, src: Path, out: Path, kind: str = "index", suffix: str = ".sqlite") -> Path | None:
    """Where the index cache of ``src`` lives for an ``index_cache`` setting, or None (off).

    ``kind``/``suffix`` name other source-side caches of ``src`` in the same folder
    (``<folder>/<kind>/<hash of src><suffix>``), e.g. the pipeline's per-file content
    hashes of the source tree.

    ``setting``: ``"auto"`` (the default cache folder, see module docstring), ``"off"``,
    or a folder. Raises :class:`InputError` for a folder inside ``out`` (the cache holds
    original identifiers and must stay on the source side) or inside ``src`` (never
    modified).
    """
    if setting == "off":
        return None
    folder = default_cache_dir() if setting == "auto" else Path(setting).expanduser()
    folder_r, src_r, out_r = folder.resolve(), Path(src).resolve(), Path(out).resolve()
    if folder_r == out_r or out_r in folder_r.parents:
        raise InputError(
            f"index cache folder {folder} is inside the output folder {out}: the cache holds original "
            f"identifiers (PatientID, UIDs, source paths) and must stay on the source side; set "
            f"index_cache to a folder outside {out} (or 'off')"
        )
    if folder_r == src_r or src_r in folder_r.parents:
        raise InputError(
            f"index cache folder {folder} is inside the source folder {src}, which is never modified; "
            f"set index_cache to a folder outside it (or 'off')"
        )
    name = hashlib.sha256(str(src_r).encode("utf-8")).hexdigest()[:32]
    return folder / kind / f"{name}{suffix}"


def _plain(obj) -> dict | None:
    return None if obj is None else {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj) if f.name != "path"}


def _encode(r: HeaderResult) -> str:
    """JSON of a header result without file paths (given again at lookup)."""
    d = {"rel": r.rel, "sop": r.sop_instance_uid, "frames": [_plain(f) for f in r.frames],
         "segmentation": _plain(r.segmentation), "other": _plain(r.other), "unused": _plain(r.unused)}
    return json.dumps(d, separators=(",", ":"))


def _decode(kind: str, text: str, path: Path) -> HeaderResult:
    raw = json.loads(text)

    def build(cls, d: dict | None):
        if d is None:
            return None
        if cls is UnusedFile:
            return cls(**d)
        intern_shared(d)
        for k in _TUPLE_FIELDS.intersection(d):
            if d[k] is not None:
                d[k] = tuple(d[k])
        return cls(path=path, **d)

    return HeaderResult(HeaderKind(kind), raw["rel"], [build(DicomFile, d) for d in raw["frames"]],
                        build(SegmentationObject, raw["segmentation"]), build(DicomFile, raw["other"]),
                        build(UnusedFile, raw["unused"]), raw["sop"])


def cacheable(r: HeaderResult) -> bool:
    """Whether a header result depends only on the file's bytes (not on a transient I/O error)."""
    return not (r.kind == HeaderKind.UNUSED and r.unused.reason.startswith("unreadable"))


class IndexCache:
    """The header-read cache of one source folder (an SQLite file; see the module docstring).

    Use :meth:`lookup` for each listed file, then :meth:`update` once with the new reads
    and the set of files present (entries of files no longer present are dropped).
    """

    #: Files modified within this many ns before the index started are not cached (see update).
    RACY_NS = 2_000_000_000

    def __init__(self, path: Path):
        self.path = Path(path)
        self.started_ns = time.time_ns()
        self._db: sqlite3.Connection | None = None
        self._rows: dict[str, tuple[int, int, str, str]] = {}
        self.hits = 0
        try:
            self._open()
        except (OSError, sqlite3.Error) as err:
            log.warning("index cache %s not usable (%s): headers are read from the files", self.path, err)
            self._db = None

    def _open(self) -> None:
        folder = self.path.parent  # <cache dir>/index: ours, owner-only
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        if folder.stat().st_uid != os.getuid():
            raise OSError(f"refusing a cache folder not owned by this user: {folder}")
        os.chmod(folder, 0o700)
        if not self.path.exists():
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        st = self.path.stat()
        if st.st_uid != os.getuid() or st.st_mode & 0o077:
            raise OSError(f"refusing a cache file not owned by this user or readable by others "
                          f"(mode {oct(st.st_mode & 0o777)})")
        db = sqlite3.connect(self.path, timeout=60)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
        db.execute("CREATE TABLE IF NOT EXISTS headers (rel TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, "
                   "kind TEXT, payload TEXT)")
        ver = db.execute("SELECT value FROM meta WHERE key='version'").fetchone()
        if ver is None or ver[0] != str(INDEX_CACHE_VERSION):
            with db:
                db.execute("DELETE FROM headers")
                db.execute("INSERT OR REPLACE INTO meta VALUES ('version', ?)", (str(INDEX_CACHE_VERSION),))
        self._rows = {r[0]: tuple(r[1:]) for r in db.execute("SELECT rel, size, mtime_ns, kind, payload FROM headers")}
        self._db = db

    @property
    def enabled(self) -> bool:
        return self._db is not None

    def lookup(self, rel: str, path: str | Path, size: int, mtime_ns: int) -> HeaderResult | None:
        """The cached read of ``rel`` (at ``path``) if its size and mtime are unchanged, else None."""
        hit = self._rows.get(rel)
        if hit is None or hit[0] != size or hit[1] != mtime_ns:
            return None
        try:
            value = _decode(hit[2], hit[3], Path(path))
        except (ValueError, TypeError, KeyError):
            return None
        self.hits += 1
        return value

    def update(self, fresh: Iterable[tuple[str, int, int, HeaderResult]], present: set[str]) -> None:
        """Store new reads ``(rel, size, mtime_ns, result)``; drop entries not in ``present``.

        Files modified less than :attr:`RACY_NS` before the listing are not stored: a
        file rewritten with the same size within the file system's timestamp
        granularity would keep its mtime, so its cached read could be stale (git's
        "racily clean" entries). They are simply read again next time.
        """
        if self._db is None:
            return
        limit = self.started_ns - self.RACY_NS
        rows = [(rel, size, mt, str(r.kind), _encode(r)) for rel, size, mt, r in fresh if mt < limit and cacheable(r)]
        gone = [(rel,) for rel in self._rows if rel not in present]
        try:
            with self._db:
                self._db.executemany("INSERT OR REPLACE INTO headers VALUES (?, ?, ?, ?, ?)", rows)
                self._db.executemany("DELETE FROM headers WHERE rel = ?", gone)
        except sqlite3.Error as err:
            log.warning("index cache %s not updated (%s)", self.path, err)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
