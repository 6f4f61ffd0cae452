"""CLI command of the QC area: ``biomarkers qc OUT``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..logs import echo
from ._app import app


@app.command("qc")
def qc_cmd(
    out: Path = typer.Argument(..., help="A pipeline OUT (biomarkers run) or an ingest OUT (biomarkers ingest)."),
    features: Optional[Path] = typer.Option(None, "--features", help="FEATURES folder (biomarkers extract) of an "
                                            "ingest OUT (default for a pipeline OUT: OUT/features)."),
    clinical: Optional[Path] = typer.Option(None, "--clinical", help="Table (Parquet/CSV) with patient_id (pseudonym) "
                                            "and centre columns (default for a pipeline OUT: its clinical table)."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML with the qc settings (the qc: section of a "
                                          "pipeline config, or a file of those keys)."),
    executor: str = typer.Option("local", "--executor", help="Where thumbnails render: local | local:N | serial | "
                                 "dask://HOST:PORT."),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="MLflow store of the pipeline's runs "
                                               "(their plots are embedded; default: MLFLOW_TRACKING_URI or ./mlflow.db)."),
) -> None:
    """Write OUT/qc/index.html: one card per mask with overlays, a cohort view, skipped and failed cases.
    Static and self-contained: open it from the file system in any browser. A rerun renders only new or
    changed cases."""
    from ..config import read_yaml, validate
    from ..qc import QcSettings, run_qc

    settings = QcSettings()
    if config is not None:
        data = read_yaml(config) or {}
        if isinstance(data, dict) and isinstance(data.get("qc"), dict):
            data = data["qc"]
        settings = validate(QcSettings, data, source=f"{config}: qc")
    import contextlib

    from ..io import check_apart
    from ..locks import output_lock
    from ..qc.report import QC_DIR

    for src, what in ((features, "features folder"), (clinical, "clinical table")):
        if src is not None:
            check_apart(src, out / QC_DIR, what, "QC folder")
    # it writes OUT/qc: not while a run writes OUT (a missing OUT: run_qc says what it expects)
    with output_lock(out, "biomarkers qc") if out.is_dir() else contextlib.nullcontext():
        rep = run_qc(out, features=features, clinical=clinical, settings=settings, executor=executor,
                     tracking_uri=tracking_uri)
    echo(rep.summary())
