"""Stage-level cache: content fingerprints of inputs and the state of finished stages.

``OUT/.pipeline/state.json`` records, for every stage that finished, the key it ran
with (hash of its inputs' content and its settings) and the SHA-256 of its outputs.
A stage whose key is unchanged and whose outputs still have those hashes is skipped.

File fingerprints are content hashes (SHA-256), remembered together with sizes and
modification times (``OUT/.pipeline/filehashes.json``) so that unchanged inputs are
not re-read: the same trick as git's index. No path is stored in clear.
"""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path

from biomarkers.io import sha256_file, sha256_json, write_json


class FileHasher:
    """SHA-256 of files and folder trees, cached by (size, mtime) in a JSON file.

    The cache holds no path in clear (source paths may name patients): single files are
    keyed by the SHA-256 of their path, and a folder tree by the SHA-256 of its path with,
    as fingerprint, one SHA-256 over every (relative name, size, mtime) below it. When the
    fingerprint changes (a file added, removed or touched), the tree hash is recomputed
    from the per-file entries, reading only the files that are new or changed.
    """

    def __init__(self, cache_path: Path):
        self.cache_path = Path(cache_path)
        try:
            self._cache: dict[str, list] = json.loads(self.cache_path.read_text())
        except (OSError, ValueError):
            self._cache = {}
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
        otherwise each file's hash comes from :meth:`file`, so only new or modified files
        are read.
        """
        root = Path(root)
        listing = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for f in sorted(filenames):
                if f.startswith("."):
                    continue
                p = Path(dirpath) / f
                st = p.stat()
                listing.append((p.relative_to(root).as_posix(), st.st_size, st.st_mtime_ns))
        listing.sort()
        fingerprint = sha256_json(listing)
        k = self._key("tree", root)
        hit = self._cache.get(k)
        if hit and hit[0] == fingerprint:
            return hit[1]
        root_r = root.resolve()
        h = sha256_json([(rel, self.file(root_r / rel, resolved=True)) for rel, _, _ in listing])
        self._cache[k] = [fingerprint, h]
        self._dirty = True
        return h

    def files(self, paths: list[Path]) -> str:
        return sha256_json([(Path(p).name, self.file(Path(p))) for p in paths])

    def save(self) -> None:
        if self._dirty:
            write_json(self.cache_path, self._cache)
            self._dirty = False


def expand(patterns: list[str]) -> list[Path]:
    """Files matching the given paths/globs (sorted, de-duplicated)."""
    out: list[Path] = []
    for pat in patterns:
        hits = sorted(glob.glob(pat)) if any(ch in pat for ch in "*?[") else [pat]
        out += [Path(h) for h in hits if Path(h).is_file()]
    seen, uniq = set(), []
    for p in out:
        if p.resolve() not in seen:
            seen.add(p.resolve())
            uniq.append(p)
    return uniq


class StageState:
    """Read/write ``OUT/.pipeline/state.json``."""

    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            self.data: dict[str, dict] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.data = {}

    def is_current(self, stage: str, key: str, hasher: FileHasher) -> bool:
        st = self.data.get(stage)
        if not st or st.get("key") != key:
            return False
        for rel, h in st.get("outputs", {}).items():
            p = self.path.parent.parent / rel
            if not p.is_file() or hasher.file(p) != h:
                return False
        return True

    def record(self, stage: str, key: str, outputs: dict[str, str], **extra) -> None:
        self.data[stage] = {"key": key, "outputs": outputs, **extra}
        write_json(self.path, self.data)

    def forget(self, stage: str) -> None:
        if self.data.pop(stage, None) is not None:
            write_json(self.path, self.data)

    def get(self, stage: str) -> dict:
        return self.data.get(stage, {})
