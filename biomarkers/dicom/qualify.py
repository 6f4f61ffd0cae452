"""Qualify image stacks before conversion: geometry checks and QC flags.

Everything here works on header values only (no pixel data). :func:`qualify`
sets ``stack.grid`` (LPS), ``stack.qc`` (flags and numbers), and marks the stack
``skipped`` with a reason when it must not be converted.

``stack.qc``: n_slices, slice_spacing_mm (median step along the normal) and the
:class:`QcFlag` flags (missing_slices: the number of missing positions).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from ..geometry import Grid
from ..manifest import Status
from .stacks import is_localizer
from .model import ImageStack


class QcFlag(StrEnum):
    """QC flags of an image stack (``stack.qc`` keys), listed in this order in the manifest
    ``qc_flags`` column when true. Set here, except the PET ones (``convert`` / ``pet``)."""

    MISSING_SLICES = "missing_slices"
    DUPLICATE_POSITIONS = "duplicate_positions"
    NON_UNIFORM_SPACING = "non_uniform_spacing"
    OBLIQUE = "oblique"
    GANTRY_TILT = "gantry_tilt"
    LOCALIZER = "localizer"
    INCONSISTENT_RESCALE = "inconsistent_rescale"
    SINGLE_SLICE = "single_slice"
    PET_UNITS_KEPT = "pet_units_kept"
    INJECTION_PREVIOUS_DAY = "injection_previous_day"
    INJECTION_DATE_DISAGREES = "injection_date_disagrees"


#: Recorded in ``stack.qc`` but not listed (per-slice rescale is normal in PET).
PER_SLICE_RESCALE = "per_slice_rescale"


@dataclass
class SliceLayout:
    """Where each frame goes along k on the output grid (gaps leave holes)."""

    k_index: list[int]  # output slice index of each file in stack.files
    n_slices: int  # output slices (== len(files) unless gaps are filled)
    positions: np.ndarray  # (n_slices, 3) LPS position of every output slice
    step_mm: float  # median step along the normal
    missing: int  # number of missing slices


def slice_layout(stack: ImageStack, spacing_tolerance: float = 0.01, position_tolerance_mm: float = 0.01) -> SliceLayout:
    """Positions along the normal -> uniform output slices; raises ValueError on bad spacing.

    ``ValueError`` messages are the skip reasons (``duplicate slice positions``,
    ``non-uniform slice spacing``); gaps are reported via ``missing``.
    """
    fs = stack.files
    iop = np.asarray(fs[0].image_orientation, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    pos = np.asarray([f.image_position for f in fs], dtype=float)
    if len(fs) == 1:
        return SliceLayout([0], 1, pos, float(fs[0].slice_thickness or 1.0), 0)
    d = pos @ normal
    steps = np.diff(d)
    if np.any(np.abs(steps) < position_tolerance_mm):
        n = int(np.sum(np.abs(steps) < position_tolerance_mm))
        raise ValueError(f"duplicate slice positions ({n} repeated position{'s' if n > 1 else ''})")
    step = float(np.median(steps))
    ratio = steps / step
    mult = np.rint(ratio)
    if np.all(np.abs(ratio - 1) <= spacing_tolerance):
        return SliceLayout(list(range(len(fs))), len(fs), pos, step, 0)
    if np.all(mult >= 1) and np.all(np.abs(ratio - mult) <= spacing_tolerance * mult):
        k = np.concatenate([[0], np.cumsum(mult)]).astype(int)
        n = int(k[-1]) + 1
        # output positions: interpolate linearly between the known slices
        full = np.empty((n, 3))
        for c in range(3):
            full[:, c] = np.interp(np.arange(n), k, pos[:, c])
        return SliceLayout([int(x) for x in k], n, full, step, n - len(fs))
    lo, hi = float(np.min(steps)), float(np.max(steps))
    raise ValueError(f"non-uniform slice spacing (steps {lo:.3f}..{hi:.3f} mm along the normal)")


def qualify(stack: ImageStack, allow_gaps: bool = False, spacing_tolerance: float = 0.01, position_tolerance_mm: float = 0.01) -> ImageStack:
    """Check one stack's geometry and set ``grid``, ``qc``, ``status``/``reason`` (in place)."""
    fs = stack.files  # one volume: QC and geometry are per 3-D volume
    qc: dict = {"n_slices": len(fs), **stack.qc}  # + what the stack builder recorded
    if stack.volumes:
        qc["n_volumes"] = stack.n_volumes
    stack.qc = qc
    first = fs[0]

    def skip(reason: str) -> ImageStack:
        stack.status, stack.reason = Status.SKIPPED, reason
        return stack

    if stack.status == Status.SKIPPED and stack.reason:  # frames the stack builder could not order
        if stack.reason.startswith("duplicate"):
            qc[QcFlag.DUPLICATE_POSITIONS] = True
        return stack

    if first.samples_per_pixel not in (1, None):
        return skip(f"unsupported object: colour image (SamplesPerPixel={first.samples_per_pixel})")
    if any(is_localizer(f) for f in fs):
        qc[QcFlag.LOCALIZER] = True
        return skip("localizer")
    missing = [
        name
        for name, ok in (
            ("ImagePositionPatient", all(f.image_position is not None for f in fs)),
            ("ImageOrientationPatient", first.image_orientation is not None),
            ("PixelSpacing", first.pixel_spacing is not None),
        )
        if not ok
    ]
    if missing:
        return skip(f"missing geometry ({', '.join(missing)})")
    slopes = {(f.rescale_slope, f.rescale_intercept) for f in stack.all_files}
    if len(slopes) > 1:
        # applied per slice; output becomes float32. Per-slice slopes are normal in PET.
        qc[PER_SLICE_RESCALE if stack.modality == "PT" else QcFlag.INCONSISTENT_RESCALE] = True
    if len(fs) == 1:
        qc[QcFlag.SINGLE_SLICE] = True
    try:
        lay = slice_layout(stack, spacing_tolerance, position_tolerance_mm)
    except ValueError as err:
        reason = str(err)
        qc[QcFlag.DUPLICATE_POSITIONS if reason.startswith("duplicate") else QcFlag.NON_UNIFORM_SPACING] = True
        return skip(reason)
    qc["slice_spacing_mm"] = round(abs(lay.step_mm), 6)
    if lay.missing:
        qc[QcFlag.MISSING_SLICES] = lay.missing
    grid = Grid.from_dicom(
        first.rows,
        first.columns,
        first.pixel_spacing,
        first.image_orientation,
        lay.positions,
        slice_spacing=abs(lay.step_mm) if len(fs) == 1 else None,
    )
    stack.grid = grid
    if grid.is_oblique():
        qc[QcFlag.OBLIQUE] = True
    iop = np.asarray(first.image_orientation, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    kdir = grid.direction_matrix[:, 2]
    if len(fs) > 1 and abs(abs(float(kdir @ normal)) - 1.0) > 1e-4 or abs(first.gantry_tilt or 0.0) > 1e-3:
        qc[QcFlag.GANTRY_TILT] = True
        from .tilt import plan_tilt  # sheared slices: an orthogonal output grid, resampled by convert

        stack.grid = plan_tilt(grid, qc)
    if lay.missing and not allow_gaps:
        return skip(f"missing slices ({lay.missing} missing in a stack of {len(fs)})")
    stack.status, stack.reason = Status.PENDING, ""
    return stack


def qc_flags(qc: dict) -> list[str]:
    """The names of the true/non-zero flags, in a fixed order."""
    return [n for n in QcFlag if qc.get(n)]
