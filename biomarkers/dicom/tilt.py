"""Gantry-tilted CT: resampled onto an orthogonal grid (dcm2niix's default).

With a tilted gantry each slice is an ordinary rectangle, but consecutive slices are shifted
in their own plane: the stack's k axis (from one ImagePositionPatient to the next) is not the
slice normal. A NIfTI qform, SimpleITK/ITK (and so pyradiomics) and most viewers cannot
represent that shear; writing it only in the sform would keep exact voxels that most tools
then place wrongly. So, as dcm2niix does by default (its ``_Tilt`` output):

* :func:`orthogonal_grid` (planning, header values only): the output grid keeps the slices'
  row and column axes and spacing, its k axis is the slice normal (spacing: the step along
  the normal), and it is widened in-plane so that every slice fits (dcm2niix widens the same
  way: ``ceil`` of the total shift in voxels).
* :func:`resample` (conversion): each output slice is the input slice sampled at the output
  voxel centres, linear interpolation in the slice plane (slices are never mixed); voxels that
  no input slice covers get ``fill`` (dcm2niix: PixelPaddingValue, else the image minimum; here
  the image minimum). Integer images stay integers (rounded to nearest).

The stack keeps the QC flag ``gantry_tilt``; ``qc["gantry_tilt_resampled_deg"]`` records the
tilt measured from the positions. Coordinates: DICOM patient LPS (mm).
"""

from __future__ import annotations

import math

import numpy as np

from ..geometry import Grid

#: A k axis within this angle of the slice normal is not sheared (degrees).
TILT_TOLERANCE_DEG = 0.01


def shear_deg(grid: Grid) -> float:
    """Angle (degrees) between the grid's k axis and the normal of its i-j plane."""
    d = grid.direction_matrix
    n = np.cross(d[:, 0], d[:, 1])
    return math.degrees(math.acos(min(1.0, abs(float(d[:, 2] @ n)) / float(np.linalg.norm(n)))))


def orthogonal_grid(grid: Grid) -> Grid:
    """The orthogonal grid that holds every slice of the (possibly sheared) ``grid``; ``grid``
    itself when it is not sheared (k within :data:`TILT_TOLERANCE_DEG` of the normal)."""
    if grid.shape[2] < 2 or shear_deg(grid) <= TILT_TOLERANCE_DEG:
        return grid
    a = grid.affine_lps()
    d = grid.direction_matrix
    n = np.cross(d[:, 0], d[:, 1])
    n /= np.linalg.norm(n)
    kvec = a[:3, 2]
    step = float(kvec @ n)
    kdir = n if step > 0 else -n
    si, sj = float(kvec @ d[:, 0]) / grid.spacing[0], float(kvec @ d[:, 1]) / grid.spacing[1]
    nk = grid.shape[2]
    lo_i, hi_i = min(0.0, (nk - 1) * si), max(0.0, (nk - 1) * si)
    lo_j, hi_j = min(0.0, (nk - 1) * sj), max(0.0, (nk - 1) * sj)
    lo_i, lo_j = math.floor(lo_i + 1e-6), math.floor(lo_j + 1e-6)
    hi_i, hi_j = math.ceil(hi_i - 1e-6), math.ceil(hi_j - 1e-6)
    origin = np.asarray(grid.origin) + lo_i * grid.spacing[0] * d[:, 0] + lo_j * grid.spacing[1] * d[:, 1]
    return Grid(
        shape=(grid.shape[0] + hi_i - lo_i, grid.shape[1] + hi_j - lo_j, nk),
        spacing=(grid.spacing[0], grid.spacing[1], abs(step)),
        origin=tuple(float(x) for x in origin),
        direction=tuple(tuple(float(x) for x in r) for r in np.column_stack([d[:, 0], d[:, 1], kdir])),
    )


def resample(arr: np.ndarray, sheared: Grid, out: Grid, fill=None) -> np.ndarray:
    """``arr`` ([i, j, k] or [i, j, k, t]) on ``sheared`` -> on ``out`` (same slices), linear in-plane.

    ``fill``: value of voxels outside every input slice (default: ``arr``'s minimum).
    """
    from scipy.ndimage import map_coordinates

    if fill is None:
        fill = arr.min()
    m = np.linalg.inv(sheared.affine_lps()) @ out.affine_lps()  # out index -> sheared index
    ii, jj = np.meshgrid(np.arange(out.shape[0]), np.arange(out.shape[1]), indexing="ij")
    src = arr.reshape(arr.shape[:3] + (-1,))  # [i, j, k, t]
    res = np.empty(tuple(out.shape) + src.shape[3:], dtype=arr.dtype)
    integer = arr.dtype.kind in "iu"
    for k in range(out.shape[2]):
        pts = m[:3, 0, None, None] * ii + m[:3, 1, None, None] * jj + (m[:3, 2] * k + m[:3, 3])[:, None, None]
        if np.abs(pts[2] - k).max() > 1e-3:
            raise ValueError("gantry tilt resampling: output slices do not lie in the input slices")
        near = np.rint(pts[:2])
        pts = np.where(np.abs(pts[:2] - near) < 1e-6, near, pts[:2])  # whole voxels exactly (edges stay inside)
        for t in range(src.shape[3]):
            v = map_coordinates(src[:, :, k, t].astype(np.float64), pts, order=1, mode="constant",
                                cval=float(fill), prefilter=False)
            res[:, :, k, t] = np.rint(v) if integer else v
    return res.reshape(tuple(out.shape) + arr.shape[3:])


#: ``stack.qc`` key of a resampled tilted stack: the tilt measured from the positions (degrees).
RESAMPLED = "gantry_tilt_resampled_deg"


def plan_tilt(grid: Grid, qc: dict) -> Grid:
    """The output grid of a stack whose geometry is ``grid`` (planning): ``grid`` itself, or for
    a sheared stack its :func:`orthogonal_grid`, with the tilt recorded in ``qc[RESAMPLED]``."""
    ortho = orthogonal_grid(grid)
    if ortho is not grid:
        qc[RESAMPLED] = round(shear_deg(grid), 4)
        if not ortho.is_oblique():
            qc.pop("oblique", None)  # the sheared k axis was oblique, the output grid is not
    return ortho
