"""Atomic file output and content hashing (the only place outputs are written).

Every output is written to a temporary file in the destination folder, flushed,
fsync'ed and renamed over the destination, so a reader (or a resumed run) sees
either the old file or the complete new one, never a partial file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterator

CHUNK = 1 << 20


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike, suffix: str | None = None, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; on success rename it to ``dest``.

    The temporary name keeps ``dest``'s suffixes (e.g. ``.nii.gz``) so writers that
    pick a format from the extension work. On error the temporary file is removed
    and ``dest`` is untouched. ``durable=False`` skips the fsync: still all-or-nothing for
    readers and crashes, but not across a power loss (for many small, re-creatable files whose
    writer verifies them before use, e.g. QC thumbnails).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    suffix = suffix if suffix is not None else "".join(dest.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name.split('.')[0]}.", suffix=".tmp" + suffix, dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if durable:
            with open(tmp_path, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp_path, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


#: Names of :func:`atomic_path`'s temporary files (and of ``tempfile.mkdtemp(prefix=".NAME.", suffix=".tmp")``
#: folders): ``.<stem>.<8 random characters>.tmp[<suffixes>]``.
PARTIAL_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp(\..*)?$")


def remove_partial(root: str | os.PathLike, tree: bool = True) -> int:
    """Remove the temporary files/folders interrupted writes left under ``root`` (:data:`PARTIAL_NAME`;
    symlinks not followed); returns how many. Call it only while holding ``root``'s lock
    (:func:`biomarkers.locks.output_lock` does), so no live writer's file is removed. ``tree=False``:
    only ``root``'s own entries (``root`` is the folder of file outputs, its sub-folders are not its writer's)."""
    import shutil

    n = 0
    for dirpath, dirnames, filenames in os.walk(root):
        if not tree:
            dirnames[:] = [d for d in dirnames if PARTIAL_NAME.match(d)]
        for d in [d for d in dirnames if PARTIAL_NAME.match(d)]:
            dirnames.remove(d)
            shutil.rmtree(os.path.join(dirpath, d), ignore_errors=True)
            n += 1
        for f in filenames:
            if PARTIAL_NAME.match(f):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(dirpath, f))
                n += 1
    return n


def write_bytes(dest: str | os.PathLike, data: bytes, durable: bool = True) -> Path:
    with atomic_path(dest, durable=durable) as tmp:
        tmp.write_bytes(data)
    return Path(dest)


def write_text(dest: str | os.PathLike, text: str) -> Path:
    return write_bytes(dest, text.encode("utf-8"))


def write_json(dest: str | os.PathLike, obj: Any) -> Path:
    """Write JSON atomically (sorted keys, UTF-8, trailing newline)."""
    return write_text(dest, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(o: Any):
    import numpy as np

    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_parquet(dest: str | os.PathLike, df) -> Path:
    """Write a pandas DataFrame to Parquet atomically (pyarrow, no index)."""
    with atomic_path(dest) as tmp:
        df.to_parquet(tmp, index=False, engine="pyarrow")
    return Path(dest)


def write_csv(dest: str | os.PathLike, df) -> Path:
    with atomic_path(dest) as tmp:
        df.to_csv(tmp, index=False)
    return Path(dest)


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def sha256_json(obj: Any) -> str:
    """SHA-256 of a canonical JSON rendering (sorted keys)."""
    return hashlib.sha256(
        json.dumps(obj, sort_keys=True, default=_json_default, separators=(",", ":")).encode()
    ).hexdigest()


def sha256_array(arr) -> str:
    """SHA-256 of an array's dtype, shape and C-order bytes: the content hash of voxels (the
    manifest's ``content_hash``). Hashed in slabs along axis 0, so a non-contiguous view (an
    ``[i, j, k]`` transpose) is never copied whole."""
    import numpy as np

    a = np.asarray(arr).reshape(-1) if np.ndim(arr) == 0 else np.asarray(arr)
    h = hashlib.sha256()
    h.update(str(a.dtype).encode())
    h.update(str(a.shape).encode())
    if a.ndim in (3, 4) and a.T.flags.c_contiguous and not a.flags.c_contiguous:
        for block in _reversed_blocks(a.T):
            h.update(block.data)
        return h.hexdigest()
    for slab in a if a.ndim > 1 else [a]:
        h.update(np.ascontiguousarray(slab).tobytes())
    return h.hexdigest()


def _reversed_blocks(b, rows: int = 64, tile: int = 16):
    """The C-order bytes of ``b.T`` (``b`` a C-contiguous ``(K, J, I)`` or ``(T, K, J, I)`` array: a
    NIfTI volume ``[i, j, k(, t)]`` is its transpose) as contiguous blocks of ``rows`` along ``I``.

    A transposing copy in one pass jumps across the whole volume for every element (cache and
    TLB misses, ~4x slower); here each block is cut out, transposed as a ``(K, J*rows)`` (4-D:
    ``(T, K*J*rows)``) matrix ``tile`` rows at a time, then its remaining axes are reversed in
    runs of ``K`` (4-D: of ``T``).
    """
    import numpy as np

    lead, inner = b.shape[0], b.shape[1:-1]  # (K,), (J,) or (T,), (K, J)
    size = 1
    for d in inner:
        size *= d
    for i0 in range(0, b.shape[-1], rows):
        c = np.ascontiguousarray(b[..., i0 : i0 + rows])  # (lead, *inner, n)
        n = c.shape[-1]
        m = c.reshape(lead, size * n)
        t = np.empty((size * n, lead), dtype=b.dtype)
        for k0 in range(0, lead, tile):
            t[:, k0 : k0 + tile] = m[k0 : k0 + tile].T
        t = t.reshape(*inner, n, lead)  # (J, n, K) or (K, J, n, T)
        order = tuple(range(t.ndim - 2, -1, -1)) + (t.ndim - 1,)  # the leading axes reversed, runs kept
        yield np.ascontiguousarray(t.transpose(order))  # (n, J, K) or (n, J, K, T)


def check_apart(src: str | os.PathLike, out: str | os.PathLike, src_what: str = "source folder",
                out_what: str = "output folder", src_inside_out: bool = False) -> None:
    """Refuse (:class:`~biomarkers.errors.InputError`) an output folder that is, or is inside, the folder it
    reads (the source is never modified), or a source inside the output (originals would end up among
    de-identified outputs; ``src_inside_out=True`` allows it, for the demo's synthetic cohort only).
    Paths compared resolved (symlinks followed)."""
    from .errors import InputError

    s, o = Path(src).resolve(), Path(out).resolve()
    if o == s:
        raise InputError(f"{out}: the {out_what} must differ from the {src_what} {src}")
    if s in o.parents:
        raise InputError(f"{out}: the {out_what} is inside the {src_what} {src} (it is never written to): "
                         "choose an output folder outside it")
    if o in s.parents and not src_inside_out:
        raise InputError(f"{src}: the {src_what} is inside the {out_what} {out}: move it out, or write elsewhere")


def walk_files(root: str | os.PathLike, hidden: bool = True, exclude: str | os.PathLike | None = None
               ) -> list[tuple[str, str, int, int]]:
    """``(relative name, path, size, mtime_ns)`` of every regular file below ``root``, sorted by name.

    Relative names use ``/``. ``hidden=False`` skips files and folders whose name starts
    with ``.``; ``exclude`` is a folder (resolved path) that is not entered. Symbolic links
    to folders are followed (a site's SRC often links patient folders from elsewhere), each
    folder's real path once (loop protection: a link to a folder already walked, or to an
    ancestor, is not entered again); links to files are followed (their target's size and
    mtime). One ``scandir`` pass: no per-file ``pathlib`` objects.
    """
    ex = str(Path(exclude).resolve()) if exclude is not None else None
    out: list[tuple[str, str, int, int]] = []
    stack = [("", os.fspath(root))]
    seen = {os.path.realpath(root)}
    while stack:
        prefix, folder = stack.pop()
        with os.scandir(folder) as entries:
            for e in entries:
                if not hidden and e.name.startswith("."):
                    continue
                if e.is_dir(follow_symlinks=True):
                    real = os.path.realpath(e.path)
                    if real in seen or real == ex:
                        continue
                    seen.add(real)
                    stack.append((f"{prefix}{e.name}/", e.path))
                elif e.is_file():
                    st = e.stat()
                    out.append((prefix + e.name, e.path, st.st_size, st.st_mtime_ns))
    out.sort()
    return out


class FileHasher:
    """SHA-256 of files and folder trees, cached by (size, mtime) in a JSON file.

    The only content-hash cache of the project (pipeline stage keys, extraction item keys).

    The cache holds no path in clear (source paths may name patients): single files are
    keyed by the SHA-256 of their path, and a folder tree by the SHA-256 of its path with,
    as fingerprint, one SHA-256 over every (relative name, size, mtime) below it. When the
    fingerprint changes (a file added, removed or touched), the tree hash is recomputed
    from the per-file entries, reading only the files that are new or changed.
    """

    def __init__(self, cache_path: str | os.PathLike | None):
        """``cache_path``: the JSON file (written owner-only by :meth:`save`); None keeps it in memory."""
        self.cache_path = Path(cache_path) if cache_path is not None else None
        try:
            data = json.loads(self.cache_path.read_text()) if self.cache_path is not None else {}
        except (OSError, ValueError):
            data = {}
        self._cache: dict[str, list] = {k: v for k, v in data.items() if isinstance(v, list)} if isinstance(data, dict) else {}
        self._dirty = False

    @staticmethod
    def _key(kind: str, path: Path, resolved: bool = False) -> str:
        return sha256_json([kind, str(path if resolved else Path(path).resolve())])

    def file(self, path: Path, resolved: bool = False) -> str:
        """SHA-256 of a file's content (``resolved``: ``path`` is already absolute and resolved)."""
        st = path.stat()
        k = self._key("file", path, resolved)
        hit = self._cache.get(k)
        if hit and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
            return hit[2]
        h = sha256_file(path)
        self._cache[k] = [st.st_size, st.st_mtime_ns, h]
        self._dirty = True
        return h

    def tree(self, root: Path) -> str:
        """One hash over every file below ``root`` (relative names and contents; hidden files ignored).

        The listing's fingerprint (names, sizes, mtimes) answers an unchanged tree at once;
        otherwise each file's hash comes from the per-file entries (as :meth:`file`), so only
        new or modified files are read.
        """
        root_r = str(Path(root).resolve())
        listing = walk_files(root_r, hidden=False)
        fingerprint = sha256_json([(rel, size, mt) for rel, _, size, mt in listing])
        k = self._key("tree", Path(root_r), resolved=True)
        hit = self._cache.get(k)
        if hit and hit[0] == fingerprint:
            return hit[1]
        hashes = []
        for rel, path, size, mt in listing:
            fk = sha256_json(["file", path])
            e = self._cache.get(fk)
            if not (e and e[0] == size and e[1] == mt):
                e = self._cache[fk] = [size, mt, sha256_file(path)]
            hashes.append((rel, e[2]))
        h = sha256_json(hashes)
        self._cache[k] = [fingerprint, h]
        self._dirty = True
        return h

    def files(self, paths: list[Path]) -> str:
        """One hash over the names and contents of ``paths`` (in order)."""
        return sha256_json([(Path(p).name, self.file(Path(p))) for p in paths])

    def prefetch(self, paths: list[Path], threads: int | None = None) -> None:
        """Hash the files of ``paths`` that are not cached yet, on a few threads.

        hashlib releases the GIL on large buffers, so a cold cache of many large files
        (NIfTI images) is hashed on every core instead of one. Later :meth:`file` calls
        are then answered from the cache.
        """
        from concurrent.futures import ThreadPoolExecutor

        todo = []
        for p in paths:
            p = Path(p)
            try:
                st = p.stat()
            except OSError:
                continue  # the caller reports missing files
            k = self._key("file", p)
            hit = self._cache.get(k)
            if not (hit and hit[0] == st.st_size and hit[1] == st.st_mtime_ns):
                todo.append((k, p, st.st_size, st.st_mtime_ns))
        if not todo:
            return
        n = threads or min(8, os.cpu_count() or 1)
        with ThreadPoolExecutor(max_workers=n) as pool:
            for (k, _, size, mt), h in zip(todo, pool.map(lambda t: sha256_file(t[1]), todo)):
                self._cache[k] = [size, mt, h]
        self._dirty = True

    def save(self) -> None:
        if self._dirty and self.cache_path is not None:
            write_json(self.cache_path, self._cache)
            self._dirty = False
