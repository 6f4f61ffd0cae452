"""Display conventions of the QC report: one place decides how a voxel lands on a screen pixel.

Orientation (radiological, the same in every view of the report)
----------------------------------------------------------------
Volumes are first put in **LPS voxel order** (:func:`to_lps`): the array's axes run towards
the patient's Left, Posterior and Superior (DICOM patient coordinates), whatever order the
NIfTI file stores them in (the NIfTI affine is RAS; see :mod:`biomarkers.geometry`). Then:

========  ==========================================  ========================================
view      image columns, left -> right                 image rows, top -> bottom
========  ==========================================  ========================================
axial     patient right -> patient left (LPS x up)     anterior -> posterior (LPS y up)
coronal   patient right -> patient left (LPS x up)     superior -> inferior (LPS z down)
sagittal  anterior -> posterior (LPS y up)             superior -> inferior (LPS z down)
========  ==========================================  ========================================

So the patient's left is on the image's right, anterior is up in axial slices, superior is
up in coronal and sagittal slices (the patient is seen from the feet in axial slices, from
the front in coronal slices and from the patient's left in sagittal slices). The letters at
the image edges (R/L, A/P, S/I) say the same.

Oblique grids are shown in the nearest patient axes (no interpolation across axes; the card
carries the ``oblique`` flag of the manifest). Pixels are made square by resampling each
slice to ``mm_per_px = max(width_mm, height_mm) / size``: a thumbnail covers the whole field
of view of its slice, edge to edge (voxel edges, not centres).

Intensity windows (:func:`window`)
---------------------------------
* CT (HU): a preset ``soft_tissue`` (level 40, width 400), ``lung`` (-600, 1500) or ``bone``
  (400, 1800), or an explicit ``[level, width]``.
* PET (``PT``, SUV when the ingest converted it): from 0 to ``pet_max`` (default: the 99.5th
  percentile of the volume's positive voxels).
* MR and anything else: between the ``mr_percentiles`` (default 1st and 99th) of the voxels
  above the volume's minimum (the background).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np

View = Literal["axial", "coronal", "sagittal"]

#: CT window presets: name -> (level, width) in HU.
CT_WINDOWS: dict[str, tuple[float, float]] = {
    "soft_tissue": (40.0, 400.0),
    "lung": (-600.0, 1500.0),
    "bone": (400.0, 1800.0),
}

#: Letters at the (left, right, top, bottom) edges of each view.
EDGE_LETTERS: dict[str, tuple[str, str, str, str]] = {
    "axial": ("R", "L", "A", "P"),
    "coronal": ("R", "L", "S", "I"),
    "sagittal": ("A", "P", "S", "I"),
}


def to_lps(array: np.ndarray, affine_ras: np.ndarray) -> tuple[np.ndarray, tuple[float, float, float], np.ndarray]:
    """Reorder ``array`` (3-D, NIfTI ``[i, j, k]``) so its axes run towards L, P, S.

    Returns ``(view, spacing_mm, index_map)``: a view of the array (no copy), the voxel size
    along its (L, P, S) axes, and the 4x4 matrix that maps an index of the view to an index of
    the original array (homogeneous coordinates), so callers can say where a voxel came from.
    """
    import nibabel as nib

    a = np.asarray(affine_ras, dtype=float)
    ornt = nib.orientations.io_orientation(a)  # axis of the RAS world each voxel axis is closest to
    target = nib.orientations.axcodes2ornt(("L", "P", "S"))
    tr = nib.orientations.ornt_transform(ornt, target)
    view = nib.orientations.apply_orientation(array, tr)
    zooms = np.sqrt((a[:3, :3] ** 2).sum(axis=0))
    spacing = tuple(float(zooms[int(np.nonzero(tr[:, 0] == ax)[0][0])]) for ax in range(3))
    index_map = nib.orientations.inv_ornt_aff(tr, array.shape[:3])  # view index -> stored index
    return view, spacing, index_map


def plane(vol_lps: np.ndarray, view: View, index: int) -> np.ndarray:
    """The 2-D slice ``index`` of an LPS-ordered volume, as displayed (rows top->bottom, columns left->right)."""
    if view == "axial":  # plane (x, y): rows = y (anterior first), columns = x (patient right first)
        return vol_lps[:, :, index].T
    if view == "coronal":  # plane (x, z): rows = z reversed (superior first)
        return vol_lps[:, index, :].T[::-1, :]
    if view == "sagittal":  # plane (y, z): rows = z reversed, columns = y (anterior first)
        return vol_lps[index, :, :].T[::-1, :]
    raise ValueError(f"unknown view {view!r}")


def plane_spacing(spacing_lps: Sequence[float], view: View) -> tuple[float, float]:
    """(row height, column width) in mm of a displayed slice of an LPS-ordered volume."""
    sx, sy, sz = spacing_lps
    return {"axial": (sy, sx), "coronal": (sz, sx), "sagittal": (sz, sy)}[view]


#: Which axis of the LPS-ordered volume a view slices through.
SLICE_AXIS: dict[str, int] = {"axial": 2, "coronal": 1, "sagittal": 0}


@dataclass(frozen=True)
class Window:
    """A display window: values ``<= low`` are black, ``>= high`` white (linear in between)."""

    low: float
    high: float
    label: str

    def apply(self, values: np.ndarray, levels: int) -> np.ndarray:
        """Grey levels ``0 .. levels-1`` (uint8) of ``values``."""
        span = max(self.high - self.low, 1e-12)
        g = (np.asarray(values, dtype=np.float32) - self.low) * ((levels - 1) / span)
        return np.clip(np.rint(g), 0, levels - 1).astype(np.uint8)


def _sample(vol: np.ndarray, target: int = 250_000) -> np.ndarray:
    """Every voxel of a small volume; of a large one, a regular subsample of about ``target`` voxels."""
    step = max(1, int(round((vol.size / target) ** (1 / 3))))
    return np.asarray(vol[::step, ::step, ::step], dtype=np.float32).ravel()


def window(vol: np.ndarray, modality: str, ct_window: str | Sequence[float] = "soft_tissue",
           pet_max: float | None = None, mr_percentiles: Sequence[float] = (1.0, 99.0)) -> Window:
    """The display window of a volume of ``modality`` (see the module docstring)."""
    m = (modality or "").upper()
    if m == "CT":
        if isinstance(ct_window, str):
            level, width = CT_WINDOWS[ct_window]
            name = ct_window.replace("_", " ")
        else:
            level, width = float(ct_window[0]), float(ct_window[1])
            name = "custom"
        return Window(level - width / 2, level + width / 2, f"CT {name} (L {level:g} / W {width:g} HU)")
    v = _sample(vol)
    v = v[np.isfinite(v)]
    if m in ("PT", "PET"):
        if pet_max is None:
            pos = v[v > 0]
            pet_max = float(np.percentile(pos, 99.5)) if pos.size else 1.0
        return Window(0.0, max(float(pet_max), 1e-6), f"PET 0 to {pet_max:.3g}")
    lo_p, hi_p = mr_percentiles
    fg = v[v > v.min()] if v.size else v
    if fg.size == 0:
        fg = v if v.size else np.zeros(1, np.float32)
    lo, hi = (float(x) for x in np.percentile(fg, [lo_p, hi_p]))
    if hi <= lo:
        hi = lo + 1.0
    return Window(lo, hi, f"{m or 'image'} {lo_p:g}th-{hi_p:g}th percentile ({lo:.4g} to {hi:.4g})")


def nice_bar_mm(width_mm: float) -> float:
    """A round scale-bar length (1, 2, 5 x 10^n mm) close to a fifth of ``width_mm``."""
    target = max(width_mm / 5.0, 1e-3)
    exp = np.floor(np.log10(target))
    for m in (5.0, 2.0, 1.0):
        if m * 10 ** exp <= target:
            return float(m * 10 ** exp)
    return float(10 ** exp)
