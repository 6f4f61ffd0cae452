"""Biomarker modelling: experiment specs, leakage-free scikit-learn pipelines, nested CV, MLflow.

Public API::

    from biomarkers.modeling import load_spec, run_experiment, leaderboard, predict_table
"""

from .spec import ExperimentSpec, PipelineSpec, ValidationSpec, load_spec

__all__ = ["ExperimentSpec", "PipelineSpec", "ValidationSpec", "load_spec", "run_experiment", "leaderboard",
           "predict_table", "build_pipeline", "nested_cv"]


def __getattr__(name):  # lazy: importing biomarkers.modeling does not import mlflow/sklearn
    if name in ("run_experiment", "leaderboard", "predict_table", "ExperimentResult"):
        from . import experiment

        return getattr(experiment, name)
    if name == "build_pipeline":
        from .pipelines import build_pipeline

        return build_pipeline
    if name == "nested_cv":
        from .validation import nested_cv

        return nested_cv
    raise AttributeError(name)
