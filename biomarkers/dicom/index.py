"""Index a folder of DICOM files: header-only reads (:mod:`.header`), duplicates, then stacks.

Every file under SRC is looked at (any name, recursively). Files that cannot be used (see
:mod:`.header`; duplicate SOP instances) become :class:`UnusedFile` with a reason, never an error.

Identifiers kept here are the original DICOM values, in memory only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from ..io import walk_files
from .header import HeaderKind, HeaderResult, UnusedFile, quiet_pydicom, read_header
from .model import DicomFile, SegmentationObject
from .stacks import build_stacks, is_localizer, sort_along_normal  # noqa: F401 - index API
from .sop import IMAGE_SOPS, RTSTRUCT_SOP, SEG_SOP, UNCOMPRESSED_LE  # noqa: F401 - index API


@dataclass
class IndexResult:
    """What :func:`index_folder` found under SRC."""

    files: list[DicomFile] = field(default_factory=list)  # image frames/slices (one per frame)
    segmentations: list[SegmentationObject] = field(default_factory=list)
    unused: list[UnusedFile] = field(default_factory=list)
    unsupported: list[DicomFile] = field(default_factory=list)  # DICOM objects that are not convertible images
    n_files: int = 0
    n_cached: int = 0  # files whose header came from the index cache (not read again)


def index_paths(items: list[tuple[str, str]]) -> list[HeaderResult]:
    """Read the headers of ``(absolute path, rel)`` pairs (a work item: picklable, top level)."""
    with quiet_pydicom():
        return _index_paths(items, [])


def _index_paths(items, out):
    for p, rel in items:
        try:
            out.append(read_header(Path(p), rel))
        except Exception as err:  # noqa: BLE001 - never fatal
            out.append(HeaderResult.not_used(rel, f"unreadable ({type(err).__name__})"))  # messages name paths
    return out


def collect(results: Iterable[HeaderResult], n_files: int) -> IndexResult:
    """Merge header results; flag duplicate SOP instances (the first path in sorted order wins)."""
    res = IndexResult(n_files=n_files)
    seen: dict[str, str] = {}
    for r in sorted(results, key=lambda r: r.rel):
        if r.kind == HeaderKind.UNUSED:
            res.unused.append(r.unused)
            continue
        if r.sop_instance_uid in seen:
            res.unused.append(UnusedFile(r.rel, "duplicate (same SOP instance as another file)", seen[r.sop_instance_uid]))
            continue
        seen[r.sop_instance_uid] = r.rel
        if r.kind == HeaderKind.IMAGE:
            res.files.extend(r.frames)
        elif r.kind == HeaderKind.SEG:
            res.segmentations.append(r.segmentation)
        else:
            res.unsupported.append(r.other)
    res.unused.sort(key=lambda u: u.rel)
    return res


def index_folder(src: str | Path, exclude: Path | None = None, executor=None, chunk: int = 256,
                 cache=None) -> IndexResult:
    """Index every file under ``src`` (header reads; ``executor`` parallelises chunks of files).

    ``cache``: an optional :class:`~biomarkers.dicom.index_cache.IndexCache`; files whose
    size and mtime are unchanged since they were cached are not read again
    (``IndexResult.n_cached`` counts them), and the cache is updated with the new reads.
    """
    src = Path(src)
    todo, hits, present = split_cached(walk_files(src, hidden=True, exclude=exclude), cache)
    return merge(todo, read_headers(todo, executor, chunk), hits, present, cache)


def merge(todo: list[tuple[str, str, int, int]], fresh: list, hits: list, present: set[str], cache=None) -> IndexResult:
    """Store the fresh reads of ``todo`` in ``cache`` (if any) and collect them with the cached ``hits``."""
    if cache is not None:
        cache.update(((rel, size, mt, r) for (_, rel, size, mt), r in zip(todo, fresh)), present)
    res = collect(hits + fresh, len(present))
    res.n_cached = len(hits)
    return res


def split_cached(entries: list[tuple[str, str, int, int]], cache=None
                 ) -> tuple[list[tuple[str, str, int, int]], list, set[str]]:
    """``(to read, cached results, every rel)`` of :func:`biomarkers.io.walk_files` entries.

    Files to read are ``(path, rel, size, mtime_ns)``.
    """
    todo: list[tuple[str, str, int, int]] = []
    hits: list = []
    present: set[str] = set()
    for rel, path, size, mt in entries:
        present.add(rel)
        hit = cache.lookup(rel, path, size, mt) if cache is not None else None
        if hit is not None:
            hits.append(hit)
        else:
            todo.append((path, rel, size, mt))
    return todo, hits, present


def read_headers(todo: list[tuple[str, str, int, int]], executor=None, chunk: int = 256) -> list[HeaderResult]:
    """Header results of ``todo`` (see :func:`split_cached`), in its order; chunks go to ``executor``."""
    pairs = [(p, rel) for p, rel, _, _ in todo]
    if executor is None or len(pairs) <= chunk:
        return index_paths(pairs)
    n = max(1, min(len(pairs) // chunk + 1, 4 * max(1, executor.workers)))
    size = -(-len(pairs) // n)
    parts: dict[int, list] = {}
    items = [(f"index-{i}", pairs[i * size : (i + 1) * size]) for i in range(n)]
    for out in executor.map_unordered(index_paths, items):
        i = int(out.key.split("-")[1])
        if out.ok:
            parts[i] = out.value
        else:
            why = (out.error or "error").strip().splitlines()[0].split(":")[0][:80]  # the error's type, no paths
            parts[i] = [HeaderResult.not_used(rel, f"unreadable ({why})") for _, rel in pairs[i * size : (i + 1) * size]]
    return [r for i in range(n) for r in parts.get(i, [])]
