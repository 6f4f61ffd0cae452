"""Release configuration (``configs/release.yaml``), validated by pydantic."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field, field_validator

from ..config import Settings, load_yaml
from ..features.naming import KEY_COLUMNS

SEMVER = re.compile(r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)$")


class FeatureSelection(Settings):
    """Which feature rows and columns are released."""

    include: list[str] = Field(default_factory=lambda: ["*"])  # fnmatch patterns on feature columns
    exclude: list[str] = Field(default_factory=list)
    modalities: list[str] | None = None  # None: all
    rois: list[str] | None = None  # None: all
    #: Key columns kept in features.parquet (``patient_id`` is always kept).
    key_columns: list[str] = Field(default_factory=lambda: list(KEY_COLUMNS))

    @field_validator("key_columns")
    @classmethod
    def _keys(cls, v: list[str]) -> list[str]:
        bad = [c for c in v if c not in KEY_COLUMNS]
        if bad:
            raise ValueError(f"unknown key column(s) {bad}; choose from {KEY_COLUMNS}")
        return ["patient_id"] + [c for c in v if c != "patient_id"]


class PrivacySettings(Settings):
    """Checks a release must pass."""

    k: int = Field(5, ge=1)  # every quasi-identifier combination must occur at least k times
    #: Clinical columns (after derivation of ``age_band``) whose combination may re-identify.
    quasi_identifiers: list[str] = Field(default_factory=lambda: ["age_band", "sex", "centre"])
    age_variable: str | None = "age"  # source of the derived ``age_band`` column
    age_band_years: int = Field(10, ge=1)


class Interval(Settings):
    """A derived variable: whole days from one date variable to another (dates themselves are never released)."""

    start: str
    end: str
    description: str = ""


class ReleaseConfig(Settings):
    """One partner release line (``name``); versions are given on the command line."""

    name: str
    title: str = ""
    description: str = ""
    partner: str = ""
    licence: str = ""
    #: Cohort definition, in words (recorded in the manifest and README).
    cohort: str = ""
    #: Clinical schema YAML (relative paths are relative to this config file).
    clinical_schema: str | None = None
    #: Clinical variables released (``age_band`` is derived from ``privacy.age_variable``; names of
    #: ``intervals`` may be listed too).
    clinical_variables: list[str] = Field(default_factory=list)
    #: Derived day counts between two date variables, e.g. ``{followup_days: {start: diagnosis_date, end: last_visit}}``.
    intervals: dict[str, Interval] = Field(default_factory=dict)
    features: FeatureSelection = Field(default_factory=FeatureSelection)
    privacy: PrivacySettings = Field(default_factory=PrivacySettings)
    #: MLflow experiment the releases are logged to.
    mlflow_experiment: str = "releases"

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", v):
            raise ValueError("release name: letters, digits, '_', '.', '-' only (it names folders)")
        return v


def load_release_config(path: str | Path) -> ReleaseConfig:
    return load_yaml(path, ReleaseConfig)
