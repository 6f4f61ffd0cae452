"""Compatibility import: the demo lives in :mod:`biomarkers.pipeline.demo`."""

from biomarkers.pipeline.demo import DEMO_EXPERIMENT, DEMO_PARAMS, DEMO_SCHEMA, centre_effect, demo_config, run_demo  # noqa: F401
