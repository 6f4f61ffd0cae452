"""End-to-end pipelines composing the biomarkers stages (``biomarkers run CONFIG.yaml``).

:class:`PipelineConfig` (YAML, one section per stage reusing each stage's settings),
:class:`~biomarkers.pipeline.stage.Stage` (one module per stage in :mod:`.stages`),
:class:`Pipeline` / :func:`run_pipeline` (stage-cached, resumable runs with one run
report and one MLflow run), and :mod:`.demo` (the synthetic demo).
"""

from .config import PipelineConfig, config_from_dict, load_config
from .runner import Pipeline, run_pipeline
from .stage import Context, Stage, StageFailed, StageOutcome, registry

__all__ = ["Context", "PipelineConfig", "Pipeline", "Stage", "StageFailed", "StageOutcome", "config_from_dict",
           "load_config", "registry", "run_pipeline"]
