"""CLI commands of the pipeline area: ``biomarkers run``, ``biomarkers synth``, ``biomarkers demo``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..logs import echo
from ._app import app


@app.command("run")
def run_cmd(
    config: Path = typer.Argument(..., help="Pipeline YAML (see configs/pipeline.yaml)."),
    executor: Optional[str] = typer.Option(None, "--executor", help="local | local:N | serial | dask://HOST:PORT "
                                           "(overrides the config's executor)."),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="MLflow tracking URI "
                                               "(overrides the config's tracking.uri)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only show which stages would run and which are cached."),
) -> None:
    """Run the configured pipeline end to end: ingest (+ de-identification), extract, clinical linkage,
    MLflow, experiments, release. Stages whose inputs did not change are skipped."""
    from ..pipeline import Pipeline, load_config

    cfg = load_config(config)
    pipe = Pipeline(cfg, executor=executor, tracking_uri=tracking_uri)
    if dry_run:
        pipe.validate()
        for name, s in pipe.plan().items():
            extra = f" ({s.reason})" if s.reason else ""
            echo(f"{name:<12} {s.status}{extra}")
        return
    report = pipe.run()
    echo("")
    echo(report.summary())
    echo(f"run report: {pipe.run_report_path}")
    failed = [k for k, s in pipe.stages.items() if s.status == "failed"]
    if failed:
        from ..errors import BiomarkersError

        raise BiomarkersError(f"pipeline incomplete: stage(s) {', '.join(failed)} failed: "
                              + "; ".join(f"{k}: {pipe.stages[k].reason.splitlines()[0][:300]}" for k in failed)
                              + f" (see {pipe.run_report_path})")


@app.command("synth")
def synth_cmd(
    out: Path = typer.Argument(..., help="Output folder (dicom/, clinical/, ground_truth.csv)."),
    patients: int = typer.Option(60, "--patients", help="Number of patients."),
    centres: int = typer.Option(3, "--centres", help="Number of centres."),
    seed: int = typer.Option(0, "--seed", help="Random seed (same seed = identical files)."),
    executor: str = typer.Option("local", "--executor", help="Where to generate patients (local, serial, dask://...)."),
    scale: float = typer.Option(
        1.0, "--scale", help="In-plane resolution factor at a fixed field of view (1: the demo's 96x96 CT at "
        "~3.5 mm; 4: 384x384 at ~0.9 mm, clinical resolution, for load tests)."),
) -> None:
    """Write a synthetic multicentre PET/CT cohort (real DICOM + RTSTRUCT, clinical CSVs, ground truth)."""
    from ..locks import output_lock
    from ..synth import synthesize

    with output_lock(out, "biomarkers synth"):
        s = synthesize(out, patients=patients, centres=centres, seed=seed, executor=executor, scale=scale)
    echo(f"{patients} patients in {centres} centres written to {out} "
         f"(outcome 0/1: {s['outcome_counts']['0']}/{s['outcome_counts']['1']}); ground truth: {Path(out) / 'ground_truth.csv'}")


@app.command("demo")
def demo_cmd(
    out: Path = typer.Option(Path("demo_out"), "--out", help="Demo folder (cohort, outputs, mlflow.db)."),
    patients: int = typer.Option(60, "--patients", help="Number of synthetic patients."),
    centres: int = typer.Option(3, "--centres", help="Number of centres."),
    seed: int = typer.Option(7, "--seed", help="Random seed of the synthetic cohort."),
    executor: Optional[str] = typer.Option(None, "--executor", help="Executor spec (default: local process pool)."),
) -> None:
    """Synthesise a cohort, run the full pipeline and the demo experiment, print the leaderboard."""
    from ..pipeline.demo import run_demo

    run_demo(out, patients=patients, centres=centres, seed=seed, executor=executor)
