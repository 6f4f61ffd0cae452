"""IBSI 1 image processing: resampling, resegmentation, discretisation, masks.

Arrays are numpy arrays in SimpleITK/array order ``(z, y, x)``; spacings are
given per array axis ``(dz, dy, dx)`` in millimetres. Intensities are in the
image's own units (HU for CT). Positions, where needed, are array index times
spacing (mm, in the image's own axis frame: distances, volumes and PCA do not
depend on the LPS/RAS convention).

Steps (IBSI 1, chapter 2), all pure functions:

1. :func:`resample` -- interpolation on a grid whose centre is aligned with the
   original grid centre (not the origin, not cropped to the ROI):
   ``n_new = ceil(n * s / s_new)`` and new voxel ``k`` sits at original index
   ``(k - (n_new - 1)/2) * s_new / s + (n - 1)/2``. Image by nearest / linear /
   cubic-spline interpolation (optionally rounded to integers, for CT), the ROI
   mask by linear interpolation thresholded at ``mask_threshold`` (0.5).
2. :func:`resegment` -- the morphological mask is the (interpolated) ROI; the
   intensity mask additionally keeps voxels in ``reseg_range`` and, with
   ``outlier_sd``, within mean +/- ``outlier_sd`` SD (range first, then outliers:
   configuration E).
3. :func:`discretise` -- fixed bin size with bins starting at the
   resegmentation lower bound (else the ROI minimum); fixed bin number between
   ROI min and max; or none (integer intensities used as grey levels).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from pydantic import Field, model_validator
from scipy import ndimage

from biomarkers.config import Settings
from biomarkers.errors import InputError

Interpolation = Literal["nearest", "linear", "cubic"]
Discretisation = Literal["none", "fbs", "fbn"]
Aggregation = Literal["2D", "2.5D", "3D"]
FAMILIES = ("diagnostics", "morph", "loc", "stat", "ih", "ivh", "cm", "rlm", "szm", "dzm", "ngt", "ngl")

_ORDER = {"nearest": 0, "linear": 1, "cubic": 3}
# interpolated mask values that are 0.5 up to floating-point error count as inside
# (e.g. half-way between slices); without it ~2400 voxels of the CT phantom flip at random
_EPS = 1e-6


class IbsiSettings(Settings):
    """The ``ibsi:`` section of a radiomics parameter file (IBSI 1 processing + features).

    Example (CT phantom configuration C)::

        ibsi:
          spacing: [2.0, 2.0, 2.0]      # mm, (x, y, z); null = no resampling
          interpolation: linear
          round_intensities: true
          reseg_range: [-1000, 400]
          discretisation: fbs
          bin_width: 25
          ivh_discretisation: fbs
          ivh_bin_width: 2.5
          aggregation: [3D]
    """

    spacing: tuple[float, float, float] | None = Field(
        None, description="new voxel spacing (x, y, z) in mm; null: no resampling")
    in_plane_only: bool = Field(False, description="resample x and y only (2D configurations), keep z")
    interpolation: Interpolation = "linear"
    round_intensities: bool = Field(False, description="round interpolated intensities to integers (CT)")
    mask_threshold: float = Field(0.5, gt=0, le=1, description="partial-volume threshold of the interpolated mask")
    reseg_range: tuple[float | None, float | None] | None = Field(
        None, description="[low, high] intensity range of the intensity mask; null bound = open")
    outlier_sd: float | None = Field(None, gt=0, description="keep mean +/- this many SD (IBSI: 3)")
    discretisation: Discretisation = "fbs"
    bin_width: float | None = Field(25.0, gt=0)
    bin_count: int | None = Field(None, gt=0)
    ivh_discretisation: Discretisation = "none"
    ivh_bin_width: float | None = Field(None, gt=0)
    ivh_bin_count: int | None = Field(None, gt=0)
    aggregation: tuple[Aggregation, ...] = ("3D",)
    families: tuple[str, ...] = FAMILIES
    pyradiomics: bool = Field(
        True, description="read by the extraction engine: also run pyradiomics (false: IBSI features only)")
    diagnostics: bool = Field(
        False, description="also report IBSI diagnostic values (image/ROI dimensions, counts, intensities "
        "before/after interpolation and resegmentation); interpolates the whole image")
    distance_mask: Literal["morphological", "intensity"] = Field(
        "morphological", description="mask whose border defines GLDZM distances")
    filters: tuple[dict, ...] = Field(
        (), description="IBSI 2 filters: entries {id, filter, settings[, families, discretisation]} "
        "(biomarkers.features.filters.FilterEntry); their response maps' features get a 'filter' key")

    @model_validator(mode="after")
    def _check(self):
        if self.discretisation == "fbs" and self.bin_width is None:
            raise ValueError("discretisation fbs needs bin_width")
        if self.discretisation == "fbn" and self.bin_count is None:
            raise ValueError("discretisation fbn needs bin_count")
        if self.ivh_discretisation == "fbs" and self.ivh_bin_width is None:
            raise ValueError("ivh_discretisation fbs needs ivh_bin_width")
        if self.ivh_discretisation == "fbn" and self.ivh_bin_count is None:
            raise ValueError("ivh_discretisation fbn needs ivh_bin_count")
        bad = [f for f in self.families if f not in FAMILIES]
        if bad:
            raise ValueError(f"unknown families {bad}; known: {list(FAMILIES)}")
        if self.filters:
            from biomarkers.features.filters import filter_entries

            filter_entries(list(self.filters))  # ConfigError naming the entry and key
        return self


@dataclass
class Prepared:
    """Image and masks after IBSI processing, cropped to the ROI (+ margin).

    ``image`` float64 intensities; ``morph_mask`` / ``int_mask`` bool; ``levels``
    int32 grey levels (0 outside the intensity mask); ``n_levels`` = N_g;
    ``ivh_values`` discretised intensities used by the IVH; ``spacing`` (dz, dy, dx) mm.
    """

    image: np.ndarray
    morph_mask: np.ndarray
    int_mask: np.ndarray
    spacing: tuple[float, float, float]
    levels: np.ndarray
    n_levels: int
    ivh: dict
    full_image: np.ndarray | None = None  # image extent around the ROI used for local peaks
    full_int_mask: np.ndarray | None = None
    diagnostics: dict = field(default_factory=dict)
    #: fractional index (z, y, x) in the ORIGINAL image of voxel [0, 0, 0] of ``image``/masks
    index0: tuple[float, float, float] = (0.0, 0.0, 0.0)


def grid_positions(n: int, s: float, s_new: float) -> np.ndarray:
    """Original fractional indices of the centre-aligned resampled grid along one axis."""
    n_new = int(math.ceil(n * s / s_new - 1e-9))
    k = np.arange(n_new, dtype=float)
    return (k - (n_new - 1) / 2.0) * (s_new / s) + (n - 1) / 2.0


def _bspline_weights(t: np.ndarray, order: int):
    """(offsets, weights) of the B-spline of ``order`` (1 or 3) at fractional parts ``t``."""
    if order == 1:
        return (0, 1), (1.0 - t, t)
    t2, t3 = t * t, t * t * t
    return (-1, 0, 1, 2), ((1 - t) ** 3 / 6, (3 * t3 - 6 * t2 + 4) / 6, (-3 * t3 + 3 * t2 + 3 * t + 1) / 6, t3 / 6)


def sample_grid(image: np.ndarray, axes: list[np.ndarray], order: int, mode: str) -> np.ndarray:
    """``scipy.ndimage.map_coordinates`` on the rectilinear grid ``axes`` (fractional indices per axis).

    The tensor-product B-spline is evaluated one axis at a time (4 + 4 + 4 taps per voxel for
    cubic instead of 4^3): the same values as ``map_coordinates(image, meshgrid(*axes), order,
    mode, prefilter=True)`` to rounding (1e-12), several times faster. ``mode``: ``nearest`` (the
    image: positions outside are clamped) or ``constant`` (the mask: 0 where any coordinate is
    outside [0, n - 1], as scipy does). Orders 1 and 3; order 0 goes through ``map_coordinates``.
    """
    if order not in (1, 3) or mode not in ("nearest", "constant"):
        coords = np.meshgrid(*axes, indexing="ij")
        return ndimage.map_coordinates(np.asarray(image, np.float64), coords, order=order, mode=mode,
                                       prefilter=order > 1)
    from threadpoolctl import threadpool_limits

    # one BLAS thread: the banded products are small; threads busy-wait on a loaded machine
    # (4x the CPU time there) and extraction workers run in parallel processes anyway
    with threadpool_limits(limits=1, user_api="blas"):
        return _sample_grid(image, axes, order, mode)


def _sample_grid(image: np.ndarray, axes: list[np.ndarray], order: int, mode: str) -> np.ndarray:
    npad = 0
    c = np.asarray(image, np.float64)
    if order == 3:  # scipy's spline prefilter for mode nearest: 12 edge voxels, then the filter
        npad = 12
        c = ndimage.spline_filter(np.pad(c, npad, mode="edge"), 3, output=np.float64, mode="nearest")
    # shrinking axes first, growing ones last (fewer voxels through the later passes)
    for ax in sorted(range(c.ndim), key=lambda a: (len(axes[a]) / c.shape[a], a)):
        pos = axes[ax]
        n = c.shape[ax]
        p = np.asarray(pos, np.float64) + npad
        f = np.floor(p)
        offsets, weights = _bspline_weights(p - f, order)
        f = f.astype(np.int64)
        # one axis = a small (new x old) matrix with 2 or 4 weights per row (clamped indices: nearest)
        w_mat = np.zeros((p.size, n))
        rows = np.arange(p.size)
        for o, w in zip(offsets, weights):
            np.add.at(w_mat, (rows, np.clip(f + o, 0, n - 1)), w)
        if mode == "constant":
            w_mat *= ((pos >= 0) & (pos <= image.shape[ax] - 1))[:, None]
        c = _apply_axis(w_mat, c, ax)
    return np.ascontiguousarray(c)


def _apply_axis(w_mat: np.ndarray, c: np.ndarray, ax: int, block: int = 48) -> np.ndarray:
    """``w_mat`` (new x old, banded) applied along axis ``ax`` of ``c``.

    Matrix products without transposed copies, in blocks of ``block`` rows restricted to the
    columns the block's weights use (the band): the skipped weights are zeros, so the values are
    those of the whole product.
    """
    if c.ndim != 3:
        return np.moveaxis(np.tensordot(w_mat, c, axes=([1], [ax])), 0, ax)
    shape = list(c.shape)
    shape[ax] = w_mat.shape[0]
    out = np.empty(shape)
    nzc = w_mat != 0
    for r0 in range(0, w_mat.shape[0], block):
        r1 = min(r0 + block, w_mat.shape[0])
        cols = np.flatnonzero(nzc[r0:r1].any(axis=0))
        if not cols.size:
            idx = [slice(None)] * 3
            idx[ax] = slice(r0, r1)
            out[tuple(idx)] = 0.0
            continue
        c0, c1 = int(cols[0]), int(cols[-1]) + 1
        w = w_mat[r0:r1, c0:c1]
        if ax == 2:
            out[:, :, r0:r1] = c[:, :, c0:c1] @ w.T
        elif ax == 1:
            out[:, r0:r1, :] = np.matmul(w, c[:, c0:c1, :])
        else:
            out[r0:r1] = (w @ c[c0:c1].reshape(c1 - c0, -1)).reshape((r1 - r0,) + c.shape[1:])
    return out


def _resample_mask(mask: np.ndarray, axes: list[np.ndarray]) -> np.ndarray:
    """Linear resampling (mode constant) of ``mask`` at the grid ``axes``, computed around the mask only.

    A resampled voxel is non-zero only where its position lies within one voxel of the mask's
    bounding box; elsewhere it is 0. The window's values are those of the whole grid (the
    window's input keeps every tap, and its clipped ends are the image's ends).
    """
    out = np.zeros(tuple(len(a) for a in axes))
    nz = mask != 0
    hits = [np.flatnonzero(nz.any(axis=tuple(b for b in range(mask.ndim) if b != ax))) for ax in range(mask.ndim)]
    if any(h.size == 0 for h in hits):
        return out
    sub_in, sub_out, local = [], [], []
    for h, pos, n in zip(hits, axes, mask.shape):
        b0, b1 = int(h[0]), int(h[-1]) + 1
        lo, hi = max(b0 - 1, 0), min(b1 + 1, n)
        keep = np.flatnonzero((pos >= b0 - 1) & (pos <= b1))
        if not keep.size:
            return out
        k0, k1 = int(keep[0]), int(keep[-1]) + 1
        sub_in.append(slice(lo, hi))
        sub_out.append(slice(k0, k1))
        local.append(np.asarray(pos[k0:k1], np.float64) - lo)
    out[tuple(sub_out)] = sample_grid(mask[tuple(sub_in)], local, 1, "constant")
    return out


def resample(image: np.ndarray, mask: np.ndarray, spacing: tuple[float, float, float],
             new_spacing: tuple[float, float, float], interpolation: Interpolation = "linear",
             round_intensities: bool = False, mask_threshold: float = 0.5):
    """Resample image and mask (z, y, x) to ``new_spacing`` (dz, dy, dx) on a centre-aligned grid.

    Returns (image, mask(bool), spacing). Pure function.
    """
    axes = [grid_positions(n, s, sn) for n, s, sn in zip(image.shape, spacing, new_spacing)]
    img = sample_grid(image, axes, _ORDER[interpolation], "nearest")
    if round_intensities:
        img = np.round(img)
    msk = _resample_mask(np.asarray(mask, np.float64), axes)
    return img, msk >= mask_threshold - _EPS, tuple(float(s) for s in new_spacing)


def resegment(image: np.ndarray, mask: np.ndarray, reseg_range=None, outlier_sd: float | None = None):
    """Intensity mask from the morphological ``mask``: range first, then mean +/- k SD."""
    int_mask = mask.copy()
    if reseg_range is not None:
        lo, hi = reseg_range
        if lo is not None:
            int_mask &= image >= lo
        if hi is not None:
            int_mask &= image <= hi
    if outlier_sd is not None and int_mask.any():
        vals = image[int_mask]
        mu, sd = vals.mean(), vals.std()
        int_mask &= (image >= mu - outlier_sd * sd) & (image <= mu + outlier_sd * sd)
    return int_mask


def discretise(image: np.ndarray, int_mask: np.ndarray, method: Discretisation,
               bin_width: float | None = None, bin_count: int | None = None,
               low: float | None = None) -> tuple[np.ndarray, int]:
    """Grey levels (int32, 0 outside ``int_mask``) and N_g.

    fbs: ``floor((X - low) / w) + 1`` with ``low`` the resegmentation lower bound
    (default ROI minimum); fbn: ``floor(N_g (X - min) / (max - min)) + 1``, max -> N_g;
    none: intensities (must be integers >= 1 inside the ROI) are used as they are.
    """
    levels = np.zeros(image.shape, dtype=np.int32)
    vals = image[int_mask]
    if vals.size == 0:
        raise InputError("intensity mask is empty after resegmentation")
    if method == "fbs":
        lo = vals.min() if low is None else low
        d = np.floor((vals - lo) / bin_width + 1e-9).astype(np.int64) + 1
        levels[int_mask] = d
        n = int(d.max())
    elif method == "fbn":
        lo, hi = vals.min(), vals.max()
        if hi > lo:
            d = np.floor(bin_count * (vals - lo) / (hi - lo)).astype(np.int64) + 1
            d = np.minimum(d, bin_count)
        else:
            d = np.ones(vals.shape, np.int64)
        levels[int_mask] = d
        n = int(bin_count)
    else:
        d = np.round(vals).astype(np.int64)
        if d.min() < 1:
            d = d - d.min() + 1
        levels[int_mask] = d
        n = int(d.max())
    return levels, n


def _bbox(mask: np.ndarray):
    idx = np.nonzero(mask)
    return [(int(i.min()), int(i.max()) + 1) for i in idx]


def _diag_image(prefix: str, img: np.ndarray, spacing) -> dict:
    nz, ny, nx = img.shape
    return {f"img_dim_x_{prefix}_img": nx, f"img_dim_y_{prefix}_img": ny, f"img_dim_z_{prefix}_img": nz,
            f"vox_dim_x_{prefix}_img": spacing[2], f"vox_dim_y_{prefix}_img": spacing[1],
            f"vox_dim_z_{prefix}_img": spacing[0], f"mean_int_{prefix}_img": float(img.mean()),
            f"min_int_{prefix}_img": float(img.min()), f"max_int_{prefix}_img": float(img.max())}


def _diag_roi(prefix: str, img, int_mask, morph_mask) -> dict:
    out = {}
    nz, ny, nx = int_mask.shape
    out.update({f"int_mask_dim_x_{prefix}_roi": nx, f"int_mask_dim_y_{prefix}_roi": ny,
                f"int_mask_dim_z_{prefix}_roi": nz})
    for name, m in (("int_mask", int_mask), ("morph_mask", morph_mask)):
        (z0, z1), (y0, y1), (x0, x1) = _bbox(m)
        out.update({f"{name}_bb_dim_x_{prefix}_roi": x1 - x0, f"{name}_bb_dim_y_{prefix}_roi": y1 - y0,
                    f"{name}_bb_dim_z_{prefix}_roi": z1 - z0, f"{name}_vox_count_{prefix}_roi": int(m.sum())})
    v = img[int_mask]
    out.update({f"int_mask_mean_int_{prefix}_roi": float(v.mean()), f"int_mask_min_int_{prefix}_roi": float(v.min()),
                f"int_mask_max_int_{prefix}_roi": float(v.max())})
    return out


PEAK_RADIUS_MM = (3.0 / (4.0 * math.pi)) ** (1.0 / 3.0) * 10.0  # sphere of 1 cm^3


def prepare(image: np.ndarray, mask: np.ndarray, spacing: tuple[float, float, float],
            settings: IbsiSettings, diagnostics: bool = False) -> Prepared:
    """Apply IBSI processing to ``image``/``mask`` (z, y, x), ``spacing`` (dz, dy, dx) mm.

    The image is cropped to the ROI bounding box plus a margin (local intensity
    peak sphere + interpolation support) before interpolation; only the voxels
    of the centre-aligned global grid inside that box are computed, so the
    result equals interpolating the whole image.
    """
    mask = np.asarray(mask) > 0
    if not mask.any():
        raise InputError("ROI mask is empty")
    image = np.asarray(image, dtype=np.float64)
    diag: dict = {}
    if diagnostics:
        diag.update(_diag_image("init", image, spacing))
        diag.update(_diag_roi("init", image, mask, mask))
    new_spacing = spacing
    if settings.spacing is not None:
        sx, sy, sz = settings.spacing
        new_spacing = (spacing[0] if settings.in_plane_only else sz, sy, sx)
    margin_mm = PEAK_RADIUS_MM + 2 * max(new_spacing)
    # geometry bookkeeping: array index k of the current grid <-> original index pos0 + (k + off) * step
    pos0 = [0.0, 0.0, 0.0]
    step = [1.0, 1.0, 1.0]
    off = [0, 0, 0]
    if any(abs(a - b) > 1e-9 for a, b in zip(new_spacing, spacing)):
        if diagnostics:  # whole image (diagnostic values are image-wide)
            img_r, msk_r, sp = resample(image, mask, spacing, new_spacing, settings.interpolation,
                                        settings.round_intensities, settings.mask_threshold)
            k_starts = [0, 0, 0]
        else:
            # crop the original around the ROI, then evaluate the global new grid inside the crop
            # (6 extra original voxels of spline support at the crop border)
            bb = _bbox(mask)
            sl_orig, axes, k_starts = [], [], []
            for (a, b), n, s, sn in zip(bb, image.shape, spacing, new_spacing):
                pos = grid_positions(n, s, sn)
                m = margin_mm / s
                keep = np.nonzero((pos >= a - m) & (pos <= b - 1 + m))[0]
                k0, k1 = int(keep.min()), int(keep.max()) + 1
                k_starts.append(k0)
                o0 = max(0, int(math.floor(pos[k0])) - 6)
                o1 = min(n, int(math.ceil(pos[k1 - 1])) + 7)
                sl_orig.append(slice(o0, o1))
                axes.append(pos[k0:k1] - o0)
            sub_img = image[tuple(sl_orig)]
            sub_msk = mask[tuple(sl_orig)].astype(np.float64)
            # positions outside the original image are clamped like mode="nearest" on the whole image
            img_r = sample_grid(sub_img, axes, _ORDER[settings.interpolation], "nearest")
            if settings.round_intensities:
                img_r = np.round(img_r)
            msk_r = sample_grid(sub_msk, axes, 1, "constant")
            msk_r = msk_r >= settings.mask_threshold - _EPS
            sp = tuple(float(s) for s in new_spacing)
        pos0 = [float(grid_positions(n, s, sn)[0]) for n, s, sn in zip(image.shape, spacing, new_spacing)]
        step = [sn / s for s, sn in zip(spacing, new_spacing)]
        off = list(k_starts)
        image, mask, spacing = img_r, msk_r, sp
        if not mask.any():
            raise InputError("ROI mask is empty after resampling")
    if diagnostics:
        diag.update(_diag_image("interp", image, spacing))
        diag.update(_diag_roi("interp", image, mask, mask))
    # crop to the ROI plus the local-peak margin
    bb = _bbox(mask)
    crop = tuple(slice(max(0, a - int(math.ceil(PEAK_RADIUS_MM / s)) - 1),
                       min(n, b + int(math.ceil(PEAK_RADIUS_MM / s)) + 1))
                 for (a, b), n, s in zip(bb, image.shape, spacing))
    image, mask = image[crop], mask[crop]
    off = [o + c.start for o, c in zip(off, crop)]
    int_mask = resegment(image, mask, settings.reseg_range, settings.outlier_sd)
    if not int_mask.any():
        raise InputError("intensity mask is empty after resegmentation")
    if diagnostics:
        diag.update(_diag_roi("reseg", image, int_mask, mask))
        for k in ("x", "y", "z"):  # dims of the full (not cropped) mask grid
            diag[f"int_mask_dim_{k}_reseg_roi"] = diag[f"int_mask_dim_{k}_interp_roi"]
    low = settings.reseg_range[0] if settings.reseg_range is not None else None
    levels, n_levels = discretise(image, int_mask, settings.discretisation, settings.bin_width,
                                  settings.bin_count, low)
    ivh = _ivh_values(image, int_mask, settings)
    # tight crop (+1 voxel of zeros) for the texture / morphology computations
    full_image, full_int = image, int_mask
    bb = _bbox(mask)
    tight = tuple(slice(a, b) for a, b in bb)
    index0 = tuple(p + (o + t.start - 1) * st for p, o, t, st in zip(pos0, off, tight, step))
    pad = [(1, 1)] * 3
    return Prepared(
        image=np.pad(image[tight], pad, mode="edge"),
        morph_mask=np.pad(mask[tight], pad),
        int_mask=np.pad(int_mask[tight], pad),
        spacing=tuple(float(s) for s in spacing),
        levels=np.pad(levels[tight], pad),
        n_levels=n_levels,
        ivh=ivh,
        full_image=full_image,
        index0=index0,
        full_int_mask=full_int,
        diagnostics=diag,
    )


def _ivh_values(image, int_mask, settings: IbsiSettings) -> dict:
    """Discretised intensities for the IVH, the grid they are evaluated on and the gamma range.

    Returns ``{"values", "grid", "min", "max"}`` (IBSI 1 section 3.5):

    * ``none``: integer intensities (CT) on a unit grid, other data on their distinct
      values (for PET/MR prefer ``fbs`` or ``fbn`` with ~1000 bins); the intensity fraction
      gamma uses the resegmentation range when one is set (configurations A, B), else the
      ROI min/max (D);
    * ``fbs``: bin centres ``low + (d - 0.5) w`` (``low`` = resegmentation lower bound),
      gamma over the resegmentation range (C);
    * ``fbn``: the bin numbers 1..N, gamma over [1, N] (E, 1000 bins).
    """
    vals = image[int_mask]
    m = settings.ivh_discretisation
    lo_r = settings.reseg_range[0] if settings.reseg_range is not None else None
    hi_r = settings.reseg_range[1] if settings.reseg_range is not None else None
    if m == "none":
        integer = bool(np.all(np.abs(vals - np.round(vals)) < 1e-6))
        v = np.round(vals) if integer else vals
        lo, hi = v.min(), v.max()
        if lo_r is not None and settings.outlier_sd is None:
            lo = lo_r
        if hi_r is not None and settings.outlier_sd is None:
            hi = hi_r
        # integer data (CT): every integer between min and max; otherwise the distinct values
        grid = np.arange(v.min(), v.max() + 1.0) if integer else np.unique(v)
        return {"values": v, "grid": grid, "min": float(lo), "max": float(hi)}
    if m == "fbs":
        w = settings.ivh_bin_width
        low = lo_r if lo_r is not None else vals.min()
        d = np.floor((vals - low) / w + 1e-9) + 1
        v = low + (d - 0.5) * w  # bin centres
        grid = low + (np.arange(d.min(), d.max() + 1) - 0.5) * w
        lo = low if lo_r is not None else v.min()
        hi = hi_r if hi_r is not None else v.max()
        return {"values": v, "grid": grid, "min": float(lo), "max": float(hi)}
    nb = settings.ivh_bin_count
    lo, hi = vals.min(), vals.max()
    d = np.minimum(np.floor(nb * (vals - lo) / (hi - lo)) + 1, nb) if hi > lo else np.ones_like(vals)
    grid = np.arange(1, nb + 1, dtype=float)
    return {"values": d, "grid": grid, "min": 1.0, "max": float(nb)}
