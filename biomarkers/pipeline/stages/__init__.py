"""The stages of ``biomarkers run``: one module each exporting ``STAGE``, imported by
:func:`biomarkers.pipeline.stage.registry` (a module whose name starts with ``_`` is not a stage)."""
