"""The stages of ``biomarkers run``: one module each, exporting ``STAGE`` (see :mod:`biomarkers.pipeline.stage`).

Modules are imported by :func:`biomarkers.pipeline.stage.registry` (a module whose name
starts with ``_`` is not a stage). Run order: ingest (10), extract (20), clinical (30),
link (40), tracking (50, deferred: runs last), experiments (60), release (70).
"""
