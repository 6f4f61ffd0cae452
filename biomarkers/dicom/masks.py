"""Segmentations onto the image grid: RTSTRUCT, DICOM SEG and NIfTI masks.

Public API (used by :mod:`biomarkers.dicom.ingest`):

* :class:`MaskSettings` — the ``masks:`` config section (ROI names, NIfTI mask
  pattern, resampling, tolerances, tiny-mask threshold).
* :class:`MaskResult` — one ROI of one segmentation object, on one image stack:
  ``array`` is uint8 (0/1) indexed ``[i, j, k]`` on the stack's
  :class:`~biomarkers.geometry.Grid` (LPS), or None when not converted.
* :func:`masks_from_object` — RTSTRUCT or SEG -> list of MaskResult.
* :func:`masks_from_nifti` — NIfTI masks given beside the DICOM -> list of MaskResult.
* :func:`find_nifti_masks` — resolve ``MaskSettings.nifti_pattern`` for a stack.

Nothing here raises on bad input: every problem becomes a MaskResult with
``status`` "skipped" or "failed" and a specific ``reason`` (no UIDs, no paths,
so reasons are safe to write to reports).
"""

from __future__ import annotations

import glob as _glob
import re
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, field_validator

from ..config import Settings
from ..geometry import Grid
from ..manifest import Status
from .model import ImageStack, SegmentationObject
from .roi import match_roi_names, normalise_name


class MaskFlag(StrEnum):
    """Flags of a mask (its manifest ``qc_flags``), set here."""

    EMPTY = "empty"
    TINY = "tiny"  # fewer than min_voxels voxels
    CLIPPED = "clipped"  # contour points / SEG frames outside the image
    OFF_PLANE = "off_plane"  # contours not on a slice plane (dropped)
    RESAMPLED = "resampled"  # NIfTI mask resampled nearest-neighbour onto the image grid


class MaskSettings(Settings):
    """``masks:`` section of the ingest config.

    Attributes:
        rois: canonical ROI name -> synonyms / glob patterns / ``re:`` regexes
            (case-insensitive; see :mod:`biomarkers.dicom.roi`). Each canonical
            name also matches itself and itself + a modality suffix
            (``GTV_Mass`` matches ``gtv mass``, ``GTV_Mass_CT``). Empty: every
            ROI is converted under its own (file-name-safe) name.
        nifti_pattern: glob of NIfTI masks supplied beside the DICOM. Placeholders
            ``{series_dir}`` (folder of the image files), ``{patient_dir}`` (its
            parent), ``{src}`` (ingest source folder), ``{modality}``; a relative
            pattern is relative to ``{series_dir}``. E.g. ``../mask/*.nii.gz``.
            The ROI name of a NIfTI mask is its file name without ``.nii[.gz]``.
        resample: what to do with a NIfTI mask whose grid differs from the
            image's: ``none`` (the mask fails with the reason) or ``nearest``
            (nearest-neighbour resampling onto the image grid).
        grid_tolerance_mm: largest origin/spacing difference (mm) for a NIfTI
            mask to count as being on the image grid.
        plane_tolerance: largest distance of a contour point / SEG frame from a
            slice plane, as a fraction of the slice spacing.
        min_points_inside: smallest fraction of an RTSTRUCT's contour points that
            must lie inside an image stack for the stack to be chosen.
        min_voxels: masks with fewer voxels (but not empty) are flagged "tiny".
        fractional_threshold: fractional SEG / float NIfTI masks are on where the
            value >= threshold * maximum.
    """

    rois: dict[str, list[str]] = Field(default_factory=dict)
    #: Regexes (full match, case-insensitive) of unconfigured ROI names that may appear in outputs as
    #: written; any other unconfigured name becomes its keyed reference ``roi-XXXXXXXX`` (the map stays
    #: in the site-side source report). Not set: names of standard words only (``roi.standard_words_only``).
    allow_roi_names: list[str] | None = None
    nifti_pattern: str | None = None
    resample: Literal["none", "nearest"] = "none"
    grid_tolerance_mm: float = Field(0.01, ge=0)
    plane_tolerance: float = Field(0.3, gt=0, le=0.5)
    min_points_inside: float = Field(0.5, gt=0, le=1)
    min_voxels: int = Field(10, ge=0)
    fractional_threshold: float = Field(0.5, gt=0, le=1)

    @field_validator("allow_roi_names")
    @classmethod
    def _check_allow(cls, v: list[str] | None) -> list[str] | None:
        for p in v or []:
            try:
                re.compile(p)
            except re.error as err:
                raise ValueError(f"allow_roi_names: invalid regular expression {p!r}: {err}") from None
        return v

    @field_validator("rois")
    @classmethod
    def _check_patterns(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        for name, pats in v.items():
            if not str(name).strip():
                raise ValueError("empty canonical ROI name")
            for p in pats or []:
                if str(p).startswith("re:"):
                    try:
                        re.compile(p[3:])
                    except re.error as err:
                        raise ValueError(f"ROI {name!r}: invalid regular expression {p!r}: {err}") from None
        return v


@dataclass
class MaskResult:
    """One ROI of one segmentation object, on one image stack.

    Attributes:
        roi: canonical ROI name ("" when the whole object failed).
        source_name: the ROI / segment label / file name as found in the input.
        stack_key: ``ImageStack.key`` of the image the mask is on (None: none found).
        array: uint8 0/1 array indexed [i, j, k] on the stack's Grid, or None.
        status: "converted" | "skipped" | "failed".
        reason: why skipped/failed, or a note on a converted mask ("" if none).
        flags: e.g. "empty", "tiny", "clipped" (contour points outside the
            image), "off_plane" (contours not on a slice were dropped),
            "resampled" (NIfTI mask resampled nearest-neighbour).
        source_kind: "RTSTRUCT" | "SEG" | "NIFTI".
    """

    roi: str
    source_name: str
    stack_key: str | None
    array: np.ndarray | None
    status: Status
    reason: str = ""
    flags: list[str] = field(default_factory=list)
    source_kind: str = ""

    @property
    def voxel_count(self) -> int:
        return int(np.count_nonzero(self.array)) if self.array is not None else 0

    def volume_ml(self, grid: Grid) -> float:
        """Mask volume in mL (cm^3) on ``grid``."""
        return self.voxel_count * grid.voxel_volume_ml


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice coefficient of two masks (non-zero = inside); 1.0 when both are empty."""
    a, b = np.asarray(a) != 0, np.asarray(b) != 0
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else 2.0 * int(np.logical_and(a, b).sum()) / s


def _size_flags(arr: np.ndarray, settings: MaskSettings) -> tuple[list[str], str]:
    n = int(np.count_nonzero(arr))
    if n == 0:
        return [MaskFlag.EMPTY], "mask is empty (0 voxels)"
    if n < settings.min_voxels:
        return [MaskFlag.TINY], f"mask is tiny ({n} voxels < min_voxels {settings.min_voxels})"
    return [], ""


def _err_text(err: Exception) -> str:
    """Error text without file paths (an OSError message names the path; paths may hold identifiers)."""
    if isinstance(err, OSError):
        return f"{type(err).__name__}: {err.strerror or 'I/O error'}"
    text = re.sub(r"(['\"])(?:[A-Za-z]:)?[/\\][^'\"]*\1", "<file>", str(err))
    return f"{type(err).__name__}: {text[:200]}"


def _failed_object(kind: str, status: Status, reason: str) -> list[MaskResult]:
    return [MaskResult("", "", None, None, status, reason, [], kind)]


def _usable(stacks: list[ImageStack]) -> list[ImageStack]:
    return [s for s in stacks if s.grid is not None and s.status != Status.FAILED]


def _choose_stack(
    kind: str,
    stacks: list[ImageStack],
    fors: set[str],
    series: set[str],
    sops: set[str],
    score_of,
    min_score: float,
) -> tuple[ImageStack | None, float, str]:
    """Pick the stack a segmentation refers to.

    Candidates are stacks sharing a referenced SOP instance, the referenced
    series, or the frame of reference. Among them, stacks whose geometric score (fraction of the object's points/frames on its
    grid) reaches ``min_score`` are preferred, then a stack holding referenced
    SOP instances, then one of the referenced series, then the higher score,
    then the closer fit (``score_of`` returns ``(fraction, closeness)``; e.g.
    contours closest to the slice planes). Returns (stack, score, reason).
    """
    cands = []
    for s in _usable(stacks):
        overlap = len(sops & set(s.sop_instance_uids)) if sops else 0
        in_series = s.series_uid in series
        same_for = bool(s.frame_of_reference_uid) and s.frame_of_reference_uid in fors
        if overlap or in_series or same_for or (not fors and not series and not sops):
            cands.append((s, overlap, in_series))
    if not cands:
        return None, 0.0, (
            f"referenced image series not found: no image stack of this patient shares the {kind}'s "
            "frame of reference or referenced series (series absent or not converted)"
        )
    scored = []
    for s, ov, ser in cands:
        frac, closeness = score_of(s)
        scored.append((frac, ov, ser, closeness, len(s.files), s))
    scored.sort(key=lambda t: (t[0] >= min_score, t[1] > 0, t[2], round(t[0], 3), t[3], t[4]), reverse=True)
    best = scored[0]
    if best[0] < min_score:
        return None, best[0], (
            f"geometry does not match: {kind} does not lie on any image stack with its frame of reference "
            f"(best: {100 * best[0]:.0f}% of points/frames on the grid of {len(cands)} candidate stack(s))"
        )
    return best[5], best[0], ""


# ------------------------------------------------------------------ RTSTRUCT
def _masks_from_rtstruct(obj: SegmentationObject, stacks: list[ImageStack], settings: MaskSettings,
                         reference=None) -> list[MaskResult]:
    from .rtstruct import extent_score, plane_offset, rasterize_contours, read_rtstruct

    try:
        ss = read_rtstruct(obj.path)
    except Exception as err:  # noqa: BLE001 - any unreadable file becomes a reason
        return _failed_object("RTSTRUCT", Status.FAILED, f"cannot read RTSTRUCT: {_err_text(err)}")
    names = [r.name for r in ss.rois]
    decisions = match_roi_names(names, settings.rois, settings.allow_roi_names, reference)
    results: list[MaskResult] = []
    chosen = []
    for roi, d in zip(ss.rois, decisions):
        if d.canonical is None:
            results.append(MaskResult("", d.display, None, None, Status.SKIPPED, d.reason, [], "RTSTRUCT"))
        elif not roi.contours:
            other = f" (only {', '.join(roi.other_types)} contours)" if roi.other_types else ""
            results.append(
                MaskResult(d.canonical, d.display, None, None, Status.SKIPPED, f"ROI has no closed planar contours{other}", [MaskFlag.EMPTY], "RTSTRUCT")
            )
        else:
            chosen.append((roi, d.canonical, d.display))
    if not chosen:
        if not ss.rois:
            return _failed_object("RTSTRUCT", Status.SKIPPED, "RTSTRUCT contains no ROI")
        return results
    points = np.concatenate([c for roi, _, _ in chosen for c in roi.contours])
    fors = set(ss.frame_of_reference_uids) | ({obj.frame_of_reference_uid} if obj.frame_of_reference_uid else set())
    series = set(ss.referenced_series_uids) | set(obj.referenced_series_uids)
    sops = set(ss.referenced_sop_uids) | set(obj.referenced_sop_uids)
    stack, score, reason = _choose_stack(
        "RTSTRUCT", stacks, fors, series, sops,
        lambda s: (extent_score(points, s.grid, settings.plane_tolerance), -plane_offset(points, s.grid)),
        settings.min_points_inside,
    )
    if stack is None:
        status: Status = Status.SKIPPED if reason.startswith("referenced image series not found") else Status.FAILED
        return results + [MaskResult(c, shown, None, None, status, reason, [], "RTSTRUCT") for _, c, shown in chosen]
    for roi, canonical, shown in chosen:
        arr, info = rasterize_contours(roi.contours, stack.grid, settings.plane_tolerance)
        flags, notes = [], []
        if info.n_off_plane:
            flags.append(MaskFlag.OFF_PLANE)
            notes.append(f"{info.n_off_plane} of {info.n_contours} contours not on a slice plane (dropped)")
        if info.n_outside or info.n_clipped_points:
            flags.append(MaskFlag.CLIPPED)
            notes.append(
                f"{info.n_outside} contours beyond the first/last slice, "
                f"{info.n_clipped_points} points outside the slice extent"
            )
        sf, snote = _size_flags(arr, settings)
        flags += sf
        if snote:
            notes.append(snote)
        if info.n_placed == 0:
            results.append(
                MaskResult(canonical, shown, stack.key, None, Status.FAILED,
                           "geometry does not match: no contour of the ROI lies on a slice of the image", flags, "RTSTRUCT")
            )
            continue
        results.append(MaskResult(canonical, shown, stack.key, arr, Status.CONVERTED, "; ".join(notes), flags, "RTSTRUCT"))
    return results


# ------------------------------------------------------------------ SEG
def _masks_from_seg(obj: SegmentationObject, stacks: list[ImageStack], settings: MaskSettings,
                    reference=None) -> list[MaskResult]:
    from .rtstruct import plane_offset
    from .seg import frame_slices, read_seg, segment_arrays

    try:
        seg = read_seg(obj.path)
    except Exception as err:  # noqa: BLE001
        return _failed_object("SEG", Status.FAILED, f"cannot read SEG: {_err_text(err)}")
    labels = [seg.segments[n] for n in sorted(seg.segments)]
    numbers = sorted(seg.segments)
    decisions = match_roi_names(labels, settings.rois, settings.allow_roi_names, reference)
    results: list[MaskResult] = []
    chosen = []
    for n, label, d in zip(numbers, labels, decisions):
        if d.canonical is None:
            results.append(MaskResult("", d.display, None, None, Status.SKIPPED, d.reason, [], "SEG"))
        else:
            chosen.append((n, d.display, d.canonical))
    if not chosen:
        return results or _failed_object("SEG", Status.SKIPPED, "SEG contains no segment")
    fors = {seg.frame_of_reference_uid, obj.frame_of_reference_uid} - {""}
    series = set(seg.referenced_series_uids) | set(obj.referenced_series_uids)
    sops = seg.source_sops | set(obj.referenced_sop_uids)

    pos = seg.positions()

    def score(s: ImageStack) -> tuple[float, float]:
        ks, why = frame_slices(seg, s.grid, s.sop_instance_uids, settings.plane_tolerance)
        frac = 0.0 if why or not ks else float(np.mean([k is not None for k in ks]))
        return frac, (-plane_offset(pos, s.grid) if len(pos) else 0.0)

    stack, _, reason = _choose_stack("SEG", stacks, fors, series, sops, score, 1e-9)
    if stack is None:
        # say precisely why the in-plane geometry fails on the most plausible stack
        usable = [s for s in _usable(stacks) if s.frame_of_reference_uid in fors or s.series_uid in series]
        if usable and reason.startswith("geometry"):
            _, why = frame_slices(seg, usable[0].grid, usable[0].sop_instance_uids, settings.plane_tolerance)
            reason = f"geometry does not match: {why}" if why else reason
        status: Status = Status.SKIPPED if reason.startswith("referenced image series not found") else Status.FAILED
        return results + [MaskResult(c, label, None, None, status, reason, [], "SEG") for _, label, c in chosen]
    ks, _ = frame_slices(seg, stack.grid, stack.sop_instance_uids, settings.plane_tolerance)
    try:
        arrays = segment_arrays(seg, stack.grid, ks, settings.fractional_threshold)
    except Exception as err:  # noqa: BLE001
        return results + [
            MaskResult(c, label, stack.key, None, Status.FAILED, f"cannot decode SEG pixel data: {_err_text(err)}", [], "SEG")
            for _, label, c in chosen
        ]
    for n, label, canonical in chosen:
        arr = arrays[n]
        flags, notes = [], []
        off = sum(1 for f, k in zip(seg.frames, ks) if k is None and (f.segment == n or seg.seg_type == "LABELMAP"))
        if off:
            flags.append(MaskFlag.CLIPPED)
            notes.append(f"{off} frames not on a slice of the image (dropped)")
        sf, snote = _size_flags(arr, settings)
        flags += sf
        if snote:
            notes.append(snote)
        results.append(MaskResult(canonical, label, stack.key, arr, Status.CONVERTED, "; ".join(notes), flags, "SEG"))
    return results


def masks_from_object(obj: SegmentationObject, stacks: list[ImageStack], settings: MaskSettings | None = None,
                      reference=None) -> list[MaskResult]:
    """Convert every selected ROI of an RTSTRUCT or SEG onto the image it refers to.

    Args:
        obj: the segmentation object (``kind`` "RTSTRUCT" or "SEG").
        stacks: candidate image stacks of the same patient (with ``grid`` and
            ``files`` sorted along the normal, as produced by the index).
        settings: mask settings (defaults when None).
        reference: keyed reference of an ROI name (``Pseudonymizer.referencer("roi")``): results
            and reasons name an ROI that is neither configured nor allowed by it (None: as written).

    Returns:
        One MaskResult per ROI/segment of the object (converted, skipped or
        failed with a reason), or a single object-level result (``roi`` "") when
        the file cannot be read. Never raises on bad input.
    """
    settings = settings or MaskSettings()
    kind = str(obj.kind).upper()
    if kind == "RTSTRUCT":
        return _masks_from_rtstruct(obj, stacks, settings, reference)
    if kind == "SEG":
        return _masks_from_seg(obj, stacks, settings, reference)
    return _failed_object(kind, Status.SKIPPED, f"unsupported segmentation kind {obj.kind!r} (expected RTSTRUCT or SEG)")


# ------------------------------------------------------------------ NIfTI
def _nifti_stem(path: Path) -> str:
    name = path.name
    for ext in (".nii.gz", ".nii"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return path.stem


def resample_nearest(array: np.ndarray, src: Grid, dst: Grid) -> np.ndarray:
    """Nearest-neighbour resampling of ``array`` (i, j, k on ``src``) onto ``dst`` (LPS, SimpleITK)."""
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(array, (2, 1, 0))))
    img.SetSpacing(src.spacing)
    img.SetOrigin(src.origin)
    img.SetDirection(tuple(np.asarray(src.direction_matrix).ravel()))
    ref = sitk.Image([int(s) for s in dst.shape], img.GetPixelID())
    ref.SetSpacing(dst.spacing)
    ref.SetOrigin(dst.origin)
    ref.SetDirection(tuple(np.asarray(dst.direction_matrix).ravel()))
    out = sitk.Resample(img, ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    return np.transpose(sitk.GetArrayFromImage(out), (2, 1, 0))


def find_nifti_masks(stack: ImageStack, settings: MaskSettings, src: str | Path | None = None) -> list[Path]:
    """NIfTI mask files for ``stack`` from ``settings.nifti_pattern`` (sorted; [] when unset)."""
    if not settings.nifti_pattern or not stack.files:
        return []
    series_dir = Path(stack.files[0].path).parent
    pattern = settings.nifti_pattern.format(
        series_dir=str(series_dir),
        patient_dir=str(series_dir.parent),
        src=str(src) if src is not None else "",
        modality=stack.modality,
    )
    p = Path(pattern)
    if not p.is_absolute():
        p = series_dir / p
    return sorted(Path(x).resolve() for x in _glob.glob(str(p)))


def masks_from_nifti(stack: ImageStack, nifti_paths: list[Path], settings: MaskSettings | None = None,
                     reference=None) -> list[MaskResult]:
    """Check NIfTI masks against the image grid and return them as MaskResults.

    A mask is used as-is when its shape equals the image's and its affine agrees
    within ``grid_tolerance_mm``; otherwise it fails with the difference as reason,
    unless ``resample: nearest`` (then it is resampled and flagged "resampled").
    Non-zero voxels are inside (float masks: >= fractional_threshold * max).
    """
    import nibabel as nib

    settings = settings or MaskSettings()
    paths = [Path(p) for p in nifti_paths]
    stems = [_nifti_stem(p) for p in paths]
    decisions = match_roi_names(stems, settings.rois, settings.allow_roi_names, reference)
    results: list[MaskResult] = []
    for path, stem, d in zip(paths, stems, decisions):
        if d.canonical is None:
            results.append(MaskResult("", d.display, stack.key, None, Status.SKIPPED, d.reason, [], "NIFTI"))
            continue
        label = f"NIfTI mask for ROI {d.canonical!r}"
        try:
            img = nib.load(str(path))
            arr = np.asanyarray(img.dataobj)
        except Exception as err:  # noqa: BLE001
            results.append(MaskResult(d.canonical, d.display, stack.key, None, Status.FAILED, f"{label}: cannot read: {_err_text(err)}", [], "NIFTI"))
            continue
        while arr.ndim > 3 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        if arr.ndim != 3:
            results.append(MaskResult(d.canonical, d.display, stack.key, None, Status.FAILED, f"{label}: not a 3-D mask (shape {arr.shape})", [], "NIFTI"))
            continue
        if np.issubdtype(arr.dtype, np.floating):
            mx = float(np.nanmax(arr)) if arr.size else 0.0
            binary = (arr >= settings.fractional_threshold * mx) if mx > 0 else np.zeros(arr.shape, bool)
        else:
            binary = arr != 0
        grid = Grid.from_affine_ras(img.affine, arr.shape)
        why = stack.grid.mismatch(grid, atol_mm=settings.grid_tolerance_mm, atol_dir=1e-4)
        flags: list[str] = []
        notes: list[str] = []
        if why:
            if settings.resample != "nearest":
                results.append(
                    MaskResult(d.canonical, d.display, stack.key, None, Status.FAILED,
                               f"{label} is not on the image grid: {why} (set masks.resample: nearest to resample)", [], "NIFTI")
                )
                continue
            binary = resample_nearest(binary.astype(np.uint8), grid, stack.grid) != 0
            flags.append(MaskFlag.RESAMPLED)
            notes.append(f"resampled nearest-neighbour onto the image grid ({why})")
        out = binary.astype(np.uint8)
        sf, snote = _size_flags(out, settings)
        flags += sf
        if snote:
            notes.append(snote)
        results.append(MaskResult(d.canonical, d.display, stack.key, out, Status.CONVERTED, "; ".join(notes), flags, "NIFTI"))
    return results


def missing_rois(results: list[MaskResult], settings: MaskSettings) -> list[str]:
    """Configured canonical ROIs that no converted mask of a patient provides (for per-patient reports)."""
    got = {normalise_name(r.roi) for r in results if r.status == Status.CONVERTED}
    return [c for c in settings.rois if normalise_name(c) not in got]
