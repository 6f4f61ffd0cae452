"""DICOM SEG (binary, fractional, label map) read with highdicom, placed on an image grid.

Frames are placed one by one: each frame's plane position (LPS mm, from
PerFrameFunctionalGroupsSequence/PlanePositionSequence) is turned into a slice
index ``k`` of the target grid with :meth:`Grid.lps_to_index`; a frame must lie
on a slice plane, with the image's in-plane orientation, spacing and size. When
frames carry no plane position, the source image they were derived from
(DerivationImageSequence) gives the slice. Segments whose frames cover only part
of the series are fine: slices without a frame stay 0.

Fractional segments are binarised at ``threshold * MaximumFractionalValue``
(``threshold`` = 0.5 by default).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..geometry import Grid


@dataclass
class SegFrame:
    segment: int
    position: tuple[float, float, float] | None  # ImagePositionPatient (LPS mm)
    source_sop: str | None  # SOP instance UID of the source image
    index: int  # frame index in the pixel data (0-based)


@dataclass
class SegObject:
    """What is needed from a SEG to place its segments."""

    path: Path
    seg_type: str  # BINARY | FRACTIONAL | LABELMAP
    max_fractional: int
    rows: int
    columns: int
    orientation: tuple[float, ...] | None  # IOP (LPS)
    pixel_spacing: tuple[float, float] | None  # (row spacing, column spacing) mm
    frame_of_reference_uid: str
    referenced_series_uids: tuple[str, ...]
    segments: dict[int, str]  # segment number -> label
    frames: list[SegFrame] = field(default_factory=list)
    dataset: object = None  # the highdicom Segmentation (pixel data decoded lazily)

    @property
    def source_sops(self) -> set[str]:
        return {f.source_sop for f in self.frames if f.source_sop}

    def positions(self) -> np.ndarray:
        p = [f.position for f in self.frames if f.position is not None]
        return np.asarray(p, dtype=float).reshape(-1, 3)


def _first(seq_parent, name):
    seq = seq_parent.get(name) if seq_parent is not None else None
    return seq[0] if seq else None


def read_seg(path: str | Path) -> SegObject:
    """Read a DICOM SEG with ``highdicom.seg.segread`` (pixel data decoded later)."""
    import highdicom as hd

    seg = hd.seg.segread(str(path))
    seg_type = str(seg.SegmentationType).upper()
    shared = _first(seg, "SharedFunctionalGroupsSequence")
    iop = spacing = None
    po = _first(shared, "PlaneOrientationSequence")
    if po is not None and po.get("ImageOrientationPatient"):
        iop = tuple(float(x) for x in po.ImageOrientationPatient)
    pm = _first(shared, "PixelMeasuresSequence")
    if pm is not None and pm.get("PixelSpacing"):
        spacing = (float(pm.PixelSpacing[0]), float(pm.PixelSpacing[1]))
    segments = {int(s.SegmentNumber): str(s.get("SegmentLabel", f"segment_{int(s.SegmentNumber)}")) for s in seg.SegmentSequence}
    shared_si = _first(shared, "SegmentIdentificationSequence")
    shared_num = int(shared_si.ReferencedSegmentNumber) if shared_si is not None else None
    if shared_num is None and len(segments) == 1:
        shared_num = next(iter(segments))
    frames: list[SegFrame] = []
    for idx, fg in enumerate(seg.get("PerFrameFunctionalGroupsSequence", [])):
        si = _first(fg, "SegmentIdentificationSequence")
        num = int(si.ReferencedSegmentNumber) if si is not None else (shared_num or 0)
        pp = _first(fg, "PlanePositionSequence")
        pos = tuple(float(x) for x in pp.ImagePositionPatient) if pp is not None and pp.get("ImagePositionPatient") else None
        if iop is None:
            fpo = _first(fg, "PlaneOrientationSequence")
            if fpo is not None and fpo.get("ImageOrientationPatient"):
                iop = tuple(float(x) for x in fpo.ImageOrientationPatient)
        if spacing is None:
            fpm = _first(fg, "PixelMeasuresSequence")
            if fpm is not None and fpm.get("PixelSpacing"):
                spacing = (float(fpm.PixelSpacing[0]), float(fpm.PixelSpacing[1]))
        sop = None
        der = _first(fg, "DerivationImageSequence")
        src = _first(der, "SourceImageSequence")
        if src is not None and src.get("ReferencedSOPInstanceUID"):
            sop = str(src.ReferencedSOPInstanceUID)
        frames.append(SegFrame(num, pos, sop, idx))
    series = tuple(str(s.SeriesInstanceUID) for s in seg.get("ReferencedSeriesSequence", []) if s.get("SeriesInstanceUID"))
    return SegObject(
        path=Path(path),
        seg_type=seg_type,
        max_fractional=int(seg.get("MaximumFractionalValue", 1) or 1),
        rows=int(seg.Rows),
        columns=int(seg.Columns),
        orientation=iop,
        pixel_spacing=spacing,
        frame_of_reference_uid=str(seg.get("FrameOfReferenceUID", "")),
        referenced_series_uids=series,
        segments=segments,
        frames=frames,
        dataset=seg,
    )


def frame_slices(seg: SegObject, grid: Grid, sop_uids: list[str], plane_tolerance: float = 0.3) -> tuple[list[int | None], str]:
    """Slice index ``k`` of every frame on ``grid`` (None: frame not on the grid).

    Returns the list and a reason ("" when the in-plane geometry matches).
    ``sop_uids`` are the stack's SOP instance UIDs in slice order (used when a
    frame has no plane position).
    """
    ni, nj, nk = grid.shape
    if (seg.columns, seg.rows) != (ni, nj):
        return [None] * len(seg.frames), f"SEG frame size {seg.columns}x{seg.rows} != image slice size {ni}x{nj}"
    d = grid.direction_matrix
    if seg.orientation is not None:
        iop = np.asarray(seg.orientation)
        if not (np.allclose(iop[:3], d[:, 0], atol=1e-3) and np.allclose(iop[3:], d[:, 1], atol=1e-3)):
            return [None] * len(seg.frames), "SEG plane orientation differs from the image's"
    if seg.pixel_spacing is not None:
        if not np.allclose([seg.pixel_spacing[1], seg.pixel_spacing[0]], grid.spacing[:2], atol=1e-3):
            return [None] * len(seg.frames), (
                f"SEG pixel spacing {seg.pixel_spacing} mm differs from the image's "
                f"{(grid.spacing[1], grid.spacing[0])} mm"
            )
    by_sop = {u: k for k, u in enumerate(sop_uids)}
    out: list[int | None] = []
    for f in seg.frames:
        k = None
        if f.position is not None:
            ijk = grid.lps_to_index(np.asarray(f.position))
            kr = round(float(ijk[2]))
            if abs(ijk[0]) < 0.01 and abs(ijk[1]) < 0.01 and abs(ijk[2] - kr) <= plane_tolerance and 0 <= kr < nk:
                k = int(kr)
        elif f.source_sop in by_sop:
            k = by_sop[f.source_sop]
        out.append(k)
    return out, ""


def segment_arrays(seg: SegObject, grid: Grid, slices: list[int | None], threshold: float = 0.5) -> dict[int, np.ndarray]:
    """uint8 masks (i, j, k on ``grid``) of every segment from frame slice indices."""
    pix = np.asarray(seg.dataset.pixel_array)
    if pix.ndim == 2:
        pix = pix[None]
    out = {n: np.zeros(grid.shape, dtype=np.uint8) for n in seg.segments}
    for f, k in zip(seg.frames, slices):
        if k is None:
            continue
        frame = pix[f.index]  # (rows=j, columns=i)
        if seg.seg_type == "LABELMAP":
            for n in out:
                out[n][:, :, k] |= (frame == n).T.astype(np.uint8)
            continue
        if f.segment not in out:
            continue
        if seg.seg_type == "FRACTIONAL":
            on = frame.astype(float) >= threshold * seg.max_fractional
        else:
            on = frame > 0
        out[f.segment][:, :, k] |= on.T.astype(np.uint8)
    return out
