"""The kinds of MLflow run biomarkers creates, tagged in one place, and the experiment's parent/child runs."""

from __future__ import annotations

import contextlib
from enum import StrEnum

from .store import get_or_create_experiment, share_runs_view, using_tracking

#: Tag naming a run's kind (``tags.`biomarkers.run_kind` = 'experiment'`` finds experiments' parent runs).
RUN_KIND = "biomarkers.run_kind"


class RunKind(StrEnum):
    """What an MLflow run is (the tag ``biomarkers.run_kind``)."""

    EXPERIMENT = "experiment"  # parent run of a modelling experiment
    PIPELINE = "pipeline"  # a ``biomarkers run`` pipeline, or one modelling pipeline (child of an experiment)
    RELEASE = "release"  # a partner release


def run_tags(kind: RunKind, tags: dict | None = None) -> dict[str, str]:
    """The tags of a new run of ``kind`` (``tags`` added; they cannot change the kind)."""
    return {**(tags or {}), RUN_KIND: kind.value}


@contextlib.contextmanager
def parent_run(experiment: str, uri: str | None = None, run_name: str | None = None, tags: dict | None = None):
    """Start the parent run of an experiment (fluent API pointed at ``uri`` inside the block)."""
    import mlflow

    with using_tracking(uri) as u:
        exp_id = get_or_create_experiment(experiment, u)
        with mlflow.start_run(experiment_id=exp_id, run_name=run_name, tags=run_tags(RunKind.EXPERIMENT, tags)) as run:
            yield run
        try:  # the UI's view of the runs: child runs listed with their metrics (see share_runs_view)
            share_runs_view(exp_id, u)
        except Exception as err:  # noqa: BLE001 - a view is a convenience: never fail the experiment for it
            import warnings

            warnings.warn(f"MLflow runs view not stored: {type(err).__name__}: {err}", stacklevel=2)


@contextlib.contextmanager
def child_run(run_name: str, tags: dict | None = None):
    """A nested run (one modelling pipeline) under the active parent run."""
    import mlflow

    active = mlflow.active_run()
    exp_id = active.info.experiment_id if active else None
    with mlflow.start_run(experiment_id=exp_id, run_name=run_name, nested=True,
                          tags=run_tags(RunKind.PIPELINE, tags)) as run:
        yield run
