"""Visual quality control: ``OUT/qc/index.html``, a static page a person scans for a whole cohort.

One card per mask (series x ROI: slices through the ROI with its contour, QC flags, shape,
spacing, volume, extraction status and failure reasons), one card per image stack without a
mask, the skipped and failed cases with their reasons, and a cohort view (a sortable and
filterable table; distributions per centre and scanner with robust-z outliers; the centre
effect per feature family before and after ComBat; the MLflow runs with their plots).

* :func:`run_qc` builds the report (``biomarkers qc OUT``, pipeline stage ``qc``);
* :mod:`biomarkers.qc.display` owns the display conventions (radiological orientation, windows);
* :mod:`biomarkers.qc.render` renders thumbnails (in the executor's workers, cached by content);
* :mod:`biomarkers.qc.html` writes the page and documents its DOM contract.

Nothing is imported at import time beyond this package's own light modules.
"""

from __future__ import annotations

from .settings import QcSettings


def run_qc(*args, **kwargs):
    """See :func:`biomarkers.qc.report.run_qc`."""
    from .report import run_qc as _run

    return _run(*args, **kwargs)


__all__ = ["QcSettings", "run_qc"]
