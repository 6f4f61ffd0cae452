"""CLI commands of the modelling stage: ``experiment``, ``compare``, ``predict``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..logs import echo
from ._app import app

_URI_HELP = ("MLflow tracking URI (e.g. http://127.0.0.1:5000). Default: $MLFLOW_TRACKING_URI, "
             "else sqlite:///<cwd>/mlflow.db")


def _nan(v) -> bool:
    import math

    return v is None or (isinstance(v, float) and math.isnan(v))


def format_leaderboard(df) -> str:
    """Plain-text leaderboard: one line per pipeline, metrics rounded to 3 decimals."""
    if df.empty:
        return "(no pipeline runs)"
    survival = "auc" not in df.columns and "c_index" in df.columns
    metric = "C-index [95% CI]" if survival else "AUC [95% CI]"
    held = "held-out C" if survival else "held-out AUC"
    head = f"{'pipeline':<24} {metric:<24} {'bal.acc':>8} {'sens':>6} {'spec':>6} {'brier':>6} {'perm p':>7} {held:>12}  run_id"
    lines = [head]

    def f(row, k, w, nd=3):
        return f"{'-':>{w}}" if _nan(row.get(k)) else f"{row.get(k):>{w}.{nd}f}"

    for _, r in df.iterrows():
        r = r.to_dict()
        key = "auc" if not _nan(r.get("auc")) else "c_index"
        if _nan(r.get(key)):
            lines.append(f"{r['pipeline']:<24} {r.get('status', 'failed')} (see the run's tag biomarkers.error)  {r['run_id']}")
            continue
        auc = f"{r[key]:.3f} [{r.get(key + '_ci_low', float('nan')):.3f}, {r.get(key + '_ci_high', float('nan')):.3f}]"
        lines.append(
            f"{r['pipeline']:<24} {auc:<24} {f(r, 'balanced_accuracy', 8)} {f(r, 'sensitivity', 6, 2)} "
            f"{f(r, 'specificity', 6, 2)} {f(r, 'brier', 6)} {f(r, 'permutation_p_value', 7)} "
            f"{f(r, 'heldout_' + key, 12)}  {r['run_id']}"
        )
    return "\n".join(lines)


def _existing_store(uri: str | None) -> None:
    """Read-only commands never create a tracking store: a local one (``sqlite:///PATH``, ``file:`` or a
    folder) must exist (exit 2 naming it otherwise)."""
    from urllib.parse import unquote, urlparse

    from ..errors import InputError
    from ..tracking import tracking_uri as resolve

    u = resolve(uri)
    parsed = urlparse(u)
    if parsed.scheme == "sqlite":
        path = unquote(u.split(":///", 1)[1]) if ":///" in u else ""
        if path and path != ":memory:" and not Path(path).is_file():
            raise InputError(f"{u}: no MLflow store there (no such database file); nothing was created. Give the "
                             "--tracking-uri an experiment or pipeline run logged to")
    elif parsed.scheme in ("", "file"):
        path = unquote(parsed.path) if parsed.scheme == "file" else u
        if not Path(path).is_dir():
            raise InputError(f"{u}: no MLflow store there (no such folder); nothing was created")


@app.command("experiment")
def experiment_cmd(
    spec: Path = typer.Argument(..., help="Experiment spec YAML (experiments/*.yaml)."),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help=_URI_HELP),
    table: Optional[Path] = typer.Option(None, "--table", help="Use this analysis table instead of input.table."),
    permutations: Optional[int] = typer.Option(None, "--permutations", help="Label permutations for a p-value "
                                               "(overrides validation.permutations; each repeats the nested CV)."),
) -> None:
    """Run the candidate pipelines of SPEC with nested CV and log them to MLflow."""
    from ..modeling.experiment import run_experiment

    res = run_experiment(spec, tracking_uri=tracking_uri, table=table, permutations=permutations)
    echo(f"experiment {res.experiment!r} (id {res.experiment_id}), parent run {res.parent_run_id} in {res.tracking_uri}")
    lb = res.table()
    echo(format_leaderboard(lb.sort_values("auc" if "auc" in lb.columns else "c_index", ascending=False)))
    echo(f"best pipeline: {res.best}" + (f"; registered as version {res.registered_version}" if res.registered_version else ""))


@app.command("compare")
def compare_cmd(
    experiment: str = typer.Argument(..., help="MLflow experiment name (the spec's name)."),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help=_URI_HELP),
    run_id: Optional[str] = typer.Option(None, "--run-id", help="Parent run to show (default: the latest)."),
    csv: Optional[Path] = typer.Option(None, "--csv", help="Also write the leaderboard to this CSV file."),
) -> None:
    """Print the leaderboard of EXPERIMENT's latest run, read from MLflow (same numbers as the UI)."""
    from ..io import write_csv
    from ..modeling.experiment import leaderboard

    _existing_store(tracking_uri)
    df = leaderboard(experiment, tracking_uri=tracking_uri, parent_run_id=run_id)
    echo(format_leaderboard(df))
    if csv is not None:
        write_csv(csv, df)


@app.command("predict")
def predict_cmd(
    model_uri: str = typer.Argument(..., help="MLflow model URI: runs:/<run_id>/model, models:/<name>/<version>, "
                                    "models:/m-<id> or a local model folder."),
    table: Path = typer.Argument(..., help="Parquet/CSV with the model's input columns (one row per patient)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write predictions to this .csv or .parquet "
                                       "(default: CSV on stdout)."),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help=_URI_HELP),
) -> None:
    """Score new patients with a logged model: id column + probability of the positive class."""
    from ..io import write_csv, write_parquet
    from ..modeling.experiment import predict_table

    if not (Path(model_uri).is_dir() or model_uri.startswith("file:")):
        _existing_store(tracking_uri)
    res = predict_table(model_uri, table, tracking_uri=tracking_uri)
    if out is None:
        print(res.to_csv(index=False), end="")
    elif out.suffix.lower() == ".parquet":
        write_parquet(out, res)
        echo(f"{len(res)} predictions -> {out}")
    else:
        write_csv(out, res)
        echo(f"{len(res)} predictions -> {out}")
