"""The stage declaration, the context stages run in, and the registry of stages.

A stage is one module of :mod:`biomarkers.pipeline.stages` exporting ``STAGE``, a :class:`Stage`,
with its file names (relative to ``OUT``) as module constants; :func:`registry` imports them
(when first asked) and orders them. How to add one: ARCHITECTURE.md, "Adding a stage".
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import traceback
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Callable

from biomarkers.errors import BiomarkersError, ConfigError


@dataclass(frozen=True)
class Stage:
    """One declared step of ``biomarkers run``.

    ``name`` names it in the run report (``stage/<name>``), ``OUT/.pipeline/`` and the MLflow tag
    ``biomarkers.stage.<name>``. Stages run by increasing ``order`` (upstream stages first); a stage
    is not run when an ``upstream`` stage failed, and is skipped when its cache key (``key(ctx)``:
    JSON-able parts; :class:`StageFailed` when an input is missing) and its ``outputs`` (relative
    to ``OUT``) are unchanged. ``run(ctx) -> (RunReport | None, details)``. Optional: ``enabled(cfg)``
    (default: the config section named after the stage, if there is one, is present and not ``enabled: false``);
    ``check(ctx)`` raises ConfigError before anything runs; ``plan(ctx)`` is what a dry run says;
    ``preload``: modules the workers import as they start; ``settings``: a Settings model adding the
    config section ``<name>:`` (``ctx.cfg.<name>``); ``deferred``: runs after all others, never
    cached (the MLflow run); ``warmup(ctx)``: called whenever another stage starts working.
    """

    name: str
    order: int
    key: Callable[["Context"], dict]
    run: Callable[["Context"], tuple]
    upstream: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    enabled: Callable[[Any], bool] | None = None
    check: Callable[["Context"], None] | None = None
    plan: Callable[["Context"], str] | None = None
    preload: tuple[str, ...] = ()
    settings: type | None = None
    deferred: bool = False
    warmup: Callable[["Context"], None] | None = None

    def __post_init__(self):
        if self.enabled is None:
            object.__setattr__(self, "enabled", self._section_enabled)

    def _section_enabled(self, cfg) -> bool:
        section = getattr(cfg, self.name, True)  # True: the stage has no config section
        return section is not None and getattr(section, "enabled", True)


@dataclass
class StageOutcome:
    """Summary of one stage in a run (``OUT/run_report.json``: ``stages.<name>``)."""

    status: str  # a StageStatus value: ran | cached | failed | disabled | planned
    reason: str = ""
    key: str = ""
    elapsed_s: float = 0.0
    computed: int = 0
    counts: dict = field(default_factory=dict)
    details: dict = field(default_factory=dict)


class StageFailed(BiomarkersError):
    """A stage could not run (its reason goes to the run report)."""


def failure(err: Exception) -> str:
    """A stage's failure as the run report gives it: a BiomarkersError's message; for any other exception
    (a bug) its type and message, with the traceback when ``BIOMARKERS_DEBUG`` is set."""
    if isinstance(err, BiomarkersError):
        return str(err)
    msg = f"{type(err).__name__}: {err}"
    return msg + "\n" + "".join(traceback.format_exception(err)) if os.environ.get("BIOMARKERS_DEBUG") else msg


def require_files(key: str, paths) -> None:
    """A stage's ``check``: :class:`ConfigError` naming the config ``key`` of the first path that is not a file."""
    for p in paths:
        if not Path(p).is_file():
            raise ConfigError(f"{key}: {p} not found")


@cache
def registry() -> tuple[Stage, ...]:
    """Every stage of :mod:`biomarkers.pipeline.stages`, in run order (checked: upstream first, unique names)."""
    from . import stages as pkg

    found = [importlib.import_module(f"{pkg.__name__}.{m.name}").STAGE
             for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_")]
    found.sort(key=lambda s: s.order)
    seen: dict[str, Stage] = {}
    for s in found:
        late = [u for u in s.upstream if u not in seen]
        if s.name in seen or late:
            raise ConfigError(f"pipeline stage {s.name!r}: " + (
                "name used twice" if s.name in seen else f"upstream {late} must exist and have a smaller order"))
        seen[s.name] = s
    return tuple(found)


class Context:
    """What a stage's ``key``/``run`` see: the configuration ``cfg``, ``OUT``, the hashers and shared
    resources (executor, de-identifier, MLflow URI), created when first asked for, and ``tracker``, the
    helper that logs the pipeline's MLflow run (:class:`biomarkers.tracking.agent.Tracker`: started when
    asked to, closed by the runner)."""

    def __init__(self, config, executor=None, tracking_uri: str | None = None):
        from biomarkers.tracking.agent import Tracker

        self.cfg = config
        self.out = Path(config.out)
        self.executor_spec = executor if executor is not None else config.executor
        self.tracking_uri_arg = tracking_uri or config.tracking.uri
        self.stages: dict[str, StageOutcome] = {}  # outcome of every stage of the last run, by name
        self.started = 0.0
        self.tracker = Tracker()
        self._executor = None
        self._deid = None

    def path(self, rel: str) -> Path:
        """``OUT/rel``."""
        return self.out / rel

    def hash_out(self, rel: str) -> str:
        """Content hash of an upstream output (:class:`StageFailed` when it does not exist yet)."""
        if not self.path(rel).is_file():
            raise StageFailed(f"{rel} not found (run the stage first)")
        return self.hasher.file(self.path(rel))

    def executor(self):
        from biomarkers.executors import Executor, get_executor

        if isinstance(self.executor_spec, Executor):
            return self.executor_spec
        if self._executor is None:
            preload = tuple(m for s in registry() if s.enabled(self.cfg) for m in s.preload)
            self._executor = get_executor(self.executor_spec, preload=preload)
            self.executor_desc = self._executor.describe()
        return self._executor

    def close_executor(self) -> None:
        if self._executor is not None:
            self._executor.close()
        self._executor = None

    def deidentifier(self):
        if self._deid is None:
            from biomarkers.deid import Deidentifier

            self._deid = Deidentifier(self.cfg.deid)
        return self._deid

    def secret_probe(self) -> str:
        """A value that changes with the site secret (pseudonyms depend on it) and reveals nothing."""
        if not self.cfg.deid.enabled:
            return "deid-off"
        return self.deidentifier().patient_id("__biomarkers_cache_probe__")

    def tracking_uri(self) -> str:
        from biomarkers.tracking import tracking_uri

        return tracking_uri(self.tracking_uri_arg)
