"""CLI command ``biomarkers release``: versioned partner release of features + clinical variables."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ._app import app


@app.command("release", context_settings={"allow_extra_args": True, "ignore_unknown_options": False})
def release_cmd(
    ctx: typer.Context,
    features: Path = typer.Option(..., "--features", help="FEATURES folder (features_wide.parquet, provenance.json)."),
    clinical: List[Path] = typer.Option(..., "--clinical", help="Clinical export(s): .csv, .xlsx, .parquet (one or more)."),
    config: Path = typer.Option(..., "--config", help="Release config YAML (see configs/release.yaml)."),
    out: Path = typer.Option(..., "--out", help="RELEASES folder; the release goes to OUT/<name>-<version>/."),
    version: Optional[str] = typer.Option(None, "--version", help="X.Y.Z (default: next patch version, 1.0.0 first)."),
    archive: bool = typer.Option(False, "--archive", help="Also write OUT/<name>-<version>.tar.gz (+ .sha256)."),
    schema: Optional[Path] = typer.Option(None, "--schema", help="Clinical schema YAML (default: the config's clinical_schema)."),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI or sqlite:///<cwd>/mlflow.db)."),
    no_mlflow: bool = typer.Option(False, "--no-mlflow", help="Do not log the release to MLflow."),
    demo: bool = typer.Option(False, "--demo", help="Use the public demo secret when BIOMARKERS_SECRET is unset (synthetic data only)."),
) -> None:
    """Build an immutable, documented, privacy-checked release folder for a partner.

    Refused (exit status 2, nothing written) when an identifying value is found, when a
    combination of quasi-identifiers occurs fewer than k times, or when the version exists.
    """
    from ..clinical.schema import load_schema
    from ..logs import echo
    from ..release import build_release, load_release_config
    from .clinical import clinical_files

    files = clinical_files(clinical, ctx)
    cfg = load_release_config(config)
    sch = load_schema(schema) if schema is not None else None
    if demo:
        if sch is None:
            if not cfg.clinical_schema:
                from ..errors import ConfigError

                raise ConfigError(f"{config}: clinical_schema is not set; give --schema")
            p = Path(cfg.clinical_schema)
            sch = load_schema(p if p.is_absolute() else config.parent / p)
        sch = sch.model_copy(update={"deid": sch.deid.model_copy(update={"demo": True})})
    from ..io import check_apart
    from ..locks import output_lock

    check_apart(features, out, "features folder", "releases folder")
    for f in files:
        check_apart(f, out, "clinical file", "releases folder")
    with output_lock(out, "biomarkers release"):
        res = build_release(
            features, files, cfg, out, version=version, archive=archive, schema=sch, config_path=config,
            tracking_uri=False if no_mlflow else tracking_uri,
        )
    if res.validation is not None:
        echo(res.validation.summary())
    echo(res.summary())
