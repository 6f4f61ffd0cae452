"""An MLflow run logged from a helper process, so MLflow's import is off the critical path.

Importing MLflow and its SQL store (SQLAlchemy models, alembic) costs 2-3 s of CPU in
every process that logs. A :class:`Tracker` starts one helper process that imports it
as soon as :meth:`Tracker.start` is called (e.g. when a pipeline starts working), while
the caller goes on; :meth:`Tracker.call` later runs :func:`open_run` and
:func:`finish_run` there. If the helper process is not started or has died, the same
functions run in the calling process: the result is the same, only slower.

Jobs are plain dicts (picklable); paths in them are files to log, never logged as params.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Callable

from ..errors import BiomarkersError

#: What the helper process imports when it starts.
PRELOAD = ("mlflow", "mlflow.store.tracking.sqlalchemy_store", "biomarkers.tracking")


class TrackingFailed(BiomarkersError):
    """Logging to MLflow failed (the message is MLflow's error)."""


def open_run(job: dict) -> str:
    """Create a run; returns its id.

    ``job``: ``uri``, ``experiment`` (created if missing), ``run_name``, ``start_time_ms``, ``tags``.
    """
    from .store import client, get_or_create_experiment

    exp = get_or_create_experiment(job["experiment"], job["uri"])
    run = client(job["uri"]).create_run(exp, run_name=job["run_name"], start_time=job["start_time_ms"],
                                        tags=job.get("tags") or {})
    return run.info.run_id


def finish_run(job: dict) -> None:
    """Log to run ``job["run_id"]`` and end it.

    ``job``: ``uri``, ``run_id``, ``params`` (dict), ``metrics`` (list of ``[key, value, timestamp_ms]``),
    ``tags`` (dict), ``datasets`` (list of the keyword arguments of :func:`biomarkers.tracking.log_feature_set`:
    ``table_path``, ``name``, optional ``context``, ``digest``), ``artifacts`` (list of ``[file or folder,
    artifact folder]``),
    ``status`` (``FINISHED`` or ``FAILED``).
    """
    import mlflow
    from mlflow.entities import Metric, Param, RunTag

    from .datasets import log_feature_set
    from .store import client, using_tracking

    uri, run_id = job["uri"], job["run_id"]
    with using_tracking(uri), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module=r"mlflow\..*")
        with mlflow.start_run(run_id=run_id):
            client(uri).log_batch(
                run_id,
                metrics=[Metric(k, float(v), int(ts), 0) for k, v, ts in job.get("metrics", [])],
                params=[Param(k, str(v)) for k, v in (job.get("params") or {}).items()],
                tags=[RunTag(k, str(v)) for k, v in (job.get("tags") or {}).items()],
            )
            for dataset in job.get("datasets", []):
                log_feature_set(**dataset)
            for path, folder in job.get("artifacts", []):
                if os.path.isdir(path):  # a folder (e.g. the QC report with its thumbnails): its files
                    mlflow.log_artifacts(str(path), artifact_path=folder)
                else:
                    mlflow.log_artifact(str(path), artifact_path=folder)
            mlflow.end_run(status=job.get("status", "FINISHED"))


def kill_run(job: dict) -> str:
    """End run ``job["run_id"]`` (created by :func:`open_run` from ``job`` when None) as KILLED, with
    ``job["tags"]``; returns its id. For an interrupted command (:mod:`biomarkers.interrupts`)."""
    from mlflow.entities import RunTag

    from .store import client

    c = client(job["uri"])
    run_id = job.get("run_id") or open_run(job)
    c.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in (job.get("tags") or {}).items()])
    c.set_terminated(run_id, status="KILLED")
    return run_id


class Tracker:
    """Runs MLflow jobs in a helper process that imported MLflow in advance (see module docstring)."""

    def __init__(self) -> None:
        self._ex = None

    def start(self, force: bool = False) -> None:
        """Start the helper process now (it imports MLflow while the caller works); idempotent.

        Unless ``force``, nothing is started when this process has already imported MLflow's
        store (the jobs then cost nothing to run here).
        """
        import sys

        if self._ex is None and (force or PRELOAD[1] not in sys.modules):
            from ..executors import LocalExecutor

            self._ex = LocalExecutor(1, preload=PRELOAD)
            self._ex.start()

    def call(self, func: Callable[[dict], Any], job: dict) -> Any:
        """``func(job)`` in the helper process (in this process if it is not available).

        Raises :class:`TrackingFailed` with MLflow's error when the job itself fails.
        """
        if self._ex is not None:
            outcome = next(iter(self._ex.map_unordered(func, [("mlflow", job)])))
            if outcome.ok:
                return outcome.value
            if not (outcome.error or "").startswith("worker process died"):
                raise TrackingFailed(outcome.error or "unknown error")
            self.close()
        try:
            return func(job)
        except Exception as err:  # noqa: BLE001 - one message for both paths
            raise TrackingFailed(f"{type(err).__name__}: {err}") from None

    def close(self) -> None:
        """Stop the helper process (terminated at once after an interruption: see
        :meth:`biomarkers.executors.LocalExecutor.close`)."""
        if self._ex is not None:
            self._ex.close()
            self._ex = None
