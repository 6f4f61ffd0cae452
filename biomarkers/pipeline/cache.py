"""Stage-level cache: ``OUT/.pipeline/state.json`` records, for every stage that finished, the key
it ran with (hash of its inputs' content and its settings) and its outputs' SHA-256 and integrity
records; a stage whose key is unchanged and whose outputs are as written is skipped. File hashes
are remembered with sizes and mtimes (:class:`biomarkers.io.FileHasher`), no path in clear.
"""

from __future__ import annotations

import json
from pathlib import Path

from biomarkers.io import FileHasher, write_json


class StageState:
    """Read/write ``OUT/.pipeline/state.json``."""

    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            self.data: dict[str, dict] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.data = {}

    @property
    def out(self) -> Path:
        return self.path.parent.parent

    def is_current(self, stage: str, key: str, hasher: FileHasher) -> bool:
        """Whether ``stage`` ran with ``key`` and everything it wrote is as written (damage is reported)."""
        st = self.data.get(stage)
        if not st or st.get("key") != key:
            return False
        from biomarkers.integrity import report_problems

        problems = self.problems(stage, hasher)
        report_problems(problems, f"the {stage} stage runs again")
        return not problems

    def problems(self, stage: str, hasher: FileHasher, full: bool = False) -> list:
        """What is not as the stage wrote it: its declared outputs (their records) and every file of the
        folders it keeps integrity records of (``.integrity.json``: ingest's dataset, extract's features)."""
        from biomarkers.integrity import CHANGED, MISSING, FileRecord, Ledger, Problem, check

        st = self.data.get(stage, {})
        records = st.get("records", {})
        out = []
        for rel, h in st.get("outputs", {}).items():
            p = self.out / rel
            if rel in records:
                problem = check(p, FileRecord.from_dict(records[rel]), rel, full)
            elif not p.is_file():
                problem = Problem(rel, MISSING)
            else:
                problem = None if hasher.file(p) == h else Problem(rel, CHANGED)
            if problem is not None:
                out.append(problem)
        for folder in st.get("ledgers", []):
            out += Ledger(self.out / folder, prefix=f"{folder}/").problems(full=full)
        return out

    def record(self, stage: str, key: str, outputs: dict[str, str], **extra) -> None:
        """Record a finished stage: its key, its outputs' hashes and records, the folders with integrity records."""
        from dataclasses import asdict

        from biomarkers.integrity import LEDGER, FileRecord

        records = {rel: asdict(FileRecord.of(self.out / rel)) for rel in outputs}
        folders = sorted({Path(rel).parent.as_posix() for rel in outputs} - {"."})
        ledgers = [f for f in folders if (self.out / f / LEDGER).is_file()]
        self.data[stage] = {"key": key, "outputs": outputs, "records": records, "ledgers": ledgers, **extra}
        write_json(self.path, self.data)

    def forget(self, stage: str) -> None:
        if self.data.pop(stage, None) is not None:
            write_json(self.path, self.data)

    def get(self, stage: str) -> dict:
        return self.data.get(stage, {})
