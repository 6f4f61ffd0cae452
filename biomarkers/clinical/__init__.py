"""Clinical linkage: declared schema, validated loading, pseudonymised join with features."""

from .load import ClinicalValidationError, Issue, ValidationReport, load_clinical
from .schema import CentreSpec, ClinicalSchema, PatientIdSpec, VariableSpec, load_schema

__all__ = [
    "CentreSpec", "ClinicalSchema", "ClinicalValidationError", "Issue", "PatientIdSpec", "ValidationReport",
    "VariableSpec", "load_clinical", "load_schema",
]
