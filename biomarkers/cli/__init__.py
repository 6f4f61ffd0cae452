"""Command-line interface: ``biomarkers COMMAND --help``."""

from __future__ import annotations

import sys

from ..errors import BiomarkersError
from ._app import app

# Each module registers its commands on ``app``.
from . import ingest  # noqa: E402,F401
from . import extract  # noqa: E402,F401
from . import ibsi  # noqa: E402,F401
from . import clinical  # noqa: E402,F401
from . import release  # noqa: E402,F401
from . import modeling  # noqa: E402,F401
from . import pipeline  # noqa: E402,F401
from . import deid  # noqa: E402,F401
from . import qc  # noqa: E402,F401
from . import lake  # noqa: E402,F401
from . import gateway  # noqa: E402,F401
from . import verify  # noqa: E402,F401


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``biomarkers`` console script."""
    args = sys.argv[1:] if argv is None else list(argv)
    if any(a == "--secret" or a.startswith("--secret=") for a in args):
        # never a secret on the command line: visible in `ps` to every user, kept in shell histories
        print("usage error: the de-identification secret is never taken from the command line (--secret): "
              "set BIOMARKERS_SECRET, or BIOMARKERS_SECRET_FILE to a file (mode 0600) holding it", file=sys.stderr)
        return 2
    from .. import interrupts

    restore = interrupts.install()  # Ctrl-C -> 130, SIGTERM -> 143, one line (biomarkers.interrupts)
    try:
        status = _run(argv)
    except (interrupts.Interrupted, KeyboardInterrupt) as exc:
        command = " ".join(["biomarkers", *[a for a in args if not a.startswith("-")][:1]])
        print(interrupts.message(exc, command), file=sys.stderr)
        return interrupts.exit_status(exc)
    finally:
        if argv is None:  # the console script: this process ends now; nothing of its group outlives it
            interrupts.stop_helpers()
        restore(keep_deadline=argv is None)
    if argv is None and [a for a in args if not a.startswith("-")][:1] == ["ingest"]:
        _exit_now(status)
    return status


def _exit_now(status: int) -> None:
    """End the console script's process now, without the interpreter's finalisation (freeing every
    module's objects: ~0.1 s, a tenth of a small ``ingest``). Only for commands whose outputs are all
    written, synced and closed when they return (``ingest``: every file through ``io.atomic_path``),
    and only with no other thread running and no profiler or tracer attached (they write their results
    after ``main`` returns); the exit handlers (``atexit``: logging's flush...) run first."""
    import atexit
    import contextlib
    import os
    import threading

    if threading.active_count() != 1 or sys.getprofile() is not None or sys.gettrace() is not None:
        return
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(status)


def _run(argv: list[str] | None) -> int:
    try:
        rv = app(args=argv, standalone_mode=False)
        # typer >= 0.2x (its own click) returns, in non-standalone mode, the code of an Exit instead of
        # raising it, and turns a KeyboardInterrupt in a command into Exit(130): neither may end as 0
        if isinstance(rv, int) and not isinstance(rv, bool) and rv:
            if rv == 130:
                raise KeyboardInterrupt
            return rv
    except BiomarkersError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # click's own exits (--help, usage errors)
        return int(exc.code or 0)
    except Exception as exc:  # click usage errors in non-standalone mode
        import click

        if isinstance(exc, click.exceptions.ClickException) or (
                hasattr(exc, "show") and isinstance(getattr(exc, "exit_code", None), int)):  # typer's own click
            exc.show()
            return exc.exit_code
        if isinstance(exc, click.exceptions.Abort):  # click's own Ctrl-C (a KeyboardInterrupt it caught)
            raise KeyboardInterrupt from None
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
