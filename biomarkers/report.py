"""Run reports: every case ends as done, skipped (with reason) or failed (with reason)."""

from __future__ import annotations

import collections
import time
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path

from .io import write_json


class CaseStatus(StrEnum):
    """How one case ended (``status`` in every report; the values are the strings written to files)."""

    DONE = "done"
    SKIPPED = "skipped"
    FAILED = "failed"


class StageStatus(StrEnum):
    """How one pipeline stage ended (``stages.<name>.status`` in ``run_report.json``)."""

    RAN = "ran"
    CACHED = "cached"
    FAILED = "failed"
    DISABLED = "disabled"
    PLANNED = "planned"


@dataclass
class CaseResult:
    """Outcome of one unit of work (a series, a mask, a feature item, a row...)."""

    stage: str
    case: str  # pseudonymised identifier of the case, e.g. "P-XXXX/series/roi"
    status: CaseStatus
    reason: str = ""
    cached: bool = False  # True when nothing was recomputed (incremental rerun)
    details: dict = field(default_factory=dict)


@dataclass
class RunReport:
    """Collects case results of one stage (or a whole pipeline) and writes JSON."""

    stage: str
    cases: list[CaseResult] = field(default_factory=list)
    extra: dict = field(default_factory=dict)
    started: float = field(default_factory=time.time)

    def add(self, case: str, status: CaseStatus | str, reason: str = "", cached: bool = False, **details) -> CaseResult:
        r = CaseResult(self.stage, case, CaseStatus(status), reason, cached, details)  # ValueError: not a status
        self.cases.append(r)
        return r

    def extend(self, other: "RunReport") -> None:
        self.cases.extend(other.cases)

    def counts(self) -> dict[str, int]:
        c = collections.Counter(r.status for r in self.cases)
        return {s.value: c.get(s, 0) for s in CaseStatus}

    def reasons(self) -> dict[str, int]:
        """Problems grouped by reason (skipped and failed)."""
        c = collections.Counter(r.reason for r in self.cases if r.status != CaseStatus.DONE)
        return dict(c.most_common())

    def n_computed(self) -> int:
        return sum(1 for r in self.cases if r.status == CaseStatus.DONE and not r.cached)

    def to_dict(self) -> dict:
        return {
            "stage": self.stage,
            "counts": self.counts(),
            "computed": self.n_computed(),
            "cached": sum(1 for r in self.cases if r.cached),
            "problems_by_reason": self.reasons(),
            "cases": [asdict(r) for r in self.cases],
            "elapsed_s": round(time.time() - self.started, 3),
            **self.extra,
        }

    def write(self, path: str | Path) -> Path:
        return write_json(path, self.to_dict())

    def summary(self) -> str:
        c = self.counts()
        s = f"{self.stage}: {c['done']} done ({self.n_computed()} computed), {c['skipped']} skipped, {c['failed']} failed"
        for reason, n in list(self.reasons().items())[:10]:
            s += f"\n  {n} x {reason}"
        return s
