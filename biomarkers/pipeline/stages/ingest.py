"""Stage ``ingest``: DICOM -> de-identified NIfTI images and masks + manifest (:mod:`biomarkers.dicom.ingest`)."""

from biomarkers.errors import BiomarkersError, ConfigError
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
    from biomarkers.dicom.index_cache import resolve_cache_path
    from biomarkers.io import FileHasher

    c = ctx.cfg
    # per-file content hashes of the source DICOM stay on the source side, beside the ingest index
    # cache (a file's hash in OUT would tell whoever holds the file that it is part of this dataset);
    # only the tree's overall hash enters the key
    try:
        hasher = FileHasher(resolve_cache_path(c.ingest_settings().index_cache, c.source.dicom, ctx.path(DATASET),
                                               kind="trees", suffix=".json"))
    except BiomarkersError:
        hasher = FileHasher(None)  # ingest reports the misplaced cache
    tree = hasher.tree(c.source.dicom)
    hasher.save()
    return {"src": tree, "settings": c.ingest_settings().model_dump(mode="json"), "secret": ctx.secret_probe()}


def plan(ctx) -> str:
    return _ingest(ctx, "serial").plan().summary()  # an error: the dry run says the stage would fail, and why


def run(ctx):
    ing = _ingest(ctx, ctx.executor())
    ing.validate()
    return ing.run(), {}


STAGE = Stage("ingest", order=10, key=key, run=run, outputs=(MANIFEST, REPORT), check=check, plan=plan)
