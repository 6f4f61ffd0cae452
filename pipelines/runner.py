"""The end-to-end pipeline: ingest (+ de-identification) -> extract -> clinical -> link -> MLflow ->
experiments -> release.

Each stage is skipped when the content of its inputs and its settings are unchanged
since it last finished (see :mod:`pipelines.cache`); inside ingest and extraction,
work items are cached individually, so a rerun after adding patients converts and
extracts only the new ones. Every patient/series/ROI of every stage ends in
``OUT/run_report.json`` as done, skipped or failed with the reason (cases of a
cached stage are repeated from its last report with ``cached: true``).

Output layout (``OUT`` = ``config.out``)::

    OUT/dataset/            ingest output (manifest, NIfTI images and masks, report.json)
    OUT/features/           extraction output (items/, features_long/wide.parquet, report.json)
    OUT/clinical/           clinical.parquet (pseudonymised) + report.json (validation)
    OUT/analysis.parquet    clinical variables joined with the features
    OUT/link_report.json
    OUT/release/            partner release (when enabled)
    OUT/run_report.json     every case of every stage; stage summaries; MLflow run id
    OUT/.pipeline/          stage state and file-hash cache (delete to force a full rerun)
"""

from __future__ import annotations

import json
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import biomarkers
from biomarkers.errors import BiomarkersError, ConfigError
from biomarkers.executors import Executor, get_executor
from biomarkers.io import FileHasher, sha256_json, write_json
from biomarkers.logs import echo
from biomarkers.report import RunReport

from .cache import StageState, expand
from .config import UNAVAILABLE, PipelineConfig

STAGES = ("ingest", "extract", "clinical", "link", "tracking", "experiments", "release")


@dataclass
class StageOutcome:
    """Summary of one stage in a run."""

    status: str  # ran | cached | failed | disabled | planned
    reason: str = ""
    key: str = ""
    elapsed_s: float = 0.0
    computed: int = 0
    counts: dict = field(default_factory=dict)
    details: dict = field(default_factory=dict)


class StageFailed(Exception):
    """A stage could not run (its reason goes to the run report)."""


class Pipeline:
    """Runs a :class:`PipelineConfig` (``validate()`` / ``plan()`` / ``run()``).

    Args:
        config: the validated configuration (paths resolved).
        executor: executor spec overriding ``config.executor`` (e.g. ``dask://host:8786``),
            or an :class:`~biomarkers.executors.Executor` instance (not closed by the pipeline).
        tracking_uri: MLflow tracking URI overriding ``config.tracking.uri``.
    """

    def __init__(self, config: PipelineConfig, executor: str | Executor | None = None,
                 tracking_uri: str | None = None):
        self.cfg = config
        self.executor_spec = executor if executor is not None else config.executor
        self.tracking_uri_arg = tracking_uri or config.tracking.uri
        self.out = Path(config.out)
        self.paths = {
            "dataset": self.out / "dataset",
            "features": self.out / "features",
            "clinical": self.out / "clinical" / "clinical.parquet",
            "clinical_report": self.out / "clinical" / "report.json",
            "analysis": self.out / "analysis.parquet",
            "link_report": self.out / "link_report.json",
            "release": self.out / "release",
            "run_report": self.out / "run_report.json",
            "state": self.out / ".pipeline" / "state.json",
            "hashes": self.out / ".pipeline" / "filehashes.json",
        }
        self.stages: dict[str, StageOutcome] = {}
        self.report = RunReport("pipeline")
        self._executor: Executor | None = None
        self._deid = None
        self._mlflow = None  # biomarkers.tracking.agent.Tracker, started when a stage starts working
        self.leaderboards: list = []

    # ----------------------------------------------------------------- validate / plan
    def validate(self) -> None:
        """Check the inputs exist and the needed stage modules are importable (ConfigError otherwise)."""
        c = self.cfg
        if not c.source.dicom.is_dir():
            raise ConfigError(f"source.dicom: {c.source.dicom} is not a folder")
        params = c.extract.params
        for p in (params.values() if isinstance(params, dict) else [params]):
            if c.extract.enabled and not Path(p).is_file():
                raise ConfigError(f"extract.params: {p} not found")
        if c.clinical is not None and c.clinical.enabled:
            if not expand(c.source.clinical):
                raise ConfigError(f"source.clinical: no file matches {c.source.clinical}")
            if isinstance(c.clinical.schema_, Path) and not c.clinical.schema_.is_file():
                raise ConfigError(f"clinical.schema: {c.clinical.schema_} not found")
        for p in c.experiments.specs:
            if c.experiments.run and not Path(p).is_file():
                raise ConfigError(f"experiments.specs: {p} not found")
        if c.deid.enabled:
            self.deidentifier()  # the secret must be available before anything runs (SecretError otherwise)

    def plan(self) -> dict[str, StageOutcome]:
        """Which stages would run and which are cached (nothing is written except the file-hash cache)."""
        self._prepare()
        planned: dict[str, StageOutcome] = {}
        for name in STAGES:
            if not self._enabled(name):
                planned[name] = StageOutcome("disabled")
                continue
            try:
                key = self._key(name)
            except StageFailed as err:
                planned[name] = StageOutcome("planned", reason=f"inputs not available yet ({err})")
                continue
            except BiomarkersError as err:
                planned[name] = StageOutcome("failed", reason=str(err))
                continue
            cached = name not in ("tracking",) and self.state.is_current(name, key, self.hasher)
            reason = UNAVAILABLE.get(self._section(name), "")
            if name == "ingest" and not cached and not reason:
                try:
                    from biomarkers.dicom.ingest import Ingest

                    ing = Ingest(self.cfg.source.dicom, self.paths["dataset"], self.cfg.ingest_settings(),
                                 deidentifier=self.deidentifier(), executor="serial")
                    reason = ing.plan().summary()
                except Exception as err:  # noqa: BLE001 - a dry run reports, it does not fail
                    reason = f"cannot plan: {type(err).__name__}: {err}"
            planned[name] = StageOutcome("cached" if cached else "planned", key=key[:12], reason=reason)
        self.hasher.save()
        self.src_hasher.save()
        return planned

    # ----------------------------------------------------------------- run
    def run(self) -> RunReport:
        """Run every enabled stage; returns the pipeline RunReport (also written to OUT/run_report.json).

        The MLflow run is created when the stages are done (with the pipeline's start time);
        a rerun in which every stage was cached creates no new MLflow run (nothing new to
        track) and reports the last run's id instead.
        """
        self.validate()
        self._prepare()
        t0 = time.time()
        self.report = RunReport("pipeline")
        try:
            for name in STAGES:
                if not self._enabled(name):
                    self.stages[name] = StageOutcome("disabled")
                    continue
                if name == "tracking":  # done at the end, see _log_mlflow
                    continue
                failed_up = [u for u in self._upstream(name) if self.stages.get(u, StageOutcome("")).status == "failed"]
                if failed_up:
                    self._fail(name, f"not run: upstream stage {failed_up[0]} failed")
                    continue
                self._run_stage(name)
        finally:
            if self._executor is not None and not isinstance(self.executor_spec, Executor):
                self._executor.close()
            self._executor = None
            self.hasher.save()
            self.src_hasher.save()
        self.report.extra.update({
            "pipeline": self.cfg.name,
            "config_hash": self.cfg.config_hash(),
            "executor": self._executor_desc,
            "biomarkers_version": biomarkers.__version__,
            "mlflow_run_id": None,
        })
        try:
            self._log_mlflow(t0)
        except Exception as err:  # noqa: BLE001 - the outputs are written; tracking problems are reported
            from biomarkers.tracking.agent import TrackingFailed

            msg = str(err) if isinstance(err, TrackingFailed) else f"{type(err).__name__}: {err}"
            self._fail("tracking", f"logging to MLflow failed: {msg}")
        finally:
            if self._mlflow is not None:
                self._mlflow.close()
                self._mlflow = None
        self.report.extra["stages"] = {k: vars(v) for k, v in self.stages.items()}
        self.report.write(self.paths["run_report"])
        return self.report

    # ----------------------------------------------------------------- internals
    def _prepare(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        self.hasher = FileHasher(self.paths["hashes"])
        # per-file content hashes of the source DICOM stay on the source side, beside the
        # ingest index cache (a file's hash in OUT would tell whoever holds the file that it
        # is part of this dataset); only the tree's overall hash enters the stage key
        from biomarkers.dicom.index_cache import resolve_cache_path

        try:
            src_cache = resolve_cache_path(self.cfg.ingest_settings().index_cache, self.cfg.source.dicom,
                                           self.paths["dataset"], kind="trees", suffix=".json")
        except BiomarkersError:
            src_cache = None  # ingest reports the misplaced cache
        self.src_hasher = FileHasher(src_cache)
        self.state = StageState(self.paths["state"])
        self._executor_desc = str(self.executor_spec if not isinstance(self.executor_spec, Executor)
                                  else self.executor_spec.describe())

    def _section(self, name: str) -> str:
        return {"link": "clinical", "tracking": "tracking"}.get(name, name)

    def _enabled(self, name: str) -> bool:
        c = self.cfg
        return {
            "ingest": True,
            "extract": c.extract.enabled,
            "clinical": c.clinical is not None and c.clinical.enabled,
            "link": c.clinical is not None and c.clinical.enabled and c.extract.enabled,
            "tracking": c.tracking.enabled,
            "experiments": c.experiments.run,
            "release": c.release.enabled and c.clinical is not None,
        }[name]

    @staticmethod
    def _upstream(name: str) -> list[str]:
        return {
            "ingest": [], "extract": ["ingest"], "clinical": ["ingest"], "link": ["extract", "clinical"],
            "tracking": ["extract"], "experiments": ["link"], "release": ["extract", "clinical"],
        }[name]

    def executor(self) -> Executor | str:
        if isinstance(self.executor_spec, Executor):
            return self.executor_spec
        if self._executor is None:
            # workers that will extract import pyradiomics as they start (during ingest's indexing)
            preload = ("SimpleITK", "radiomics.featureextractor") if self.cfg.extract.enabled else ()
            self._executor = get_executor(self.executor_spec, preload=preload)
            self._executor_desc = self._executor.describe()
        return self._executor

    def _tracker(self):
        """The helper that logs the pipeline's MLflow run (see :mod:`biomarkers.tracking.agent`)."""
        if self._mlflow is None:
            from biomarkers.tracking.agent import Tracker

            self._mlflow = Tracker()
        return self._mlflow

    def deidentifier(self):
        if self._deid is None:
            from biomarkers.deid import Deidentifier

            self._deid = Deidentifier(self.cfg.deid)
        return self._deid

    def _secret_probe(self) -> str:
        """A value that changes with the site secret (pseudonyms depend on it) and reveals nothing."""
        if not self.cfg.deid.enabled:
            return "deid-off"
        return self.deidentifier().patient_id("__biomarkers_cache_probe__")

    def _rel(self, p: Path) -> str:
        return Path(p).resolve().relative_to(self.out.resolve()).as_posix()

    def _hash_out(self, p: Path) -> str:
        if not p.is_file():
            raise StageFailed(f"{self._rel(p)} not found (run the stage first)")
        return self.hasher.file(p)

    def _params_files(self) -> dict[str, Path]:
        p = self.cfg.extract.params
        return {k: Path(v) for k, v in p.items()} if isinstance(p, dict) else {"*": Path(p)}

    def _clinical_schema(self):
        from biomarkers.config import load_yaml

        from .config import ClinicalSchema

        s = self.cfg.clinical.schema_
        return load_yaml(s, ClinicalSchema) if isinstance(s, Path) else s

    def _key(self, name: str) -> str:
        """Hash of everything a stage's output depends on (content, not paths or times)."""
        c = self.cfg
        v = biomarkers.__version__
        if name == "ingest":
            parts = {"src": self.src_hasher.tree(c.source.dicom),
                     "settings": c.ingest_settings().model_dump(mode="json"), "secret": self._secret_probe()}
        elif name == "extract":
            parts = {"manifest": self._hash_out(self.paths["dataset"] / "manifest.parquet"),
                     "params": {k: self.hasher.file(p) for k, p in self._params_files().items()}}
        elif name == "clinical":
            files = expand(c.source.clinical)
            schema = self._clinical_schema()
            parts = {"files": self.hasher.files(files), "schema": schema.model_dump(mode="json"),
                     "deid": c.deid.model_dump(mode="json"), "secret": self._secret_probe(),
                     "manifest": self._hash_out(self.paths["dataset"] / "manifest.parquet")}
        elif name == "link":
            schema = self._clinical_schema()
            parts = {"features": self._hash_out(self.paths["features"] / "features_wide.parquet"),
                     "clinical": self._hash_out(self.paths["clinical"]), "join": schema.join, "how": schema.how}
        elif name == "tracking":
            parts = {"uri": self._tracking_uri(), "experiment": c.tracking.experiment}
        elif name == "experiments":
            specs = [self.hasher.file(p) for p in c.experiments.specs]
            inline = [s.model_dump(mode="json") for s in c.experiments.inline]
            table = self._hash_out(self.paths["analysis"]) if c.experiments.use_pipeline_table else ""
            parts = {"specs": specs, "inline": inline, "table": table, "tracking": self._tracking_uri()}
        elif name == "release":
            parts = {"features": self._hash_out(self.paths["features"] / "features_wide.parquet"),
                     "clinical": self._hash_out(self.paths["clinical"]),
                     "config": self.hasher.file(c.release.config) if c.release.config else None}
        else:  # pragma: no cover
            raise KeyError(name)
        return sha256_json({"stage": name, "version": v, **parts})

    def _outputs(self, name: str) -> list[Path]:
        return {
            "ingest": [self.paths["dataset"] / "manifest.parquet", self.paths["dataset"] / "report.json"],
            "extract": [self.paths["features"] / "features_wide.parquet", self.paths["features"] / "report.json"],
            "clinical": [self.paths["clinical"], self.paths["clinical_report"]],
            "link": [self.paths["analysis"]],
            "experiments": [self.out / "experiments.json"],
            "release": [self.out / "release_report.json"],
        }.get(name, [])

    def _reports(self, name: str) -> Path:
        """Where the cases of a stage's last run are kept (replayed when the stage is cached)."""
        return self.out / ".pipeline" / f"{name}_cases.json"

    def _fail(self, name: str, reason: str) -> None:
        self.stages[name] = StageOutcome("failed", reason=reason)
        self.report.add(f"stage/{name}", "failed", reason)
        self.state.forget(name)
        echo(f"[{name}] FAILED: {reason}")

    def _run_stage(self, name: str) -> None:
        t0 = time.time()
        section = self._section(name)
        if UNAVAILABLE.get(section) and name != "tracking":
            self._fail(name, UNAVAILABLE[section])
            return
        try:
            key = self._key(name)
        except StageFailed as err:
            self._fail(name, str(err))
            return
        except BiomarkersError as err:
            self._fail(name, str(err))
            return
        if name != "tracking" and self.state.is_current(name, key, self.hasher):
            n = self._replay_cached(name)
            self.stages[name] = StageOutcome("cached", key=key[:12], elapsed_s=round(time.time() - t0, 3),
                                             counts=n, details=self.state.get(name).get("details", {}))
            echo(f"[{name}] unchanged since the last run: skipped ({sum(n.values())} cases from the last report)")
            return
        echo(f"[{name}] running")
        if self.cfg.tracking.enabled:  # this run will log to MLflow: import it beside the stages
            self._tracker().start()
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", category=UserWarning, module=r"mlflow\..*")
                rep, details = getattr(self, f"_stage_{name}")()
        except BiomarkersError as err:
            self._fail(name, str(err))
            return
        except Exception as err:  # noqa: BLE001 - one stage's bug must not hide the others' results
            msg = f"{type(err).__name__}: {err}"
            if __import__("os").environ.get("BIOMARKERS_DEBUG"):
                msg += "\n" + traceback.format_exc()
            self._fail(name, msg)
            return
        if rep is not None:
            for r in rep.cases:
                r.stage = name
            self.report.extend(rep)
            rep.write(self._reports(name))
        counts = rep.counts() if rep is not None else {}
        computed = rep.n_computed() if rep is not None else 0
        outputs = {self._rel(p): self.hasher.file(p) for p in self._outputs(name) if p.is_file()}
        if name != "tracking":
            self.state.record(name, key, outputs, details=details)
        self.stages[name] = StageOutcome("ran", key=key[:12], elapsed_s=round(time.time() - t0, 3),
                                         computed=computed, counts=counts, details=details)
        if rep is not None:
            echo(rep.summary().replace(rep.stage + ":", f"[{name}]", 1))

    def _replay_cached(self, name: str) -> dict:
        """Add the cases of the stage's last report, marked cached."""
        p = self._reports(name)
        counts = {"done": 0, "skipped": 0, "failed": 0}
        if not p.is_file():
            return counts
        try:
            cases = json.loads(p.read_text()).get("cases", [])
        except ValueError:
            return counts
        for c in cases:
            st = c.get("status", "done")
            self.report.add(c.get("case", "?"), st, c.get("reason", ""), cached=True, **(c.get("details") or {}))
            self.report.cases[-1].stage = name
            counts[st] = counts.get(st, 0) + 1
        return counts

    # ----------------------------------------------------------------- stages
    def _stage_ingest(self):
        from biomarkers.dicom.ingest import Ingest

        ing = Ingest(self.cfg.source.dicom, self.paths["dataset"], self.cfg.ingest_settings(),
                     deidentifier=self.deidentifier(), executor=self.executor())
        ing.validate()
        rep = ing.run()
        return rep, {}

    def _stage_extract(self):
        from biomarkers.features import run_extract

        params = self._params_files()
        arg: Any = params["*"] if list(params) == ["*"] else params
        rep = run_extract(self.paths["dataset"], arg, self.paths["features"], executor=self.executor())
        return rep, {}

    def _stage_clinical(self):
        from biomarkers.clinical.load import load_clinical
        from biomarkers.io import write_parquet
        from biomarkers.manifest import read_manifest

        known = sorted(set(read_manifest(self.paths["dataset"])["patient_id"].astype(str)))
        df, vrep = load_clinical(expand(self.cfg.source.clinical), self._clinical_schema(),
                                 deidentifier=self.deidentifier(), known_patients=known)
        write_parquet(self.paths["clinical"], df)
        vrep.write(self.paths["clinical_report"])
        rep = vrep.run_report() if hasattr(vrep, "run_report") else None
        return rep, {"patients": int(len(df))}

    def _stage_link(self):
        import pandas as pd

        from biomarkers.clinical.link import link, read_features
        from biomarkers.io import write_parquet

        schema = self._clinical_schema()
        table, lrep = link(read_features(self.paths["features"]), pd.read_parquet(self.paths["clinical"]),
                           join=schema.join, how=schema.how)
        write_parquet(self.paths["analysis"], table)
        write_json(self.paths["link_report"], lrep.to_dict())
        rep = RunReport("link")
        for pid in lrep.features_only:
            rep.add(pid, "skipped", "features but no valid clinical row")
        for pid in lrep.clinical_only:
            rep.add(pid, "skipped", "clinical row but no features")
        return rep, {"rows": lrep.n_rows, "columns": lrep.n_columns, "patients_linked": lrep.n_patients_linked}

    def _tracking_uri(self) -> str:
        from biomarkers.tracking import tracking_uri

        return tracking_uri(self.tracking_uri_arg)

    def _stage_experiments(self):
        from biomarkers.modeling import run_experiment
        from biomarkers.modeling.spec import load_spec

        specs = [load_spec(p) for p in self.cfg.experiments.specs] + list(self.cfg.experiments.inline)
        results = []
        rep = RunReport("experiments")
        for spec in specs:
            table = self.paths["analysis"] if self.cfg.experiments.use_pipeline_table else None
            try:
                res = run_experiment(spec, tracking_uri=self._tracking_uri(), table=table)
            except BiomarkersError as err:
                rep.add(f"experiment/{spec.name}", "failed", str(err))
                continue
            summary = _experiment_summary(spec.name, res)
            results.append(summary)
            self.leaderboards.append((spec.name, res))
            rep.add(f"experiment/{spec.name}", "done", "", **{k: v for k, v in summary.items() if k != "name"})
        write_json(self.out / "experiments.json", results)
        return rep, {"experiments": results}

    def _stage_release(self):
        import pandas as pd

        from biomarkers.release import build_release

        if self.cfg.release.config is None:
            raise ConfigError("release.enabled is true but release.config (a release YAML) is not set")
        res = build_release(self.paths["features"], pd.read_parquet(self.paths["clinical"]), self.cfg.release.config,
                            self.paths["release"], schema=self._clinical_schema(), deidentifier=self.deidentifier(),
                            config_path=self.cfg.release.config, tracking_uri=self._tracking_uri())
        write_json(self.out / "release_report.json", res.to_dict())
        rep = RunReport("release")
        rep.add(f"release/{res.name}-{res.version}", "done", "", path=self._rel(Path(res.path)))
        return rep, {"release": f"{res.name}-{res.version}", "mlflow_run_id": res.mlflow_run_id}

    # ----------------------------------------------------------------- MLflow
    def _log_mlflow(self, t0: float) -> None:
        """Create the pipeline's MLflow run (start time ``t0``), log what links the stages' outputs, end it."""
        if not self.cfg.tracking.enabled:
            return
        prev = self.state.get("_mlflow")
        active = [k for k, v in self.stages.items() if k != "tracking" and v.status != "disabled"]
        if prev.get("run_id") and prev.get("config_hash") == self.cfg.config_hash() and active \
                and all(self.stages[k].status == "cached" for k in active):
            self.report.extra["mlflow_run_id"] = prev["run_id"]
            self.stages["tracking"] = StageOutcome("cached", details={"mlflow_run_id": prev["run_id"]})
            echo(f"[tracking] nothing changed: no new MLflow run (last run {prev['run_id']})")
            return
        from biomarkers.tracking.agent import finish_run, open_run

        t_log = time.time()
        uri = self._tracking_uri()
        tracker = self._tracker()
        run_id = tracker.call(open_run, {
            "uri": uri, "experiment": self.cfg.tracking.experiment, "run_name": self.cfg.name,
            "start_time_ms": int(t0 * 1000),
            "tags": {"biomarkers.run_kind": "pipeline", "biomarkers.pipeline": self.cfg.name}})
        self.report.extra["mlflow_run_id"] = run_id
        self.stages["tracking"] = StageOutcome("ran", details={"mlflow_run_id": run_id})
        failed = any(s.status == "failed" for s in self.stages.values())
        tags = {f"biomarkers.stage.{n}": s.status for n, s in self.stages.items()}
        datasets = []
        fw = self.paths["features"] / "features_wide.parquet"
        if fw.is_file() and self.stages.get("extract", StageOutcome("")).status in ("ran", "cached"):
            datasets.append([str(fw), f"{self.cfg.name}-features"])
        if self.paths["analysis"].is_file() and self.stages.get("link", StageOutcome("")).status in ("ran", "cached"):
            datasets.append([str(self.paths["analysis"]), f"{self.cfg.name}-analysis"])
        for s in self.stages.get("experiments", StageOutcome("")).details.get("experiments", []):
            if s.get("run_id"):
                tags[f"biomarkers.experiment.{s['name']}.run_id"] = s["run_id"]
        rel = self.stages.get("release", StageOutcome("")).details
        if rel.get("mlflow_run_id"):
            tags["biomarkers.release.run_id"] = rel["mlflow_run_id"]
        if rel.get("release"):
            tags["biomarkers.release"] = rel["release"]
        self.stages["tracking"].elapsed_s = round(time.time() - t_log, 3)
        now = int(time.time() * 1000)
        metrics = [[f"stage_{n}_{k}", float(v), now] for n, s in self.stages.items()
                   for k, v in (("computed", s.computed), ("seconds", s.elapsed_s))]
        self.report.extra["stages"] = {k: vars(v) for k, v in self.stages.items()}
        self.report.write(self.paths["run_report"])
        artifacts = [[str(p), folder] for p, folder in [
            (self.paths["run_report"], "reports"), (self.paths["clinical_report"], "reports/clinical"),
            (self.paths["link_report"], "reports"), (self.out / "experiments.json", "reports")] if p.is_file()]
        tracker.call(finish_run, {
            "uri": uri, "run_id": run_id, "metrics": metrics, "tags": tags, "datasets": datasets,
            "artifacts": artifacts, "status": "FAILED" if failed else "FINISHED",
            "params": {"config_hash": self.cfg.config_hash()[:16], "executor": self._executor_desc[:200],
                       "pipeline": self.cfg.name}})
        self.state.data["_mlflow"] = {"run_id": run_id, "config_hash": self.cfg.config_hash()}
        write_json(self.paths["state"], self.state.data)


def _experiment_summary(name: str, res: Any) -> dict:
    """A JSON-able summary of run_experiment's result (best pipeline, AUC and CI, run id)."""
    out: dict[str, Any] = {"name": name}
    for attr in ("parent_run_id", "run_id"):
        v = getattr(res, attr, None) or (res.get(attr) if isinstance(res, dict) else None)
        if v:
            out["run_id"] = v
            break
    if hasattr(res, "table"):
        lb = res.table()
        cols = [c for c in ("pipeline", "auc", "auc_ci_low", "auc_ci_high", "balanced_accuracy", "brier", "run_id")
                if c in lb.columns]
        out["leaderboard"] = json.loads(lb[cols].sort_values("auc", ascending=False).to_json(orient="records"))
        out["best"] = getattr(res, "best", None)
    return out


def run_pipeline(config: PipelineConfig, executor: str | Executor | None = None, tracking_uri: str | None = None,
                 dry_run: bool = False) -> RunReport | dict:
    """Run (or with ``dry_run`` only plan) a pipeline; see :class:`Pipeline`."""
    p = Pipeline(config, executor=executor, tracking_uri=tracking_uri)
    if dry_run:
        p.validate()
        return p.plan()
    return p.run()


