"""Stage ``extract``: radiomics of every image x ROI of the manifest (:func:`biomarkers.features.run_extract`)."""

from pathlib import Path

from biomarkers.features.naming import WIDE_TABLE

from ..stage import Stage, require_files
from .ingest import DATASET, MANIFEST

FEATURES = "features"
WIDE = f"{FEATURES}/{WIDE_TABLE}"
REPORT = f"{FEATURES}/report.json"


def params_files(cfg) -> dict[str, Path]:
    """``{MODALITY or "*": parameter file}``."""
    p = cfg.extract.params
    return {k: Path(v) for k, v in p.items()} if isinstance(p, dict) else {"*": Path(p)}


def key(ctx) -> dict:
    return {"manifest": ctx.hash_out(MANIFEST),
            "params": {k: ctx.hasher.file(p) for k, p in params_files(ctx.cfg).items()}}


def run(ctx):
    from biomarkers.features import run_extract

    return run_extract(ctx.path(DATASET), ctx.cfg.extract.params, ctx.path(FEATURES), executor=ctx.executor()), {}


STAGE = Stage("extract", order=20, upstream=("ingest",), key=key, run=run, outputs=(WIDE, REPORT),
              check=lambda ctx: require_files("extract.params", params_files(ctx.cfg).values()),
              # workers that will extract import pyradiomics as they start (during ingest's indexing)
              preload=("SimpleITK", "radiomics.featureextractor"))
