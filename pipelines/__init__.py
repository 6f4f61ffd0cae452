"""Compatibility import: the pipeline lives in :mod:`biomarkers.pipeline` (``import pipelines`` still works)."""

from biomarkers.pipeline import *  # noqa: F401,F403
from biomarkers.pipeline import __all__  # noqa: F401
