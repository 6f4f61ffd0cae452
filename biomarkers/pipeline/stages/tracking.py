"""Stage ``tracking`` (deferred: after every other stage): the pipeline's MLflow run, linking the stages' outputs.

Created when the stages are done (with the pipeline's start time) through :class:`biomarkers.tracking.agent.Tracker`;
a rerun in which every stage was cached creates no new MLflow run and reports the last run's id instead.
"""

import time

from biomarkers.io import write_json
from biomarkers.logs import echo
from biomarkers.report import StageStatus
from biomarkers.tracking.runs import RunKind, run_tags

from ..stage import Stage, StageFailed, StageOutcome, failure
from . import clinical, experiments, extract, link, qc

DONE = (StageStatus.RAN, StageStatus.CACHED)


def key(ctx) -> dict:
    return {"uri": ctx.tracking_uri(), "experiment": ctx.cfg.tracking.experiment}


def warmup(ctx) -> None:
    ctx.tracker.start()  # this run will log to MLflow: import it beside the stages


def run(ctx):
    try:
        return _log(ctx), {}
    except Exception as err:  # noqa: BLE001 - the outputs are written; tracking problems are reported
        raise StageFailed(f"logging to MLflow failed: {failure(err)}") from None


def _log(ctx) -> None:
    from biomarkers.tracking.agent import finish_run, open_run

    cfg, st, report = ctx.cfg, ctx.stages, ctx.report
    prev = ctx.state.get("_mlflow")
    active = [k for k, v in st.items() if k != "tracking" and v.status != StageStatus.DISABLED]
    if prev.get("run_id") and prev.get("config_hash") == cfg.config_hash() and active \
            and all(st[k].status == StageStatus.CACHED for k in active):
        report.extra["mlflow_run_id"] = prev["run_id"]
        st["tracking"] = StageOutcome(StageStatus.CACHED, details={"mlflow_run_id": prev["run_id"]})
        echo(f"[tracking] nothing changed: no new MLflow run (last run {prev['run_id']})")
        return
    t_log = time.time()
    job = _run_job(ctx)
    run_id = ctx.tracker.call(open_run, job)
    report.extra["mlflow_run_id"] = run_id  # one MLflow run logged:
    st["tracking"] = StageOutcome(StageStatus.RAN, computed=1, counts={"done": 1, "skipped": 0, "failed": 0},
                                  details={"mlflow_run_id": run_id})
    failed = any(s.status == StageStatus.FAILED for s in st.values())
    tags = {f"biomarkers.stage.{n}": str(s.status) for n, s in st.items()}
    none = StageOutcome("")
    datasets = [{"table_path": str(ctx.path(f)), "name": f"{cfg.name}-{label}"} for f, stage, label in (
        (extract.WIDE, "extract", "features"), (link.ANALYSIS, "link", "analysis"))
        if ctx.path(f).is_file() and st.get(stage, none).status in DONE]
    for s in st.get("experiments", none).details.get("experiments", []):
        if s.get("run_id"):
            tags[f"biomarkers.experiment.{s['name']}.run_id"] = s["run_id"]
    rel = st.get("release", none).details
    for tag, detail in (("biomarkers.release.run_id", "mlflow_run_id"), ("biomarkers.release", "release")):
        if rel.get(detail):
            tags[tag] = rel[detail]
    st["tracking"].elapsed_s = round(time.time() - t_log, 3)
    now = int(time.time() * 1000)
    metrics = [[f"stage_{n}_{k}", float(v), now] for n, s in st.items()
               for k, v in (("computed", s.computed), ("seconds", s.elapsed_s))]
    ctx.write_report()
    artifacts = [[str(p), folder] for p, folder in [
        (ctx.run_report_path, "reports"), (ctx.path(clinical.REPORT), "reports/clinical"),
        (ctx.path(link.REPORT), "reports"), (ctx.path(experiments.RESULTS), "reports")] if p.is_file()]
    if st.get("qc", none).status in DONE and ctx.path(qc.INDEX).is_file():
        artifacts.append([str(ctx.path(qc.QC)), qc.QC])  # the QC report with its thumbnails (stage qc)
    ctx.tracker.call(finish_run, {
        "uri": job["uri"], "run_id": run_id, "metrics": metrics, "tags": tags, "datasets": datasets,
        "artifacts": artifacts, "status": "FAILED" if failed else "FINISHED",
        "params": {"config_hash": cfg.config_hash()[:16], "executor": ctx.executor_desc[:200], "pipeline": cfg.name}})
    ctx.state.data["_mlflow"] = {"run_id": run_id, "config_hash": cfg.config_hash()}
    write_json(ctx.state.path, ctx.state.data)
    echo(f"[tracking] 1 done (MLflow run {run_id}: {len(metrics)} metrics, {len(datasets)} datasets, "
         f"{len(artifacts)} artifacts)")


def _run_job(ctx, **tags) -> dict:
    """The pipeline's MLflow run as ``open_run``/``kill_run`` create it: store, experiment, name, the pipeline's
    start time, the run kind's tags (+ ``tags``)."""
    return {"uri": ctx.tracking_uri(), "experiment": ctx.cfg.tracking.experiment, "run_name": ctx.cfg.name,
            "start_time_ms": int((ctx.started or time.time()) * 1000),
            "tags": run_tags(RunKind.PIPELINE, {"biomarkers.pipeline": ctx.cfg.name, **tags})}


def killed(ctx, signal_name: str) -> None:
    """After an interruption: the pipeline's MLflow run ends KILLED (created now, with the pipeline's start
    time, when the stages had not reached this one), tagged with the signal and the stages' states."""
    import logging

    from biomarkers.tracking.agent import kill_run

    if not ctx.cfg.tracking.enabled:
        return
    tags = {f"biomarkers.stage.{n}": str(s.status) for n, s in ctx.stages.items()}
    try:
        run_id = ctx.tracker.call(kill_run, {**_run_job(ctx, **{"biomarkers.interrupted": signal_name}, **tags),
                                             "run_id": ctx.report.extra.get("mlflow_run_id")})
        ctx.report.extra["mlflow_run_id"] = run_id
    except Exception as err:  # noqa: BLE001 - the interruption is reported either way
        logging.getLogger(__name__).warning("the interrupted run could not be marked KILLED in MLflow: %s", err)
    finally:
        ctx.tracker.close()


STAGE = Stage("tracking", order=50, upstream=("extract",), key=key, run=run, deferred=True, warmup=warmup)
