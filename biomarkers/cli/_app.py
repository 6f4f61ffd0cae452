"""The ``biomarkers`` Typer application (commands register themselves in sibling modules)."""

import typer

from ..logs import setup_logging

app = typer.Typer(
    name="biomarkers",
    help="Imaging biomarker discovery: ingest DICOM, de-identify, extract radiomics, link clinical data, "
    "model in MLflow, release feature tables.\n\nExit status: 0 when a run completed (even if some cases "
    "were skipped or failed: see its report), 2 for invalid input or configuration, 1 for an unexpected error, 3 from 'verify' when it finds a "
    "problem, 130 after Ctrl-C (SIGINT) and 143 after SIGTERM (a rerun resumes).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _global(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show debug messages."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only warnings and errors; no progress bars."),
) -> None:
    setup_logging(verbose=verbose, quiet=quiet)
