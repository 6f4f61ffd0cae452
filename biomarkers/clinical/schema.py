"""The declared clinical schema (YAML validated by pydantic).

A schema names the canonical variables of the clinical table, their type, unit,
allowed values or range, value mappings, and how each centre's export names its
columns. Example (``configs/clinical_schema.yaml``)::

    patient_id: {column: patient_id, pattern: "^STS_[0-9]{3}$"}
    centre_column: centre
    join: series
    centres:
      B:
        files: ["*centre_b*"]
        columns: {"Patient ID": patient_id, "Age (years)": age, "Gender": sex}
        date_format: "%d.%m.%Y"
        decimal: ","
    variables:
      age: {type: float, unit: years, min: 0, max: 120, required: true, age: true}
      sex:
        type: category
        mandatory: true
        mapping: {M: male, "1": male, male: male, F: female, "2": female, female: female}
"""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Literal, Union

from pydantic import Field, model_validator

from ..config import Settings, load_yaml
from ..deid import DeidSettings

Scalar = Union[bool, int, float, str]
VariableType = Literal["float", "int", "str", "category", "bool", "date"]

DEFAULT_MISSING = ["", "NA", "N/A", "n/a", "na", "NaN", "nan", "null", "NULL", "None", "-", "."]


class VariableSpec(Settings):
    """One canonical clinical variable."""

    type: VariableType = "str"
    description: str = ""
    unit: str | None = None
    #: Allowed values (after mapping). For ``category`` with a mapping and no ``allowed``,
    #: the mapping's target values are the allowed values.
    allowed: list[Scalar] | None = None
    min: float | None = None  # inclusive lower bound (numbers)
    max: float | None = None  # inclusive upper bound (numbers)
    #: A row without a valid value is rejected (the rest of the load goes on).
    required: bool = False
    #: Every patient must have a valid value: otherwise the whole load is aborted.
    mandatory: bool = False
    #: Source value -> canonical value (matched after trimming, case-insensitive).
    mapping: dict[str, Scalar] = Field(default_factory=dict)
    #: What happens to an invalid value of a variable that is neither required nor mandatory.
    on_invalid: Literal["set_missing", "reject_row"] = "set_missing"
    #: Ages are capped at the de-identification ``max_age``.
    age: bool = False
    #: ``date``: strptime format; default: the centre's, then the schema's ``date_format``.
    date_format: str | None = None

    @model_validator(mode="after")
    def _check(self):
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        if (self.min is not None or self.max is not None) and self.type not in ("float", "int"):
            raise ValueError(f"min/max only apply to float and int variables, not {self.type}")
        return self

    def allowed_values(self) -> list | None:
        if self.allowed is not None:
            return list(self.allowed)
        if self.type == "category" and self.mapping:
            return sorted(set(self.mapping.values()), key=str)
        return None


class PatientIdSpec(Settings):
    column: str = "patient_id"  # canonical source column (centres may rename it)
    pattern: str | None = None  # regular expression every original id must match (full match)


class CentreSpec(Settings):
    """How one centre's export looks."""

    #: Glob patterns on the file name selecting this centre (else chosen by best column match).
    files: list[str] = Field(default_factory=list)
    #: Source column name -> canonical name (variables, the patient id column, the centre column).
    columns: dict[str, str] = Field(default_factory=dict)
    date_format: str | None = None
    decimal: Literal[".", ","] = "."
    sheet: str | int = 0  # Excel sheet name or index


class ClinicalSchema(Settings):
    """The whole clinical schema (file given to ``biomarkers link --schema``)."""

    patient_id: PatientIdSpec = Field(default_factory=PatientIdSpec)
    #: Canonical name of the column holding the centre; files without it take the name of
    #: the centre spec they match.
    centre_column: str = "centre"
    #: Analysis table layout: one row per patient x series x ROI, or one row per patient
    #: with ``<MODALITY>_<feature>`` columns.
    join: Literal["series", "patient"] = "series"
    #: Keep only patients present in both tables (``inner``) or every clinical patient (``left``).
    how: Literal["inner", "left"] = "inner"
    missing_values: list[str] = Field(default_factory=lambda: list(DEFAULT_MISSING))
    date_format: str = "%Y-%m-%d"
    centres: dict[str, CentreSpec] = Field(default_factory=dict)
    variables: dict[str, VariableSpec]
    #: De-identification (must equal the ingest's ``deid`` section so pseudonyms meet).
    deid: DeidSettings = Field(default_factory=DeidSettings)

    @model_validator(mode="after")
    def _check(self):
        reserved = {"patient_id", self.centre_column}
        bad = sorted(reserved & set(self.variables))
        if bad:
            raise ValueError(f"variables may not be named {bad}: reserved for the id and centre columns")
        canon = set(self.variables) | {self.patient_id.column, self.centre_column}
        for name, c in self.centres.items():
            unknown = sorted(set(c.columns.values()) - canon)
            if unknown:
                raise ValueError(f"centres.{name}.columns maps to unknown canonical names {unknown}")
        return self

    # --- helpers -----------------------------------------------------------------
    def canonical_columns(self) -> list[str]:
        """Columns of the loaded clinical table, in order."""
        return ["patient_id", "centre", *self.variables]

    def rename_map(self, centre: str | None) -> dict[str, str]:
        """Source -> canonical names for a centre (canonical names map to themselves)."""
        m = {v: v for v in self.variables}
        m[self.patient_id.column] = "patient_id"
        m[self.centre_column] = "centre"
        if centre is not None:
            for src, canon in self.centres[centre].columns.items():
                m[src] = "patient_id" if canon == self.patient_id.column else (
                    "centre" if canon == self.centre_column else canon)
        return m

    def centre_for_file(self, path: Path, header: list[str]) -> str | None:
        """The centre spec a file belongs to: by ``files`` glob, else the best column match.

        Returns None when the file uses the canonical names (no centre spec fits better).
        """
        for name, c in self.centres.items():
            if any(fnmatch.fnmatch(path.name, pat) for pat in c.files):
                return name
        cols = set(header)
        best, best_score = None, len(cols & set(self.rename_map(None)))
        for name in self.centres:
            score = len(cols & set(self.rename_map(name)))
            if score > best_score:
                best, best_score = name, score
        return best


def load_schema(path: str | Path) -> ClinicalSchema:
    """Read and validate a clinical schema YAML (errors name the file and key)."""
    return load_yaml(path, ClinicalSchema)
