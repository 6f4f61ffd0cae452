"""CLI: ``biomarkers extract DATASET --params PARAMS.yaml --out FEATURES`` (radiomic features)."""

from __future__ import annotations

from pathlib import Path
from typing import List

import typer

from ._app import app


@app.command("extract")
def extract(
    dataset: Path = typer.Argument(..., help="An ingest output folder (manifest.parquet, images/, masks/)."),
    params: List[str] = typer.Option(
        ..., "--params", "-p",
        help="pyradiomics parameter file (configs/radiomics/*.yaml). Repeat as MODALITY=FILE for per-modality "
        "files, e.g. --params CT=configs/radiomics/ct.yaml --params PT=configs/radiomics/pet.yaml; a FILE "
        "without MODALITY= applies to every other modality.",
    ),
    out: Path = typer.Option(..., "--out", "-o", help="FEATURES folder: items/, features_long.parquet, "
                             "features_wide.parquet, provenance.json, report.json."),
    executor: str = typer.Option("local", "--executor", "-e",
                                 help="Where items run: local (workers = cores), local:N, serial or dask://HOST:PORT."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan (items to extract, cached, skipped); write nothing."),
) -> None:
    """Extract radiomic features for every ROI of every series in DATASET.

    Items already extracted with the same image, mask, parameters and library versions are
    not recomputed. Exit status 0 when the run completed, even if some items failed (see
    FEATURES/report.json); 2 for invalid input or parameters.
    """
    from ..features.extract import Extract
    from ..features.naming import WIDE_TABLE
    from ..logs import echo

    from ..executors import check_spec
    from ..io import check_apart

    check_spec(executor)
    check_apart(dataset, out, "dataset folder", "features folder")
    stage = Extract(dataset, params, out, executor=executor).validate()
    _check_modalities(stage, params)
    if dry_run:
        plan = stage.plan(dry_run=True)
        for line in plan.lines():
            echo(line)
        return
    from ..locks import output_lock

    with output_lock(out, "biomarkers extract"):  # plan and run: one holder
        plan = stage.plan()
        echo(plan.summary())
        report = stage.run(plan)
    echo(report.summary())
    echo(f"features: {out / WIDE_TABLE} ({report.extra['tables'][WIDE_TABLE]} rows, "
         f"{report.extra['tables']['feature_columns']} features)")


def _check_modalities(stage, given: List[str]) -> None:
    """Every ``--params MODALITY=FILE`` names a modality of the dataset (else exit 2 listing those it has)."""
    from ..errors import ConfigError
    from ..features.params import DEFAULT, normalise_modality

    m = stage._manifest
    have = sorted({normalise_modality(x) for x in m.loc[m["kind"] == "image", "modality"].dropna().astype(str)})
    for mod, ps in stage.params.by_modality.items():
        if mod != DEFAULT and mod not in have:
            spec = next((g for g in given if "=" in g and normalise_modality(g.split("=", 1)[0]) == mod), f"{mod}={ps.path}")
            raise ConfigError(f"--params {spec}: the dataset has no modality {mod} (it has {', '.join(have) or 'none'})")
