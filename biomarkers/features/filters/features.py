"""Features of IBSI 2 response maps: IBSI 1 processing, filtering, IBSI 1 families in the ROI.

Order (IBSI 2 manual, phase 2): the image is resampled and rounded as the ``ibsi:`` section
says (IBSI 1 centre-aligned grid, :mod:`biomarkers.features.ibsi.processing`), the mask is
interpolated and thresholded; the intensity mask is resegmented on the *image* intensities;
then each filter of ``ibsi: filters:`` is applied to the processed image and the IBSI 1
families (default: the intensity statistics ``stat``) are computed from the response map
inside the intensity mask.

Only the window the ROI's responses depend on is resampled and filtered (the ROI's bounding
box plus the largest filter margin, :func:`~.compute.margin`), except for Fourier-domain
filters with periodic boundaries, which need the whole image.

Long-table rows (:func:`filter_rows`): ``filter`` = the entry's id, ``image_type`` = the id,
``feature_class = "ibsi" + family`` (``ibsistat``), ``feature`` = the IBSI tag without its family
prefix, ``ibsi_code`` = the tag (``stat_mean``), ``source = "biomarkers.filters"``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from biomarkers.errors import InputError

from . import response_map
from .compute import _fourier, margin
from .settings import FilterEntry, filter_entries

SOURCE = "biomarkers.filters"


@dataclass
class Processed:
    """Processed image window and masks (z, y, x); ``spacing`` (dz, dy, dx) mm."""

    image: np.ndarray
    morph_mask: np.ndarray
    int_mask: np.ndarray
    spacing: tuple[float, float, float]


def _window(pos: np.ndarray, lo: float, hi: float, m: float) -> tuple[int, int]:
    keep = np.nonzero((pos >= lo - m) & (pos <= hi + m))[0]
    return int(keep.min()), int(keep.max()) + 1


def process(image: np.ndarray, roi: np.ndarray, spacing, settings, margin_mm: float | None) -> Processed:
    """IBSI 1 resampling / rounding / mask interpolation / resegmentation of the window around ``roi``.

    ``margin_mm`` None: the whole image. The window holds the voxels of the global
    centre-aligned grid (:func:`~biomarkers.features.ibsi.processing.grid_positions`) within
    ``margin_mm`` of the ROI's bounding box, so values equal those of resampling the whole image.
    """
    from biomarkers.features.ibsi.processing import grid_positions, resample, resegment, sample_grid

    image = np.asarray(image, np.float64)
    roi = np.asarray(roi, bool)
    if not roi.any():
        raise InputError("ROI mask is empty")
    spacing = tuple(float(s) for s in spacing)
    new = spacing
    if settings.spacing is not None:
        sx, sy, sz = settings.spacing
        new = (spacing[0] if settings.in_plane_only else float(sz), float(sy), float(sx))
    resampled = any(abs(a - b) > 1e-9 for a, b in zip(new, spacing))
    idx = np.nonzero(roi)
    if not resampled:
        img, msk = image, roi
        if margin_mm is not None:
            sl = tuple(slice(*_window(np.arange(n, dtype=float), i.min(), i.max(), margin_mm / s))
                       for i, n, s in zip(idx, image.shape, spacing))
            img, msk = image[sl], roi[sl]
    elif margin_mm is None:
        img, msk, _ = resample(image, roi, spacing, new, settings.interpolation, settings.round_intensities,
                               settings.mask_threshold)
    else:
        axes, sub = [], []
        for i, n, s, sn in zip(idx, image.shape, spacing, new):
            pos = grid_positions(n, s, sn)
            k0, k1 = _window(pos, float(i.min()), float(i.max()), margin_mm / s)
            o0 = max(0, int(math.floor(pos[k0])) - 6)  # spline support around the window
            o1 = min(n, int(math.ceil(pos[k1 - 1])) + 7)
            sub.append(slice(o0, o1))
            axes.append(pos[k0:k1] - o0)
        order = {"nearest": 0, "linear": 1, "cubic": 3}[settings.interpolation]
        # as processing.resample: positions outside the image are clamped (mode nearest)
        img = sample_grid(image[tuple(sub)], axes, order, "nearest")
        if settings.round_intensities:
            img = np.round(img)
        m = sample_grid(roi[tuple(sub)].astype(np.float64), axes, 1, "constant")
        msk = m >= settings.mask_threshold - 1e-6
    if not msk.any():
        raise InputError("ROI mask is empty after resampling")
    int_mask = resegment(img, msk, settings.reseg_range, settings.outlier_sd)
    if not int_mask.any():
        raise InputError("intensity mask is empty after resegmentation")
    return Processed(img, msk, int_mask, tuple(float(s) for s in new))


def window_margin_mm(entries: list[FilterEntry], spacing, shape) -> float | None:
    """Largest margin (mm) the filters need around the ROI; None when one needs the whole image."""
    out = 0.0
    for e in entries:
        spec = e.spec
        if _fourier(spec) and spec.boundary == "periodic":
            return None
        m = margin(spec, spacing, shape)
        out = max(out, max(mi * si for mi, si in zip(m, spacing)))
    return out + 2 * max(spacing)


def response_values(proc: Processed, entry: FilterEntry, settings, spectra: dict | None = None) -> dict[str, float]:
    """IBSI tag -> value of the families of ``entry`` on its response map inside the intensity mask.

    ``spectra``: a dict kept for ``proc`` across its entries (Fourier spectra of ``proc.image``).
    """
    from biomarkers.features.ibsi import compute_prepared
    from biomarkers.features.ibsi.families.intensity import statistics
    from biomarkers.features.ibsi.processing import Prepared, discretise

    resp, sl = response_map(proc.image, proc.spacing, entry.spec, roi=proc.morph_mask, spectra=spectra)
    int_mask = proc.int_mask[sl]
    fams = set(entry.families)
    out: dict[str, float] = {}
    if "stat" in fams:
        out.update({k: float(v) for k, v in statistics(resp[int_mask]).items()})
    rest = fams - {"stat"}
    if rest:
        d = entry.discretisation
        levels, n = discretise(resp, int_mask, d.method, d.bin_width, d.bin_count, low=None)
        pad = [(1, 1)] * 3
        prep = Prepared(image=np.pad(resp, pad, mode="edge"), morph_mask=np.pad(proc.morph_mask[sl], pad),
                        int_mask=np.pad(int_mask, pad), spacing=proc.spacing, levels=np.pad(levels, pad),
                        n_levels=n, ivh={})
        fam_settings = settings.model_copy(update={"families": tuple(sorted(rest))})
        out.update(compute_prepared(prep, fam_settings))
    return out


def filter_values(image, roi, spacing, settings, entries: list[FilterEntry]) -> dict[str, dict[str, float]]:
    """filter id -> (IBSI tag -> value) for arrays (z, y, x), ``spacing`` (dz, dy, dx) mm.

    ``settings``: the :class:`~biomarkers.features.ibsi.processing.IbsiSettings` (processing).
    """
    if not entries:
        return {}
    sp = tuple(float(s) for s in spacing)
    new = sp if settings.spacing is None else (
        sp[0] if settings.in_plane_only else float(settings.spacing[2]), float(settings.spacing[1]),
        float(settings.spacing[0]))
    margin_mm = window_margin_mm(entries, new, np.shape(image))
    if margin_mm is not None:  # the interpolated ROI may reach up to one original voxel beyond the original one
        margin_mm += max(sp)
    proc = process(image, roi, sp, settings, margin_mm)
    spectra: dict = {}  # the Fourier spectra of proc.image, shared by its Fourier-domain filters
    return {e.id: response_values(proc, e, settings, spectra) for e in entries}


def entries_of(params: dict) -> list[FilterEntry]:
    """The validated ``ibsi: filters:`` list of a parameter dict (empty when absent)."""
    section = params.get("ibsi") if isinstance(params, dict) else None
    if not isinstance(section, dict):
        return []
    return filter_entries(section.get("filters"), source="ibsi.filters")


def filter_rows(image, mask, params: dict) -> list[dict]:
    """Long-table rows of the ``ibsi: filters:`` of ``params`` for SimpleITK ``image`` and ``mask``."""
    import SimpleITK as sitk

    from biomarkers.features.ibsi import settings_from_params

    entries = entries_of(params)
    if not entries:
        return []
    settings = settings_from_params(params)
    arr = sitk.GetArrayFromImage(image).astype(np.float64)
    marr = sitk.GetArrayFromImage(mask)
    label = (params.get("setting") or {}).get("label")
    roi = (marr == label) if label is not None else (marr > 0)
    spacing = tuple(float(s) for s in image.GetSpacing()[::-1])
    rows = []
    for fid, values in filter_values(arr, roi, spacing, settings, entries).items():
        for tag, v in values.items():
            family, _, rest = tag.partition("_")
            rows.append({"filter": fid, "image_type": fid, "feature_class": f"ibsi{family}", "feature": rest,
                         "ibsi_code": tag, "value": float(v), "ibsi_value": float(v), "source": SOURCE})
    return rows

