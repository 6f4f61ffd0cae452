"""Stage-level cache: content fingerprints of inputs and the state of finished stages.

``OUT/.pipeline/state.json`` records, for every stage that finished, the key it ran
with (hash of its inputs' content and its settings) and the SHA-256 of its outputs.
A stage whose key is unchanged and whose outputs still have those hashes is skipped.

File fingerprints are content hashes (SHA-256), remembered together with sizes and
modification times (``OUT/.pipeline/filehashes.json``, see :class:`biomarkers.io.FileHasher`) so that
unchanged inputs are not re-read: the same trick as git's index. No path is stored in clear.
"""

from __future__ import annotations

import glob
import json
from pathlib import Path

from biomarkers.io import FileHasher, write_json


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
