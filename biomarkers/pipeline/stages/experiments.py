"""Stage ``experiments``: the modelling experiments on the analysis table (:func:`biomarkers.modeling.run_experiment`)."""

import json

from ..stage import Stage, require_files
from .link import ANALYSIS

RESULTS = "experiments.json"


def key(ctx) -> dict:
    e = ctx.cfg.experiments
    return {"specs": [ctx.hasher.file(p) for p in e.specs], "inline": [s.model_dump(mode="json") for s in e.inline],
            "table": ctx.hash_out(ANALYSIS) if e.use_pipeline_table else "", "tracking": ctx.tracking_uri()}


def run(ctx):
    from biomarkers.errors import BiomarkersError
    from biomarkers.io import write_json
    from biomarkers.modeling import run_experiment
    from biomarkers.modeling.spec import load_spec
    from biomarkers.report import CaseStatus, RunReport

    e = ctx.cfg.experiments
    results = []
    rep = RunReport("experiments")
    for spec in [load_spec(p) for p in e.specs] + list(e.inline):
        try:
            res = run_experiment(spec, tracking_uri=ctx.tracking_uri(),
                                 table=ctx.path(ANALYSIS) if e.use_pipeline_table else None)
        except BiomarkersError as err:
            rep.add(f"experiment/{spec.name}", CaseStatus.FAILED, str(err))
            continue
        summary = experiment_summary(spec.name, res)
        results.append(summary)
        rep.add(f"experiment/{spec.name}", CaseStatus.DONE, "", **{k: v for k, v in summary.items() if k != "name"})
    write_json(ctx.path(RESULTS), results)
    return rep, {"experiments": results}


def experiment_summary(name: str, res) -> dict:
    """A JSON-able summary of run_experiment's result (an ExperimentResult: best pipeline, the experiment's primary
    metric, ``auc`` for a binary target and ``c_index`` for a survival one, with its CI, run id), sorted by it."""
    lb = res.table()
    primary = res.pipelines[0].cv.primary if res.pipelines else ("auc" if "auc" in lb.columns else "c_index")
    cols = [c for c in ("pipeline", primary, f"{primary}_ci_low", f"{primary}_ci_high", "balanced_accuracy", "brier",
                        "run_id") if c in lb.columns]
    board = lb[cols].sort_values(primary, ascending=False) if primary in lb.columns else lb[cols]
    return {"name": name, **({"run_id": res.parent_run_id} if res.parent_run_id else {}), "metric": primary,
            "leaderboard": json.loads(board.to_json(orient="records")), "best": res.best}


STAGE = Stage("experiments", order=60, upstream=("link",), key=key, run=run, outputs=(RESULTS,),
              check=lambda ctx: require_files("experiments.specs", ctx.cfg.experiments.specs),
              enabled=lambda cfg: cfg.experiments.run)
