"""IBSI 2 convolutional filters (mean, LoG, Laws, Gabor, separable wavelets, Simoncelli, Riesz).

Entry points:

* :func:`response_map` -- image (z, y, x) + spacing (dz, dy, dx) mm + filter settings -> response map;
  with ``roi=`` only the region the ROI's responses depend on is filtered (same values there).
* :func:`filter_spec`, :func:`filter_entries` -- validated settings (:mod:`.settings`) from a
  parameter file's ``ibsi: filters:`` list (``id``, ``filter``, ``settings``).

Definitions: IBSI 2 reference manual (arXiv:2006.05470); each filter is checked voxel by voxel
against the IBSI 2 reference response maps (:mod:`biomarkers.features.filters.check`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

from .settings import (FILTERS, FilterEntry, GaborFilter, LawsFilter, LoGFilter, MeanFilter, NoFilter,
                       SimoncelliFilter, WaveletFilter, filter_entries, filter_spec)

#: bump when response maps can change (the extraction engine keys its incremental cache on it)
__version__ = "1.1.0"  # 1.1.0: closed-form rotation pooling, single-precision Simoncelli transfer (rounding-level changes)

__all__ = ["FILTERS", "FilterEntry", "GaborFilter", "LawsFilter", "LoGFilter", "MeanFilter", "NoFilter",
           "SimoncelliFilter", "WaveletFilter", "bounding_box", "filter_entries", "filter_spec", "response_map",
           "roi_box"]


def bounding_box(roi) -> list[tuple[int, int]]:
    """(first, last + 1) index of the True voxels of ``roi`` per array axis (by projections, not nonzero)."""
    import numpy as np

    roi = np.asarray(roi, bool)
    out = []
    for ax in range(roi.ndim):
        hit = np.flatnonzero(roi.any(axis=tuple(a for a in range(roi.ndim) if a != ax)))
        if not hit.size:
            from biomarkers.errors import InputError

            raise InputError("ROI mask is empty: no region to filter")
        out.append((int(hit[0]), int(hit[-1]) + 1))
    return out


def roi_box(roi, spec, spacing, bb=None) -> list[tuple[int, int]]:
    """Box (lo, hi per array axis, inside the image) the ROI's responses depend on.

    The ROI's bounding box widened by the filter's :func:`~.compute.margin` and clipped to the
    image: where it reaches the image border, the filter's own boundary rule applies there at
    every pass (as on the whole image); elsewhere the margin keeps the crop's edge out of the
    ROI's responses. Periodic boundaries use whole axes where the box reaches the border, and
    periodic Fourier-domain filters the whole image. ``bb``: the ROI's :func:`bounding_box`, if known.
    """
    from .compute import _fourier, margin

    bb = bounding_box(roi) if bb is None else bb
    if _fourier(spec) and spec.boundary == "periodic":
        return [(0, n) for n in roi.shape]  # the FFT of the whole image defines the response
    m = margin(spec, spacing, roi.shape)
    box = []
    for ax, ((b0, b1), n) in enumerate(zip(bb, roi.shape)):
        lo, hi = b0 - m[ax], b1 + m[ax]
        if spec.boundary == "periodic" and (lo < 0 or hi > n):
            lo, hi = 0, n  # the wrap-around needs the whole axis
        box.append((max(lo, 0), min(hi, n)))
    return box


def response_map(image: "np.ndarray", spacing, spec, roi: "np.ndarray | None" = None, spectra: dict | None = None):
    """Response map of ``image`` (z, y, x) with ``spacing`` (dz, dy, dx) in mm to filter ``spec``.

    Without ``roi``: the whole image (float64, same shape). With ``roi`` (bool, same shape):
    ``(values, slices)``, the response on the ROI's bounding box (``image[slices]``), computed
    on the region :func:`roi_box` only: identical to the whole-image response for the spatial
    filters, and for the Fourier-domain ones (except periodic ones, always on the whole image)
    up to the decaying influence of image content farther than the margin.

    ``spectra``: an empty dict the caller keeps for one ``image`` and passes to every call on it
    (never to calls on another image): Fourier-domain filters then transform the image once.
    """
    import numpy as np

    from .compute import response

    if isinstance(spec, dict):
        spec = filter_spec(spec.get("filter", ""), {k: v for k, v in spec.items() if k != "filter"})
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 3:
        raise ValueError(f"image must be 3D (z, y, x), got shape {image.shape}")
    if roi is None:
        return response(image, spacing, spec, spectra=spectra)
    roi = np.asarray(roi, bool)
    if roi.shape != image.shape:
        raise ValueError(f"ROI shape {roi.shape} differs from image shape {image.shape}")
    bb = bounding_box(roi)
    if spec.filter == "gabor":  # each plane reads the box +- the kernel radius in that plane (any boundary)
        from .compute import gabor_filter

        return gabor_filter(image, spacing, spec, bb), tuple(slice(a, b) for a, b in bb)
    box = roi_box(roi, spec, spacing, bb)
    inner = tuple(slice(a - lo, b - lo) for (a, b), (lo, _hi) in zip(bb, box))
    whole = all(lo == 0 and hi == n for (lo, hi), n in zip(box, image.shape))
    r = response(image[tuple(slice(lo, hi) for lo, hi in box)], spacing, spec, out=inner,
                 spectra=spectra if whole else None)  # a cropped window is another image
    return r, tuple(slice(a, b) for a, b in bb)
