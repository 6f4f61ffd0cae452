"""Stage-level cache: content fingerprints of inputs and the state of finished stages.

``OUT/.pipeline/state.json`` records, for every stage that finished, the key it ran
with (hash of its inputs' content and its settings) and the SHA-256 of its outputs.
A stage whose key is unchanged and whose outputs still have those hashes is skipped.

File fingerprints are content hashes (SHA-256), remembered per file together with
its size and modification time (``OUT/.pipeline/filehashes.json``) so that an
unchanged file is not re-read: the same trick as git's index.
"""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path

from biomarkers.io import sha256_file, sha256_json, write_json


class FileHasher:
    """SHA-256 of files, cached by (size, mtime_ns) in a JSON file."""

    def __init__(self, cache_path: Path):
        self.cache_path = Path(cache_path)
        try:
            self._cache: dict[str, list] = json.loads(self.cache_path.read_text())
        except (OSError, ValueError):
            self._cache = {}
        self._dirty = False

    def file(self, path: Path) -> str:
        st = path.stat()
        k = str(path.resolve())
        hit = self._cache.get(k)
        if hit and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
            return hit[2]
        h = sha256_file(path)
        self._cache[k] = [st.st_size, st.st_mtime_ns, h]
        self._dirty = True
        return h

    def tree(self, root: Path) -> str:
        """One hash over every file below ``root`` (relative names and contents; hidden files ignored)."""
        root = Path(root)
        entries = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for f in sorted(filenames):
                if f.startswith("."):
                    continue
                p = Path(dirpath) / f
                entries.append((p.relative_to(root).as_posix(), self.file(p)))
        entries.sort()
        return sha256_json(entries)

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
