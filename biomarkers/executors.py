"""Executors: where independent work items run.

One interface for every backend::

    with get_executor("local") as ex:                 # process pool, workers = cores
        for outcome in ex.map_unordered(func, items):  # items: (key, payload) pairs
            ...

``func`` must be a picklable top-level function ``func(payload) -> result``.
Exceptions never escape a worker: each item ends as an :class:`Outcome` with
``ok`` and either ``value`` or ``error`` (the reason). Items are submitted in a
bounded window, so memory does not grow with the number of items, and results
are yielded as they finish, so callers can write them immediately (a crash loses
at most the items in flight).

Specs accepted by :func:`get_executor`:
    ``serial``                 in this process (debugging, tests)
    ``local`` / ``local:N``    a local process pool with N workers (default: cores)
    ``dask://HOST:PORT``       an existing dask.distributed scheduler
    ``tcp://HOST:PORT``        same as dask://
"""

from __future__ import annotations

import contextlib
import os
import traceback
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

from .errors import ConfigError


@dataclass
class Outcome:
    key: str
    ok: bool
    value: Any = None
    error: str | None = None


def _worker_init(preload: tuple[str, ...] = (), parent: int | None = None) -> None:
    """Per-process setup: SIGINT ignored (:func:`biomarkers.interrupts.worker_init`: the coordinator
    stops its workers); one thread per worker so N workers use N cores; import ``preload`` modules.

    ``parent`` (forked workers): the coordinator's pid. A forked worker holds copies of every
    descriptor of the coordinator (e.g. its output lock and the pool's own pipes, so it would
    not notice the coordinator's death): it asks the kernel for SIGTERM when the coordinator
    dies (Linux ``PR_SET_PDEATHSIG``) and exits at once if it already has.
    """
    from .interrupts import worker_init

    worker_init()
    if parent is not None:
        _die_with(parent)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")
    # ITK reads this when SimpleITK is first used; importing SimpleITK here would cost
    # every worker ~140 MB and ~0.5 s even when it never uses it (e.g. ingest workers).
    os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "1")
    import logging
    import sys

    _import(preload)  # while the coordinator is still planning, not in the first work item
    if "SimpleITK" in sys.modules:  # already loaded (forked worker, preload): set it directly
        sys.modules["SimpleITK"].ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    logging.getLogger("radiomics").setLevel(logging.ERROR)


def _import(modules: tuple[str, ...]) -> None:
    import importlib

    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            pass  # the work item that needs it reports the error


def _die_with(parent: int) -> None:
    """SIGTERM to this process when ``parent`` exits (Linux; elsewhere nothing); exit if it has."""
    import signal
    import sys

    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(1)


def run_item(func: Callable[[Any], Any], key: str, payload: Any) -> Outcome:
    """Run one item and capture its failure as a reason (runs inside the worker)."""
    try:
        return Outcome(key, True, func(payload))
    except Exception as exc:  # noqa: BLE001 - one bad item never stops the cohort
        msg = f"{type(exc).__name__}: {exc}".strip()
        if os.environ.get("BIOMARKERS_DEBUG"):
            msg += "\n" + traceback.format_exc()
        return Outcome(key, False, error=msg)


_initialised = False


def _run_item_dask(func, key, payload):
    global _initialised
    if not _initialised:
        _worker_init()
        _initialised = True
    return run_item(func, key, payload)


class Executor(ABC):
    """Runs independent items; see module docstring."""

    workers: int = 1
    name: str = "executor"

    @abstractmethod
    def map_unordered(self, func: Callable[[Any], Any], items: Iterable[tuple[str, Any]]) -> Iterator[Outcome]:
        """Yield one Outcome per (key, payload) item, in completion order."""

    def close(self) -> None:
        """Release the workers (after an interruption, :func:`biomarkers.interrupts.received`, without
        waiting for the items in flight)."""

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def describe(self) -> str:
        return f"{self.name} ({self.workers} worker{'s' if self.workers != 1 else ''})"


class SerialExecutor(Executor):
    name = "serial"

    def map_unordered(self, func, items):
        for key, payload in items:
            yield run_item(func, key, payload)


class LocalExecutor(Executor):
    """A local process pool (one thread per worker process).

    ``preload``: modules every worker imports when it starts (e.g. ``radiomics`` when the
    pool will extract features), so the import overlaps with the coordinator's planning
    instead of delaying the first work item of each worker.

    ``context``: how workers start. ``spawn`` (default): fresh interpreters that import what
    they need (~0.5-1 s of CPU each). ``fork`` (Linux): copies of the coordinator, which
    start in milliseconds with its modules (``preload`` imported by the coordinator first)
    and share its memory pages until they write them; used only when the pool is started from the main thread of a
    process running no other Python thread (a fork copies locks held by other threads),
    else ``spawn``. Forked workers die with the coordinator (see :func:`_worker_init`).
    """

    name = "local"
    CONTEXTS = ("spawn", "fork")

    def __init__(self, workers: int | None = None, preload: tuple[str, ...] = (), context: str = "spawn"):
        self.workers = int(workers or os.cpu_count() or 1)
        if self.workers < 1:
            raise ConfigError(f"executor workers must be >= 1, got {self.workers}")
        if context not in self.CONTEXTS:
            raise ConfigError(f"executor context {context!r}: use one of {', '.join(self.CONTEXTS)}")
        self.preload = tuple(preload)
        self.context = context
        self.started_with: str | None = None  # the start method of the running pool
        self._pool = None

    def _start_method(self) -> str:
        """``fork`` when asked for and safe here (see the class docstring), else ``spawn``."""
        import multiprocessing as mp
        import sys
        import threading

        if (self.context == "fork" and sys.platform.startswith("linux") and "fork" in mp.get_all_start_methods()
                and threading.current_thread() is threading.main_thread() and threading.active_count() == 1):
            return "fork"
        return "spawn"  # also on macOS, where system libraries are not fork-safe

    def _ensure(self):
        if self._pool is None:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            method = self._start_method()
            initargs = (self.preload, os.getpid()) if method == "fork" else (self.preload,)
            if method == "fork":  # imported once, here: the forked workers share them
                _import(self.preload)
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers, mp_context=mp.get_context(method), initializer=_worker_init,
                initargs=initargs,
            )
            # launches the workers now (fork: all; spawn: the first), SIGINT blocked (:meth:`_submit`); not
            # around the constructor: a spawning pool starts multiprocessing's resource tracker there, which
            # unblocks SIGINT after starting it
            self._submit(self._pool, os.getpid)
            self.started_with = method
        return self._pool

    @staticmethod
    def _submit(pool, *args):
        """``pool.submit`` with SIGINT blocked: a spawning pool starts further workers on demand, inside
        ``submit`` (a forking one starts them all in :meth:`_ensure`), and they inherit the mask."""
        from .interrupts import sigint_blocked

        with sigint_blocked():
            return pool.submit(*args)

    def start(self) -> None:
        """Start every worker now, without waiting (they import their ``preload`` modules)."""
        pool = self._ensure()
        for _ in range(self.workers):
            self._submit(pool, os.getpid)

    def map_unordered(self, func, items):
        """See :meth:`Executor.map_unordered`.

        A worker process that dies (killed, out of memory) breaks the whole process pool and
        every item in flight with it. The pool is then replaced and the items that were in
        flight are rerun one at a time: an item that breaks the pool while running alone is
        reported as failed ("worker process died"), the others complete normally. So a lost
        worker loses only its own item.
        """
        from collections import deque
        from concurrent.futures import FIRST_COMPLETED, wait
        from concurrent.futures.process import BrokenProcessPool

        pool = self._ensure()
        window = 2 * self.workers
        pending: dict = {}  # future -> (key, payload, isolated?, pool it was submitted to)
        suspects: deque = deque()  # items in flight when the pool broke: rerun alone
        it = iter(items)
        exhausted = False
        try:
            while True:
                limit = 1 if suspects else window
                while len(pending) < limit:
                    if suspects:
                        key, payload = suspects.popleft()
                        alone = True
                    elif not exhausted:
                        try:
                            key, payload = next(it)
                        except StopIteration:
                            exhausted = True
                            break
                        alone = False
                    else:
                        break
                    try:
                        fut = self._submit(pool, run_item, func, key, payload)
                    except (BrokenProcessPool, RuntimeError):  # the pool broke (or was shut down) meanwhile
                        pool.shutdown(wait=False, cancel_futures=True)
                        self._pool = None
                        pool = self._ensure()
                        fut = self._submit(pool, run_item, func, key, payload)
                    pending[fut] = (key, payload, alone, pool)
                if not pending:
                    return
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    key, payload, alone, fut_pool = pending.pop(fut)
                    try:
                        outcome = fut.result()
                    except BrokenProcessPool:
                        if fut_pool is pool:  # first item seen from this break: replace the pool
                            pool.shutdown(wait=False, cancel_futures=True)
                            self._pool = None
                            pool = self._ensure()
                        if not alone:
                            suspects.append((key, payload))
                            continue
                        outcome = Outcome(key, False, error="worker process died (out of memory or killed)")
                    except Exception as exc:  # pickling errors etc.
                        outcome = Outcome(key, False, error=f"{type(exc).__name__}: {exc}")
                    yield outcome
        finally:  # consumer stopped early (or error): do not leave work running
            for fut in pending:
                fut.cancel()

    def close(self) -> None:
        """Shut the pool down and join its workers (none is left after this returns). After an
        interruption the workers are terminated instead of finishing their items (whose
        partial writes are temporary files)."""
        from .interrupts import received

        pool, self._pool = self._pool, None
        if pool is None:
            return
        if received() is None:
            pool.shutdown(wait=True, cancel_futures=True)
            return
        procs = list((getattr(pool, "_processes", None) or {}).values())
        for p in procs:
            with contextlib.suppress(Exception):
                p.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        for p in procs:
            p.join(timeout=3)
            if p.is_alive():
                p.kill()
                p.join(timeout=2)


class DaskExecutor(Executor):
    """Items run on a dask.distributed cluster (an existing scheduler, or a Client)."""

    name = "dask"

    def __init__(self, address: str | None = None, client=None):
        from distributed import Client

        self._own = client is None
        if client is None:
            try:
                client = Client(address, timeout="30s")
            except (OSError, TimeoutError) as err:
                raise ConfigError(f"executor dask: cannot connect to the dask scheduler at {address} ({err}); "
                                  "start one with 'dask scheduler' and workers with 'dask worker ADDRESS'") from None
        self.client = client
        self.address = address or self.client.scheduler.address
        if not self._threads():
            try:  # a cluster that is still starting: wait a little for a worker
                self.client.wait_for_workers(1, timeout=60)
            except (TimeoutError, OSError):
                if self._own:
                    self.client.close()
                raise ConfigError(f"executor dask: no worker is connected to the scheduler at {self.address}") from None
        self.workers = max(1, self._threads())

    def _threads(self) -> int:
        info = self.client.scheduler_info()
        return sum(w.get("nthreads", 1) for w in info.get("workers", {}).values())

    def map_unordered(self, func, items):
        from distributed import as_completed

        self.workers = max(1, self._threads())  # the cluster may have grown or shrunk
        window = 2 * self.workers
        it = iter(items)
        ac = as_completed()
        keys: dict = {}

        def submit_next() -> bool:
            try:
                key, payload = next(it)
            except StopIteration:
                return False
            fut = self.client.submit(_run_item_dask, func, key, payload, pure=False, retries=1)
            keys[fut.key] = key
            ac.add(fut)
            return True

        for _ in range(window):
            if not submit_next():
                break
        try:
            for fut in ac:
                key = keys.pop(fut.key)
                try:
                    outcome = fut.result()
                except Exception as exc:  # KilledWorker (after a retry), lost connection...
                    outcome = Outcome(key, False, error=f"{type(exc).__name__}: {exc}")
                fut.release()
                submit_next()
                yield outcome
        finally:  # consumer stopped early (or error): cancel what is still queued on the cluster
            rest = list(ac.futures) if hasattr(ac, "futures") else []
            if rest:
                self.client.cancel(rest)

    def close(self) -> None:
        from .interrupts import received

        if self._own:
            self.client.close(timeout=5 if received() is not None else "30s")

    def describe(self) -> str:
        return f"dask ({self.address}, {self.workers} threads)"


def check_spec(spec: str | None) -> tuple[str, int | str | None]:
    """Validate an executor spec without starting anything (``--dry-run`` uses it): returns
    ``(kind, argument)``: ``("serial", None)``, ``("local", N or None)``, ``("dask", "tcp://HOST:PORT")``.

    Raises:
        ConfigError: an unknown spec, ``local:N`` with N not a positive integer, a dask address without port.
    """
    spec = (spec or "local").strip()
    if spec == "serial":
        return "serial", None
    if spec == "local" or spec.startswith("local:"):
        if ":" not in spec:
            return "local", None
        try:
            n = int(spec.split(":", 1)[1])
        except ValueError:
            raise ConfigError(f"executor {spec!r}: expected local:N with N an integer") from None
        if n < 1:
            raise ConfigError(f"executor {spec!r}: local:N needs N >= 1 worker processes (or 'local' for one per core)")
        return "local", n
    if spec.startswith("dask://") or spec.startswith("tcp://"):
        host, _, port = spec.split("://", 1)[1].rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"executor {spec!r}: expected dask://HOST:PORT (the scheduler's address)")
        return "dask", "tcp://" + spec.split("://", 1)[1]
    raise ConfigError(f"unknown executor {spec!r}: use 'local', 'local:N', 'serial' or 'dask://HOST:PORT'")


def get_executor(spec: str | None = None, workers: int | None = None, preload: tuple[str, ...] = (),
                 context: str = "spawn") -> Executor:
    """Build an executor from a spec string (see module docstring and :func:`check_spec`).

    ``preload``: modules a local pool's workers import as they start (ignored elsewhere:
    dask workers are long-lived and import once). ``context``: how a local pool's workers
    start (:class:`LocalExecutor`).
    """
    kind, arg = check_spec(spec)
    if kind == "serial":
        return SerialExecutor()
    if kind == "local":
        return LocalExecutor(arg if arg is not None else workers, preload=preload, context=context)
    return DaskExecutor(arg)
