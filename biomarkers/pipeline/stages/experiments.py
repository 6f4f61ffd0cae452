"""Stage ``experiments``: the modelling experiments on the analysis table (:func:`biomarkers.modeling.run_experiment`)."""

import json
from pathlib import Path
from typing import Any

from biomarkers.errors import ConfigError

from ..stage import Stage
from .link import ANALYSIS

RESULTS = "experiments.json"


def check(ctx) -> None:
    for p in ctx.cfg.experiments.specs:
        if not Path(p).is_file():
            raise ConfigError(f"experiments.specs: {p} not found")


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
        ctx.leaderboards.append((spec.name, res))
        rep.add(f"experiment/{spec.name}", CaseStatus.DONE, "", **{k: v for k, v in summary.items() if k != "name"})
    write_json(ctx.path(RESULTS), results)
    return rep, {"experiments": results}


def experiment_summary(name: str, res: Any) -> dict:
    """A JSON-able summary of run_experiment's result (best pipeline, AUC and CI, run id)."""
    out: dict[str, Any] = {"name": name, **({"run_id": res.parent_run_id} if res.parent_run_id else {})}
    lb = res.table()
    cols = [c for c in ("pipeline", "auc", "auc_ci_low", "auc_ci_high", "balanced_accuracy", "brier", "run_id")
            if c in lb.columns]
    out["leaderboard"] = json.loads(lb[cols].sort_values("auc", ascending=False).to_json(orient="records"))
    out["best"] = res.best
    return out


STAGE = Stage("experiments", order=60, upstream=("link",), key=key, run=run, outputs=(RESULTS,), check=check,
              enabled=lambda cfg: cfg.experiments.run)
