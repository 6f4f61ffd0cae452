"""Stage ``ingest``: DICOM -> de-identified NIfTI images and masks + manifest (:mod:`biomarkers.dicom.ingest`)."""

from biomarkers.errors import ConfigError
from biomarkers.manifest import MANIFEST_FILE

from ..stage import Stage

DATASET = "dataset"
MANIFEST = f"{DATASET}/{MANIFEST_FILE}"
REPORT = f"{DATASET}/report.json"


def _ingest(ctx, executor):
    from biomarkers.dicom.ingest import Ingest

    return Ingest(ctx.cfg.source.dicom, ctx.path(DATASET), ctx.cfg.ingest_settings(),
                  deidentifier=ctx.deidentifier(), executor=executor)


def check(ctx) -> None:
    if not ctx.cfg.source.dicom.is_dir():
        raise ConfigError(f"source.dicom: {ctx.cfg.source.dicom} is not a folder")


def key(ctx) -> dict:
    c = ctx.cfg
    return {"src": ctx.src_hasher.tree(c.source.dicom), "settings": c.ingest_settings().model_dump(mode="json"),
            "secret": ctx.secret_probe()}


def plan(ctx) -> str:
    return _ingest(ctx, "serial").plan().summary()  # an error: the dry run says the stage would fail, and why


def run(ctx):
    ing = _ingest(ctx, ctx.executor())
    ing.validate()
    return ing.run(), {}


STAGE = Stage("ingest", order=10, key=key, run=run, outputs=(MANIFEST, REPORT), check=check, plan=plan)
