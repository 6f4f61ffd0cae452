"""The end-to-end pipeline: the declared stages (:func:`~biomarkers.pipeline.stage.registry`) run in order.

Each stage is skipped when the content of its inputs and its settings are unchanged since it
last finished (see :mod:`biomarkers.pipeline.cache`); inside ingest and extraction, work items
are cached individually, so a rerun after adding patients converts and extracts only the new
ones. Every patient/series/ROI of every stage ends in ``OUT/run_report.json`` as done, skipped
or failed with the reason (cases of a cached stage are repeated from its last report with
``cached: true``). A stage whose ``check``, ``key``, ``plan`` or ``run`` raises fails with the
reason (stages downstream of it are not run, saying why); the others go on. ``OUT/.pipeline/``
holds the stage state and the file-hash cache (delete it to force a full rerun); each stage
module names its own files (see ARCHITECTURE.md).
"""

from __future__ import annotations

import collections
import json
import time
import warnings

import biomarkers
from biomarkers.errors import BiomarkersError
from biomarkers.executors import Executor
from biomarkers.interrupts import doing
from biomarkers.io import FileHasher, sha256_json
from biomarkers.logs import echo
from biomarkers.report import CaseStatus, RunReport, StageStatus

from .cache import StageState
from .config import PipelineConfig
from .stage import Context, Stage, StageFailed, StageOutcome, failure, registry

RUN_REPORT = "run_report.json"
STATE_DIR = ".pipeline"


class Pipeline(Context):
    """Runs a :class:`PipelineConfig` (``validate()`` / ``plan()`` / ``run()``); the stages' :class:`Context`.

    Args:
        config: the validated configuration (paths resolved).
        executor: executor spec overriding ``config.executor`` (e.g. ``dask://host:8786``),
            or an :class:`~biomarkers.executors.Executor` instance (not closed by the pipeline).
        tracking_uri: MLflow tracking URI overriding ``config.tracking.uri``.
    """

    def __init__(self, config: PipelineConfig, executor: str | Executor | None = None,
                 tracking_uri: str | None = None):
        super().__init__(config, executor, tracking_uri)
        self.report = RunReport("pipeline")
        self.run_report_path = self.path(RUN_REPORT)
        self.unchecked: dict[str, Exception] = {}  # stage -> what its check raised other than a BiomarkersError

    # ----------------------------------------------------------------- validate / plan
    def validate(self) -> None:
        """Check every enabled stage's inputs exist and the secret is available (ConfigError otherwise), the
        executor spec is valid and OUT and the DICOM source are apart (before anything runs or is tracked).
        A check failing otherwise (a bug) fails its stage only, when the run reaches it."""
        from biomarkers.executors import check_spec
        from biomarkers.io import check_apart

        if not isinstance(self.executor_spec, Executor):
            check_spec(self.executor_spec)
        if self.cfg.source.dicom:
            check_apart(self.cfg.source.dicom, self.out, "source.dicom folder", "out folder",
                        src_inside_out=self.cfg.deid.demo)  # the demo's synthetic cohort (ingest checks the marker)
        for s in registry():
            try:
                if s.check is not None and s.enabled(self.cfg):
                    s.check(self)
            except BiomarkersError:
                raise
            except Exception as err:  # noqa: BLE001 - reported as that stage's failure
                self.unchecked[s.name] = err
        if self.cfg.deid.enabled:
            self.deidentifier()  # the secret must be available before anything runs (SecretError otherwise)

    def plan(self) -> dict[str, StageOutcome]:
        """Which stages would run and which are cached (nothing is written except the file-hash cache)."""
        self._prepare()
        planned: dict[str, StageOutcome] = {}
        for s in registry():
            try:
                planned[s.name] = self._plan(s)
            except StageFailed as err:
                planned[s.name] = StageOutcome(StageStatus.PLANNED, reason=f"inputs not available yet ({err})")
            except Exception as err:  # noqa: BLE001 - a dry run reports what would fail
                planned[s.name] = StageOutcome(StageStatus.FAILED, reason=failure(err))
        self.hasher.save()
        return planned

    def _plan(self, s: Stage) -> StageOutcome:
        if not s.enabled(self.cfg):
            return StageOutcome(StageStatus.DISABLED)
        if s.name in self.unchecked:
            raise self.unchecked[s.name]
        key = self._key(s)
        if not s.deferred and self.state.is_current(s.name, key, self.hasher):
            return StageOutcome(StageStatus.CACHED, key=key[:12])
        return StageOutcome(StageStatus.PLANNED, key=key[:12], reason=s.plan(self) if s.plan is not None else "")

    # ----------------------------------------------------------------- run
    def run(self) -> RunReport:
        """Run every enabled stage; returns the pipeline RunReport (also written to OUT/run_report.json).
        OUT is locked meanwhile (:func:`biomarkers.locks.output_lock`: a second run into it is refused)."""
        from biomarkers.interrupts import Interrupted
        from biomarkers.locks import output_lock

        self.out.mkdir(parents=True, exist_ok=True)
        with output_lock(self.out, "biomarkers run"):
            try:
                return self._run()
            except Interrupted as exc:  # the stages' finished work is kept; the MLflow run ends KILLED
                from .stages.tracking import killed

                killed(self, str(exc))
                raise

    def _run(self) -> RunReport:
        self.validate()
        self._prepare()
        self.started = time.time()
        self.report = RunReport("pipeline")
        deferred: list[Stage] = []
        try:
            for s in registry():
                if not s.enabled(self.cfg):
                    self.stages[s.name] = StageOutcome(StageStatus.DISABLED)
                elif s.name in self.unchecked:  # its check raised (a bug): this stage fails, the others run
                    self._fail(s.name, failure(self.unchecked[s.name]))
                elif s.deferred:
                    deferred.append(s)
                elif failed := [u for u in s.upstream
                                if u in self.stages and self.stages[u].status == StageStatus.FAILED]:
                    self._fail(s.name, f"not run: upstream stage {failed[0]} failed")
                else:
                    self._run_stage(s)
        finally:
            self.close_executor()  # only an executor the pipeline started
            self.hasher.save()
        self.report.extra.update(pipeline=self.cfg.name, config_hash=self.cfg.config_hash(),
                                 executor=self.executor_desc, biomarkers_version=biomarkers.__version__,
                                 mlflow_run_id=None)
        try:
            for s in deferred:
                try:
                    s.run(self)
                except Exception as err:  # noqa: BLE001 - the outputs are written; report the problem
                    self._fail(s.name, failure(err))
        finally:
            self.tracker.close()
        self.write_report()
        return self.report

    def write_report(self) -> None:
        """Write ``OUT/run_report.json`` (cases so far and every stage's outcome)."""
        self.report.extra["stages"] = {k: vars(v) for k, v in self.stages.items()}
        self.report.write(self.run_report_path)

    # ----------------------------------------------------------------- internals
    def _prepare(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        self.hasher = FileHasher(self.path(f"{STATE_DIR}/filehashes.json"))
        self.state = StageState(self.path(f"{STATE_DIR}/state.json"))
        self.executor_desc = str(self.executor_spec if not isinstance(self.executor_spec, Executor)
                                 else self.executor_spec.describe())

    def _key(self, s: Stage) -> str:
        """Hash of everything a stage's output depends on (content, not paths or times)."""
        return sha256_json({"stage": s.name, "version": biomarkers.__version__, **s.key(self)})

    def _cases_file(self, name: str):
        """Where the cases of a stage's last run are kept (replayed when the stage is cached; one of its recorded
        outputs)."""
        return self.path(f"{STATE_DIR}/{name}_cases.json")

    def _fail(self, name: str, reason: str) -> None:
        self.stages[name] = StageOutcome(StageStatus.FAILED, reason=reason)
        self.report.add(f"stage/{name}", CaseStatus.FAILED, reason)
        self.state.forget(name)
        echo(f"[{name}] FAILED: {reason}")

    def _run_stage(self, s: Stage) -> None:
        t0 = time.time()
        name = s.name
        try:
            key = self._key(s)
            if self.state.is_current(name, key, self.hasher):
                n = self._replay_cached(name)
                self.stages[name] = StageOutcome(StageStatus.CACHED, key=key[:12], counts=n,
                                                 elapsed_s=round(time.time() - t0, 3),
                                                 details=self.state.get(name).get("details", {}))
                echo(f"[{name}] unchanged since the last run: skipped ({sum(n.values())} cases from the last report)")
                return
        except Exception as err:  # noqa: BLE001 - a bug in a key fails its stage, not the run
            self._fail(name, failure(err))
            return
        echo(f"[{name}] running")
        for other in registry():
            if other.warmup is not None and other.enabled(self.cfg):
                other.warmup(self)
        try:
            with warnings.catch_warnings(), doing(f"stage {name}"):
                warnings.filterwarnings("ignore", category=UserWarning, module=r"mlflow\..*")
                rep, details = s.run(self)
        except Exception as err:  # noqa: BLE001 - one stage's bug must not hide the others' results
            self._fail(name, failure(err))
            return
        if rep is not None:
            for r in rep.cases:
                r.stage = name
            self.report.extend(rep)
            rep.write(self._cases_file(name))
        # the cases file is recorded with the outputs: lost or damaged, the stage runs again (not replayed empty)
        cases = [self._cases_file(name).relative_to(self.out).as_posix()] if rep is not None else []
        outputs = {f: self.hasher.file(self.path(f)) for f in (*s.outputs, *cases) if self.path(f).is_file()}
        self.state.record(name, key, outputs, details=details)
        self.stages[name] = StageOutcome(StageStatus.RAN, key=key[:12], elapsed_s=round(time.time() - t0, 3),
                                         computed=rep.n_computed() if rep is not None else 0,
                                         counts=rep.counts() if rep is not None else {}, details=details)
        if rep is not None:
            echo(rep.summary().replace(rep.stage + ":", f"[{name}]", 1))

    def _replay_cached(self, name: str) -> dict:
        """Add the cases of the stage's last report, marked cached; returns their counts by status."""
        try:
            cases = json.loads(self._cases_file(name).read_text()).get("cases", [])
        except (OSError, ValueError):
            cases = []
        for c in cases:
            self.report.add(c.get("case", "?"), c.get("status", CaseStatus.DONE), c.get("reason", ""), cached=True,
                            **(c.get("details") or {})).stage = name
        n = collections.Counter(c.get("status", CaseStatus.DONE) for c in cases)
        return {s.value: n[s.value] for s in CaseStatus}


def run_pipeline(config: PipelineConfig, executor: str | Executor | None = None, tracking_uri: str | None = None,
                 dry_run: bool = False) -> RunReport | dict:
    """Run (or with ``dry_run`` only plan) a pipeline; see :class:`Pipeline`."""
    p = Pipeline(config, executor=executor, tracking_uri=tracking_uri)
    if dry_run:
        p.validate()
        return p.plan()
    return p.run()
