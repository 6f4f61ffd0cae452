"""Stage ``clinical``: clinical exports validated against the schema and pseudonymised (:mod:`biomarkers.clinical`)."""

import glob
from pathlib import Path

from biomarkers.errors import ConfigError

from ..stage import Stage
from .ingest import DATASET, MANIFEST

CLINICAL = "clinical/clinical.parquet"
REPORT = "clinical/report.json"


def expand(patterns: list[str]) -> list[Path]:
    """Files matching the given paths/globs (``source.clinical``; each glob sorted), each file once."""
    found: dict[Path, Path] = {}
    for pat in patterns:
        for h in sorted(glob.glob(pat)) if any(ch in pat for ch in "*?[") else [pat]:
            if Path(h).is_file():
                found.setdefault(Path(h).resolve(), Path(h))
    return list(found.values())


def schema(cfg):
    """The :class:`~biomarkers.clinical.schema.ClinicalSchema` of the config (a file or inline)."""
    from biomarkers.clinical.schema import load_schema

    s = cfg.clinical.schema_
    return load_schema(s) if isinstance(s, Path) else s


def check(ctx) -> None:
    c = ctx.cfg
    if not expand(c.source.clinical):
        raise ConfigError(f"source.clinical: no file matches {c.source.clinical}")
    if isinstance(c.clinical.schema_, Path) and not c.clinical.schema_.is_file():
        raise ConfigError(f"clinical.schema: {c.clinical.schema_} not found")


def key(ctx) -> dict:
    c = ctx.cfg
    return {"files": ctx.hasher.files(expand(c.source.clinical)), "schema": schema(c).model_dump(mode="json"),
            "deid": c.deid.model_dump(mode="json"), "secret": ctx.secret_probe(), "manifest": ctx.hash_out(MANIFEST)}


def run(ctx):
    from biomarkers.clinical.load import load_clinical
    from biomarkers.io import write_parquet
    from biomarkers.manifest import read_manifest

    known = sorted(set(read_manifest(ctx.path(DATASET))["patient_id"].astype(str)))
    df, vrep = load_clinical(expand(ctx.cfg.source.clinical), schema(ctx.cfg), deidentifier=ctx.deidentifier(),
                             known_patients=known)
    write_parquet(ctx.path(CLINICAL), df)
    vrep.write(ctx.path(REPORT))
    return vrep.run_report(), {"patients": int(len(df))}


STAGE = Stage("clinical", order=30, upstream=("ingest",), key=key, run=run, outputs=(CLINICAL, REPORT), check=check)
