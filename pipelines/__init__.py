"""End-to-end pipelines composing the biomarkers stages (``biomarkers run CONFIG.yaml``).

:class:`PipelineConfig` (YAML, one section per stage reusing each stage's settings),
:class:`Pipeline` / :func:`run_pipeline` (stage-cached, resumable runs with one run
report and one MLflow run), and :mod:`pipelines.demo` (the synthetic demo).
"""

from .config import PipelineConfig, config_from_dict, load_config
from .runner import Pipeline, run_pipeline

__all__ = ["PipelineConfig", "Pipeline", "run_pipeline", "load_config", "config_from_dict"]
