"""``PipelineConfig``: the YAML of ``biomarkers run`` (one section per stage, each the stage's own settings).

``configs/pipeline.yaml`` shows every key with its default; relative paths are relative to the
config file; unknown keys are errors naming the file and the dotted key.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import Any, Union

from pydantic import ConfigDict, Field, create_model, field_validator, model_validator

from biomarkers.clinical.schema import ClinicalSchema
from biomarkers.config import Settings, read_yaml, validate
from biomarkers.deid import DeidSettings
from biomarkers.dicom.settings import IngestSettings
from biomarkers.errors import ConfigError
from biomarkers.io import sha256_json
from biomarkers.modeling.spec import ExperimentSpec


class SourceSection(Settings):
    """Inputs of the pipeline."""

    dicom: Path = Field(description="folder of DICOM files (searched recursively): the ingest SRC")
    clinical: list[str] = Field(default_factory=list, description="clinical files (CSV/XLSX) or globs")


class TrackingSection(Settings):
    """Where the pipeline's MLflow run (and the experiments' runs) are logged."""

    #: MLflow tracking URI; a bare path is relative to the config file (``*.db``: a SQLite store).
    #: Default: env MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db.
    uri: str | None = None
    experiment: str = "biomarkers-pipeline"
    enabled: bool = True


class ExtractSection(Settings):
    """Feature extraction: pyradiomics parameter files, one per modality or one for all (``"*"``)."""

    enabled: bool = True
    params: dict[str, Path] | Path = Field(description="parameter file, or {MODALITY: file}")


class ClinicalSection(Settings):
    """Clinical loading and linkage (``schema``: a file or the schema inline)."""

    enabled: bool = True
    schema_: Union[Path, ClinicalSchema] = Field(alias="schema")

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, populate_by_name=True)


class ExperimentsSection(Settings):
    """Modelling experiments run on the pipeline's analysis table."""

    run: bool = False
    specs: list[Path] = Field(default_factory=list)  # experiment YAML files (relative to the config file)
    inline: list[ExperimentSpec] = Field(default_factory=list)
    #: Replace each spec's ``input.table`` by the analysis table this pipeline produced.
    use_pipeline_table: bool = True


class ReleaseSection(Settings):
    """Partner release of the analysis table (``biomarkers.release``)."""

    enabled: bool = False
    config: Path | None = None  # release config YAML (relative to the config file)


class PipelineConfig(Settings):
    """The whole pipeline (``biomarkers run CONFIG.yaml``)."""

    name: str = Field("pipeline", pattern=r"^[A-Za-z0-9_.-]+$")
    source: SourceSection
    out: Path
    executor: str = "local"
    tracking: TrackingSection = Field(default_factory=TrackingSection)
    deid: DeidSettings = Field(default_factory=DeidSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    extract: ExtractSection
    clinical: ClinicalSection | None = None
    experiments: ExperimentsSection = Field(default_factory=ExperimentsSection)
    release: ReleaseSection = Field(default_factory=ReleaseSection)

    @field_validator("ingest")
    @classmethod
    def _no_ingest_deid(cls, v):
        if "deid" in v.model_fields_set:
            raise ValueError("set de-identification in the top-level 'deid' section (it applies to imaging and "
                             "clinical data alike), not under ingest")
        return v

    @model_validator(mode="after")
    def _check(self):
        if self.experiments.run and not (self.experiments.specs or self.experiments.inline):
            raise ValueError("experiments.run is true but neither experiments.specs nor experiments.inline is given")
        if self.experiments.run and self.experiments.use_pipeline_table and self.clinical is None:
            raise ValueError("experiments need the analysis table: add a clinical section (schema) or set "
                             "experiments.use_pipeline_table: false")
        return self

    # ------------------------------------------------------------------ helpers
    def resolved(self, base_dir: str | Path) -> "PipelineConfig":
        """A copy with every relative path made absolute relative to ``base_dir`` (the config's folder)."""
        base = Path(base_dir).resolve()

        def r(p: Path | None) -> Path | None:
            return None if p is None else (p if p.is_absolute() else (base / p).resolve())

        upd: dict[str, Any] = {
            "out": r(self.out),
            "source": self.source.model_copy(update={
                "dicom": r(self.source.dicom),
                "clinical": [os.path.normpath(c if Path(c).is_absolute() else str(base / c)) for c in self.source.clinical],
            }),
        }
        params = self.extract.params
        upd["extract"] = self.extract.model_copy(update={
            "params": {k: r(v) for k, v in params.items()} if isinstance(params, dict) else r(params)})
        if self.clinical is not None and isinstance(self.clinical.schema_, Path):
            upd["clinical"] = self.clinical.model_copy(update={"schema_": r(self.clinical.schema_)})
        upd["experiments"] = self.experiments.model_copy(update={"specs": [r(p) for p in self.experiments.specs]})
        upd["release"] = self.release.model_copy(update={"config": r(self.release.config)})
        uri = self.tracking.uri
        if uri and "://" not in uri:  # a local path: a SQLite file (*.db) or a file store folder
            path = r(Path(uri))
            upd["tracking"] = self.tracking.model_copy(
                update={"uri": f"sqlite:///{path.as_posix()}" if uri.endswith(".db") else path.as_posix()})
        return self.model_copy(update=upd)

    def ingest_settings(self):
        """The ingest settings with the pipeline's de-identification section."""
        return self.ingest.model_copy(update={"deid": self.deid})

    def config_hash(self) -> str:
        """SHA-256 of the validated configuration (canonical JSON; paths as resolved)."""
        return sha256_json(self.model_dump(mode="json", by_alias=True))


def load_config(path: str | Path, overrides: dict | None = None) -> PipelineConfig:
    """Read ``path``, apply top-level ``overrides`` (e.g. ``{"executor": ...}``), validate and resolve paths.

    Raises:
        ConfigError: naming the file and the dotted key of every problem.
    """
    path = Path(path)
    data = read_yaml(path) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (name, source, out, ...)")
    for k, v in (overrides or {}).items():
        if v is not None:
            data[k] = v
    return validate(config_model(), data, source=str(path)).resolved(path.parent)


def config_from_dict(data: dict, base_dir: str | Path, source: str = "<config>") -> PipelineConfig:
    """Validate an in-memory config (the demo's embedded defaults) and resolve its paths against ``base_dir``."""
    return validate(config_model(), data, source=source).resolved(base_dir)


@cache
def config_model() -> type[PipelineConfig]:
    """:class:`PipelineConfig` with a section for every registered stage declaring ``settings`` (see
    :class:`~biomarkers.pipeline.stage.Stage`); the class itself when no stage adds one."""
    from .stage import registry

    extra = {s.name: (s.settings, Field(default_factory=s.settings)) for s in registry()
             if s.settings is not None and s.name not in PipelineConfig.model_fields}
    return create_model("PipelineConfig", __base__=PipelineConfig, **extra) if extra else PipelineConfig
