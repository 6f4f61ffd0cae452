"""Interruptions (Ctrl-C / SIGINT, SIGTERM): the one place every command's handling lives.

:func:`install` (called by ``biomarkers.cli.main`` for every command) turns the first SIGINT or
SIGTERM into :class:`Interrupted`, a ``BaseException`` so that the ``except Exception`` blocks that
keep one bad case from stopping a cohort do not swallow it. It unwinds the command: executors
see :func:`received` and terminate their workers instead of waiting for them
(:meth:`biomarkers.executors.Executor.close`), a pipeline ends its MLflow run as KILLED, locks are
released, and ``main`` prints ONE line (:func:`message`) and exits 130 (SIGINT) or 143 (SIGTERM).
A second signal during that cleanup is ignored; a cleanup that does not finish within
:data:`GRACE_S` seconds ends the process anyway.

Worker processes never handle SIGINT themselves (a Ctrl-C reaches the whole process group):
they are started with SIGINT blocked (:func:`sigint_blocked`) and ignore it
(:func:`worker_init`); the coordinator terminates them. SIGTERM keeps its default action in
workers. Writes are atomic (:func:`biomarkers.io.atomic_path`): an interrupted write leaves only
a temporary file, removed by the next run (:func:`biomarkers.io.remove_partial`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Iterator

#: Seconds the cleanup after a signal may take before the process exits regardless.
GRACE_S = 20.0

_received: int | None = None
_deadline: threading.Timer | None = None  # ends the process GRACE_S after a signal if cleaning up hangs
_doing: list[str] = []


class Interrupted(BaseException):
    """The command was interrupted by signal ``signum`` (see module docstring)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)

    @property
    def exit_status(self) -> int:
        """128 + the signal number: 130 for SIGINT, 143 for SIGTERM."""
        return 128 + self.signum


def received() -> int | None:
    """The signal that interrupted this process (None: not interrupted)."""
    return _received


def _handler(signum, _frame) -> None:
    global _received, _deadline
    if _received is not None:
        return  # cleaning up after the first signal: let it finish
    _received = signum
    _deadline = threading.Timer(GRACE_S, os._exit, (128 + signum,))
    _deadline.daemon = True
    _deadline.start()
    raise Interrupted(signum)


def install():
    """Handle SIGINT and SIGTERM in this (main) process (a no-op outside the main thread); returns a
    function restoring the previous handlers (for in-process callers of ``biomarkers.cli.main``).
    ``restore(keep_deadline=False)`` also cancels the exit deadline a signal started: an in-process
    caller goes on after the interrupted command; the console script keeps it (its process ends)."""
    global _received
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    _received = None
    _doing.clear()
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, _handler)
    signal.signal(signal.SIGTERM, _handler)

    def restore(keep_deadline: bool = False) -> None:
        global _deadline
        for s, h in old.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)
        if _deadline is not None and not keep_deadline:
            _deadline.cancel()
            _deadline = None

    return restore


@contextlib.contextmanager
def doing(what: str) -> Iterator[None]:
    """Name what the process is doing (e.g. ``stage extract``) for the interruption message."""
    _doing.append(what)
    try:
        yield
    finally:
        if _doing and _doing[-1] == what and _received is None:
            _doing.pop()


def message(exc: BaseException, command: str) -> str:
    """The one line printed for an interruption of ``command`` (e.g. ``biomarkers extract``)."""
    signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
    name = "Ctrl-C (SIGINT)" if signum == signal.SIGINT else signal.Signals(signum).name
    where = f" during {_doing[-1]}" if _doing else ""
    return (f"interrupted: {command}{where} stopped by {name}; finished work is kept and nothing half-written "
            "is used: run the same command again to resume")


def exit_status(exc: BaseException) -> int:
    return exc.exit_status if isinstance(exc, Interrupted) else 130


def worker_init() -> None:
    """In a worker process: SIGINT ignored (the coordinator stops the workers), SIGTERM default.
    A no-op outside the main thread (dask workers run items in threads)."""
    if threading.current_thread() is not threading.main_thread():
        return
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    with contextlib.suppress(AttributeError, OSError):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def stop_helpers() -> None:
    """At the end of a command process: run multiprocessing's exit handlers now (pools' semaphores
    released, children joined) and stop its resource-tracker process (started with the first spawned
    pool), waiting for it, so no process of the command outlives it (the tracker otherwise exits only
    a moment after the command, when it notices its pipe closed). Only for a process about to exit."""
    try:
        from multiprocessing import resource_tracker, util

        util._exit_function()
        tracker = resource_tracker._resource_tracker
        if getattr(tracker, "_fd", None) is not None:
            # first: an object finalised later (a semaphore of an interrupted pool, at interpreter exit
            # or by a garbage collection during the stop itself) would otherwise write to the tracker's
            # closed pipe and print a traceback
            resource_tracker.register = resource_tracker.unregister = lambda *_a, **_k: None
            tracker._stop()
    except (ImportError, AttributeError, OSError, ChildProcessError):
        pass


@contextlib.contextmanager
def sigint_blocked() -> Iterator[None]:
    """Block SIGINT in this thread while child processes are started: they inherit the blocked mask,
    so a Ctrl-C during their start-up (before :func:`worker_init`) does not reach them. A SIGINT
    arriving meanwhile is delivered to this process when the block ends (never lost)."""
    try:
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    except (AttributeError, OSError, ValueError):
        yield
        return
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
