"""Console output for the CLI: logging setup and progress bars.

Only the CLI calls :func:`setup_logging`; importing biomarkers configures nothing.
Log records never carry identifiers: code logs pseudonyms and keyed references only. Source files
are named through :func:`file_ref` (their keyed reference, e.g. ``src-K3J9XQ2M4T7A``):
hospital folders carry names, MRNs and dates. Their paths appear only in the site-side source report,
or at the console when the operator asks with ``--show-paths`` (:func:`show_paths`).
"""

from __future__ import annotations

import logging
import sys
from contextlib import contextmanager
from typing import Iterator

_state = {"quiet": False, "verbose": False, "show_paths": False}


def setup_logging(verbose: bool = False, quiet: bool = False) -> None:
    _state.update(quiet=quiet, verbose=verbose)
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("biomarkers")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    # third-party chatter
    for name in ("radiomics", "mlflow", "distributed", "alembic", "urllib3"):
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.ERROR)


def show_paths(on: bool = True) -> None:
    """Let :func:`file_ref` add source paths (the CLI's ``--show-paths``, for the operator at the console)."""
    _state["show_paths"] = bool(on)


def file_ref(ref: str, path: object = None) -> str:
    """How console and log lines name a source file: its keyed reference; with ``--show-paths`` also its path."""
    if _state["show_paths"] and path not in (None, ""):
        return f"{ref} ({path})"
    return ref


@contextmanager
def progress(description: str, total: int | None) -> Iterator:
    """A progress bar (rich) on stderr; ``advance()`` the returned callable once per item.

    Disabled with ``--quiet`` and when stderr is not a terminal.
    """
    if _state["quiet"] or not sys.stderr.isatty():
        yield lambda n=1: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=True
    ) as p:
        task = p.add_task(description, total=total)
        yield lambda n=1: p.advance(task, n)


def echo(message: str) -> None:
    """Print a user-facing line to stdout (suppressed by --quiet)."""
    if not _state["quiet"]:
        print(message, flush=True)
