"""Stage ``qc``: the visual quality-control report ``OUT/qc/index.html`` (:mod:`biomarkers.qc`), on by default.

Thumbnails render on the pipeline's executor and are cached by content: a rerun renders only
the cards of new or changed images and masks; the page is rebuilt when any input changed.
The pipeline's MLflow run (stage ``tracking``, after this one) logs the ``qc/`` folder as an
artifact. Config section ``qc:`` (:class:`biomarkers.qc.QcSettings`).
"""

from biomarkers.qc import QcSettings

from ..stage import Stage
from . import clinical, experiments, extract, ingest, link

QC = "qc"
INDEX = f"{QC}/index.html"
REPORT = f"{QC}/report.json"


def _optional(ctx, rel: str) -> str | None:
    return ctx.hasher.file(ctx.path(rel)) if ctx.path(rel).is_file() else None


def key(ctx) -> dict:
    return {"manifest": ctx.hash_out(ingest.MANIFEST), "ingest_report": _optional(ctx, ingest.REPORT),
            **{rel: _optional(ctx, rel) for rel in (extract.WIDE, extract.REPORT, clinical.CLINICAL, link.ANALYSIS,
                                                   experiments.RESULTS)},
            "settings": ctx.cfg.qc.model_dump(mode="json"), "tracking": ctx.tracking_uri()}


def run(ctx):
    from biomarkers.qc.report import Layout, run_qc

    def opt(rel):
        return ctx.path(rel) if ctx.path(rel).exists() else None

    layout = Layout(ctx.out.resolve(), ctx.path(ingest.DATASET), features=opt(extract.FEATURES),
                    clinical=opt(clinical.CLINICAL), analysis=opt(link.ANALYSIS), experiments=opt(experiments.RESULTS))
    # the pipeline's own MLflow run is created after this stage (and holds this report): not linked here
    rep = run_qc(layout, settings=ctx.cfg.qc, executor=ctx.executor(), tracking_uri=ctx.tracking_uri(),
                 title=f"Quality control: {ctx.cfg.name}")
    return rep, {"rendered": rep.extra["rendered"], "reused": rep.extra["reused"], "index": INDEX}


STAGE = Stage("qc", order=80, upstream=("ingest",), key=key, run=run, outputs=(INDEX, REPORT), settings=QcSettings)
