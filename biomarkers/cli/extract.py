"""CLI commands of the extract stage (placeholder: filled in by its issue)."""

from ._app import app  # noqa: F401
