"""Partner releases: versioned, immutable, documented, privacy-checked feature tables."""

from .build import (
    ReleaseExistsError, ReleaseResult, build_release, existing_versions, log_release, next_version, schema_changes,
    write_archive,
)
from .config import FeatureSelection, PrivacySettings, ReleaseConfig, load_release_config
from .reader import read_release_table, read_table, verify_release

__all__ = [
    "FeatureSelection", "PrivacySettings", "ReleaseConfig", "ReleaseExistsError", "ReleaseResult", "build_release",
    "existing_versions", "load_release_config", "log_release", "next_version", "read_release_table", "read_table",
    "schema_changes", "verify_release", "write_archive",
]
