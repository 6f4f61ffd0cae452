"""Experiment specifications (``experiments/*.yaml``) validated by pydantic.

Example::

    name: demo-outcome                 # MLflow experiment name
    input:
      table: ../work/demo/analysis.parquet   # relative to this file
      id_column: patient_id
      centre_column: centre
    target: {column: outcome, positive: 1}
    cohort:
      - {column: modality_ok, op: "==", value: true}
    features:
      modalities: [CT]
      image_types: [original]          # fnmatch patterns, e.g. "wavelet-*"
      feature_classes: [firstorder, glcm]
    pipelines:
      - name: lr_combat
        harmonize: combat
        redundancy: 0.9
        select: {method: univariate, k: 10}
        model: {type: logistic}
        grid: {model__C: [0.1, 1.0]}
    validation: {outer_folds: 5, outer_repeats: 1, inner_folds: 3, bootstrap: 1000}
    registered_model: demo-outcome-model
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from ..config import Settings, load_yaml

FilterOp = Literal["==", "!=", "<", "<=", ">", ">=", "in", "not in", "notna", "isna"]


class InputSpec(Settings):
    """The analysis table (Parquet or CSV; one row per patient), or a partner release folder.

    A release folder (``biomarkers release`` output) is verified against its manifest
    checksums and its features and clinical tables are joined per patient, feature columns
    prefixed ``<MODALITY>_`` (see :func:`biomarkers.release.read_table`).
    """

    table: Path | None = None
    #: ``LAKE@VERSION`` (instead of ``table``): one row per (site, patient) of that lake version
    #: (:meth:`biomarkers.lake.Lake.analysis_table`); the centre column then defaults to ``site``,
    #: so ComBat harmonises by site. The version is required (an experiment must be reproducible).
    lake: str | None = None
    id_column: str = "patient_id"
    centre_column: str | None = "centre"

    @model_validator(mode="before")
    @classmethod
    def _site_is_the_batch(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("lake") is not None and "centre_column" not in data:
            data = {**data, "centre_column": "site"}
        return data

    @model_validator(mode="after")
    def _one_source(self) -> "InputSpec":
        if (self.table is None) == (self.lake is None):
            raise ValueError("give exactly one of input.table and input.lake")
        if self.lake is not None:
            head, sep, tail = self.lake.rpartition("@")
            if not (sep and head and tail.isdigit()):
                raise ValueError(f"input.lake {self.lake!r} must name a version: LAKE@VERSION (e.g. lake@3)")
        return self


class TargetSpec(Settings):
    """The prediction target.

    ``binary``: ``column`` holds the outcome, ``positive`` its positive value.
    ``survival`` (time to event): ``time`` is the follow-up time column (any positive unit,
    e.g. days), ``column`` the event indicator (``positive`` = event observed, anything
    else = censored). Models predict a risk score; the metric is Harrell's C-index.
    """

    column: str = "outcome"
    kind: Literal["binary", "survival"] = "binary"
    positive: Any = 1
    time: str | None = None

    @model_validator(mode="after")
    def _time_for_survival(self) -> "TargetSpec":
        if self.kind == "survival" and not self.time:
            raise ValueError("target.kind survival needs target.time (the follow-up time column)")
        return self


class CohortFilter(Settings):
    """Keep rows where ``column op value`` holds (``notna``/``isna`` take no value)."""

    column: str
    op: FilterOp = "=="
    value: Any = None


class FeatureSubset(Settings):
    """Which feature columns to use.

    Radiomics columns are named ``[<MODALITY>_]<image_type>_<feature_class>_<feature>``.
    ``modalities``/``image_types``/``feature_classes`` are lists of fnmatch patterns
    (``None`` = any). ``include`` adds explicit columns (e.g. clinical variables),
    ``regex`` keeps only matching radiomics columns, ``exclude_regex`` drops columns.
    """

    modalities: list[str] | None = None
    image_types: list[str] | None = None
    feature_classes: list[str] | None = None
    include: list[str] = Field(default_factory=list)
    regex: str | None = None
    exclude_regex: str | None = None
    max_missing_fraction: float = Field(0.5, ge=0.0, le=1.0)


class SelectSpec(Settings):
    method: Literal["none", "univariate", "l1", "mrmr"] = "univariate"
    k: int = Field(10, ge=1)


BINARY_MODELS = ("logistic", "random_forest", "svm", "gradient_boosting")
SURVIVAL_MODELS = ("cox", "random_survival_forest")


class ModelSpec(Settings):
    """``params`` go to the estimator (for ``svm``: to the SVC inside a Platt calibration).

    Binary targets: logistic, random_forest, svm, gradient_boosting. Survival targets
    (scikit-survival): cox (ridge-penalised Cox PH, ``alpha``), random_survival_forest.
    """

    type: Literal["logistic", "random_forest", "svm", "gradient_boosting", "cox", "random_survival_forest"] = "logistic"
    params: dict[str, Any] = Field(default_factory=dict)


class PipelineSpec(Settings):
    """One candidate pipeline: impute -> harmonise -> scale -> redundancy -> select -> model.

    ``grid`` is the inner-CV search space with scikit-learn step names: ``model__C``,
    ``select__k``, ``redundancy__threshold``...
    """

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    impute: Literal["median", "mean"] = "median"
    #: ``combat``: ComBat location/scale by centre (neuroHarmonize, no EB shrinkage);
    #: ``combat_eb``: with empirical Bayes shrinkage (for centres with very few patients)
    harmonize: Literal["none", "combat", "combat_eb"] = "none"
    scale: Literal["none", "standard", "robust"] = "standard"
    redundancy: float | None = Field(0.9, gt=0.0, le=1.0)
    select: SelectSpec = SelectSpec()
    model: ModelSpec = ModelSpec()
    grid: dict[str, list[Any]] = Field(default_factory=dict)


class ValidationSpec(Settings):
    """Nested CV and uncertainty settings."""

    outer_folds: int = Field(5, ge=2)
    outer_repeats: int = Field(1, ge=1)
    inner_folds: int = Field(3, ge=2)
    search: Literal["grid", "random"] = "grid"
    n_iter: int = Field(10, ge=1)
    #: inner-search criterion; default: roc_auc (binary), Harrell's C-index (survival)
    scoring: Literal["roc_auc", "balanced_accuracy", "neg_brier_score"] | None = None
    bootstrap: int = Field(1000, ge=0)
    confidence: float = Field(0.95, gt=0.5, lt=1.0)
    permutations: int = Field(0, ge=0)
    threshold: float = Field(0.5, gt=0.0, lt=1.0)
    heldout_centre: str | None = None
    seed: int = 0
    n_jobs: int = 1


class ExperimentSpec(Settings):
    """A modelling experiment: one MLflow parent run with one child run per pipeline."""

    name: str = Field(min_length=1)
    description: str = ""
    input: InputSpec
    target: TargetSpec = TargetSpec()
    cohort: list[CohortFilter] = Field(default_factory=list)
    features: FeatureSubset = FeatureSubset()
    pipelines: list[PipelineSpec] = Field(min_length=1)
    validation: ValidationSpec = ValidationSpec()
    registered_model: str | None = None
    log_models: bool = True

    @field_validator("pipelines")
    @classmethod
    def _unique_names(cls, v: list[PipelineSpec]) -> list[PipelineSpec]:
        names = [p.name for p in v]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"pipeline names must be unique (repeated: {', '.join(dup)})")
        return v

    @model_validator(mode="after")
    def _models_match_target(self) -> "ExperimentSpec":
        ok = SURVIVAL_MODELS if self.target.kind == "survival" else BINARY_MODELS
        bad = [f"{p.name} ({p.model.type})" for p in self.pipelines if p.model.type not in ok]
        if bad:
            raise ValueError(f"pipelines {bad}: model type not usable for a {self.target.kind} target "
                             f"(use one of {', '.join(ok)})")
        if self.target.kind == "survival":
            bad = [p.name for p in self.pipelines if p.select.method == "l1"]
            if bad:
                raise ValueError(f"pipelines {bad}: select.method l1 is for binary targets (use univariate or mrmr)")
            if self.validation.scoring is not None:
                raise ValueError("validation.scoring applies to binary targets (survival uses the C-index)")
        return self

    @model_validator(mode="after")
    def _combat_needs_centre(self) -> "ExperimentSpec":
        if self.input.centre_column is None:
            bad = [p.name for p in self.pipelines if p.harmonize != "none"]
            if bad:
                raise ValueError(f"pipelines {bad} use ComBat harmonisation but input.centre_column is null")
            if self.validation.heldout_centre is not None:
                raise ValueError("validation.heldout_centre needs input.centre_column")
        return self

    def resolve(self, base_dir: str | Path) -> "ExperimentSpec":
        """A copy with ``input.table`` made absolute relative to ``base_dir`` (the spec's folder)."""
        table = self.input.table
        if table is None:  # input.lake: a local lake path is relative to the spec's folder too
            head, _, version = (self.input.lake or "").rpartition("@")
            if "://" not in head and not Path(head).is_absolute():
                lake = f"{(Path(base_dir) / head).resolve()}@{version}"
                return self.model_copy(update={"input": self.input.model_copy(update={"lake": lake})})
            return self
        if not table.is_absolute():
            table = (Path(base_dir) / table).resolve()
        return self.model_copy(update={"input": self.input.model_copy(update={"table": table})})


def load_spec(path: str | Path) -> ExperimentSpec:
    """Read and validate an experiment YAML; ``input.table`` is resolved relative to the file."""
    path = Path(path)
    return load_yaml(path, ExperimentSpec).resolve(path.parent)
