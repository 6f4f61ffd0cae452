"""Stage ``link``: clinical variables joined with the features (:func:`biomarkers.clinical.link.link`)."""

from biomarkers.report import CaseStatus

from ..stage import Stage
from . import clinical, extract

ANALYSIS = "analysis.parquet"
REPORT = "link_report.json"


def key(ctx) -> dict:
    s = clinical.schema(ctx.cfg)
    return {"features": ctx.hash_out(extract.WIDE), "clinical": ctx.hash_out(clinical.CLINICAL),
            "join": s.join, "how": s.how}


def run(ctx):
    import pandas as pd

    from biomarkers.clinical.link import link
    from biomarkers.features.naming import read_wide
    from biomarkers.io import write_json, write_parquet
    from biomarkers.report import RunReport

    s = clinical.schema(ctx.cfg)
    table, lrep = link(read_wide(ctx.path(extract.FEATURES)), pd.read_parquet(ctx.path(clinical.CLINICAL)),
                       join=s.join, how=s.how)
    write_parquet(ctx.path(ANALYSIS), table)
    write_json(ctx.path(REPORT), lrep.to_dict())
    rep = RunReport("link")
    linked = set(table["patient_id"].astype(str)) - set(lrep.features_only) - set(lrep.clinical_only)
    for pid in sorted(linked):
        rep.add(pid, CaseStatus.DONE, "")  # linked: features joined with a valid clinical row
    for pid in lrep.features_only:
        rep.add(pid, CaseStatus.SKIPPED, "features but no valid clinical row")
    for pid in lrep.clinical_only:
        rep.add(pid, CaseStatus.SKIPPED, "clinical row but no features")
    return rep, {"rows": lrep.n_rows, "columns": lrep.n_columns, "patients_linked": lrep.n_patients_linked}


STAGE = Stage("link", order=40, upstream=("extract", "clinical"), key=key, run=run, outputs=(ANALYSIS,),
              enabled=lambda cfg: clinical.STAGE.enabled(cfg) and extract.STAGE.enabled(cfg))
