"""Stage ``release``: a partner release of the features and clinical tables (:func:`biomarkers.release.build_release`)."""

from biomarkers.errors import ConfigError

from ..stage import Stage
from . import clinical, extract

RELEASES = "release"
REPORT = "release_report.json"


def key(ctx) -> dict:
    c = ctx.cfg
    return {"features": ctx.hash_out(extract.WIDE), "clinical": ctx.hash_out(clinical.CLINICAL),
            "config": ctx.hasher.file(c.release.config) if c.release.config else None}


def run(ctx):
    import pandas as pd

    from biomarkers.io import write_json
    from biomarkers.release import build_release
    from biomarkers.report import CaseStatus, RunReport

    cfg = ctx.cfg.release.config
    if cfg is None:
        raise ConfigError("release.enabled is true but release.config (a release YAML) is not set")
    res = build_release(ctx.path(extract.FEATURES), pd.read_parquet(ctx.path(clinical.CLINICAL)), cfg,
                        ctx.path(RELEASES), schema=clinical.schema(ctx.cfg), deidentifier=ctx.deidentifier(),
                        config_path=cfg, tracking_uri=ctx.tracking_uri())
    write_json(ctx.path(REPORT), res.to_dict())
    rep = RunReport("release")
    rep.add(f"release/{res.name}-{res.version}", CaseStatus.DONE, "", path=f"{RELEASES}/{res.path.name}")
    return rep, {"release": f"{res.name}-{res.version}", "mlflow_run_id": res.mlflow_run_id}


STAGE = Stage("release", order=70, upstream=("extract", "clinical"), key=key, run=run, outputs=(REPORT,),
              enabled=lambda cfg: cfg.release.enabled and cfg.clinical is not None)
