"""CLI command ``biomarkers link``: clinical tables + features -> analysis table."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ._app import app


def clinical_files(first: List[Path], ctx: typer.Context) -> list[Path]:
    """``--clinical a.csv b.csv`` and ``--clinical a.csv --clinical b.csv`` both work."""
    extra = [Path(a) for a in ctx.args]
    bad = [a for a in ctx.args if a.startswith("-")]
    if bad:
        raise typer.BadParameter(f"unknown option(s) {bad}")
    return [*first, *extra]


@app.command(
    "link",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": False},
)
def link_cmd(
    ctx: typer.Context,
    features: Path = typer.Option(..., "--features", help="FEATURES folder (features_wide.parquet) or the Parquet file."),
    clinical: List[Path] = typer.Option(..., "--clinical", help="Clinical export(s): .csv, .xlsx, .parquet (one or more)."),
    schema: Path = typer.Option(..., "--schema", help="Clinical schema YAML (see configs/clinical_schema.yaml)."),
    out: Path = typer.Option(..., "--out", help="Analysis table to write (.parquet)."),
    join: Optional[str] = typer.Option(None, "--join", help="series | patient (default: the schema's 'join')."),
    demo: bool = typer.Option(False, "--demo", help="Use the public demo secret when BIOMARKERS_SECRET is unset (synthetic data only)."),
) -> None:
    """Validate and pseudonymise clinical tables and join them with radiomics features.

    Writes OUT (Parquet), OUT's validation report (<stem>.validation.csv: file, row,
    line, column, problem, action) and run report (<stem>.report.json).
    """
    from ..clinical.link import link
    from ..clinical.load import ClinicalValidationError, load_clinical
    from ..clinical.schema import load_schema
    from ..deid import Deidentifier
    from ..features.naming import read_wide
    from ..io import check_apart, write_parquet
    from ..locks import output_lock
    from ..logs import echo

    files = clinical_files(clinical, ctx)
    for src, what in [(features, "features"), *((f, "clinical file") for f in files), (schema, "schema file")]:
        check_apart(src, out, what, "analysis table")
    with output_lock(out.parent, "biomarkers link", tree=False):  # T, its report and validation files
        sch = load_schema(schema)
        if demo:
            sch = sch.model_copy(update={"deid": sch.deid.model_copy(update={"demo": True})})
        feats = read_wide(features)
        stem = out.with_suffix("")
        deid = Deidentifier(sch.deid)
        if deid.enabled and deid.pseudonymizer.demo:  # the public demo secret: synthetic data only
            from ..deid.keys import require_synthetic

            for f in files:
                require_synthetic(Path(f).parent)
        try:
            table, vrep = load_clinical(files, sch, deid, known_patients=set(feats["patient_id"].astype(str)))
        except ClinicalValidationError as err:
            err.report.write(stem.with_name(stem.name + ".validation.csv"))
            err.report.run_report().write(stem.with_name(stem.name + ".report.json"))
            raise
        vrep.write(stem.with_name(stem.name + ".validation.csv"))
        echo(vrep.summary())
        analysis, lrep = link(feats, table, join=join or sch.join, how=sch.how)
        write_parquet(out, analysis)
        rr = vrep.run_report()
        rr.extra["link"] = lrep.to_dict()
        rr.extra["schema"] = str(schema)
        rr.write(stem.with_name(stem.name + ".report.json"))
        echo(lrep.summary())
        echo(f"analysis table: {out} ({analysis.shape[0]} rows x {analysis.shape[1]} columns)")
