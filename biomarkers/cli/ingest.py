"""CLI commands of the ingest stage (placeholder: filled in by its issue)."""

from ._app import app  # noqa: F401
