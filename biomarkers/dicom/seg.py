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
    """Read a DICOM SEG with ``highdicom.seg.segread`` (pixel data decoded later).

    Per-frame values come from the functional-group walk the index uses
    (:func:`biomarkers.dicom.header.frame_values`): per-frame group, else the shared one.
    """
    import highdicom as hd

    from .header import FRAME_GEOMETRY, frame_values, functional_group

    seg = hd.seg.segread(str(path))
    shared = _first(seg, "SharedFunctionalGroupsSequence")
    segments = {int(s.SegmentNumber): str(s.get("SegmentLabel", f"segment_{int(s.SegmentNumber)}")) for s in seg.SegmentSequence}
    single = next(iter(segments)) if len(segments) == 1 else 0
    spec = {**FRAME_GEOMETRY, "segment": ("SegmentIdentificationSequence", "ReferencedSegmentNumber")}
    per = frame_values(seg, spec)

    def first(name: str, seq: str, attr: str):  # the shared value, else the first frame's
        v = functional_group(None, shared, seq, attr)
        return v if v is not None else next((f[name] for f in per if f[name] is not None), None)

    iop = first("orientation", *FRAME_GEOMETRY["orientation"])
    spacing = first("spacing", *FRAME_GEOMETRY["spacing"])
    frames: list[SegFrame] = []
    for f in per:
        src = _first(_first(f["item"], "DerivationImageSequence"), "SourceImageSequence")
        sop = str(src.ReferencedSOPInstanceUID) if src is not None and src.get("ReferencedSOPInstanceUID") else None
        pos = tuple(float(x) for x in f["position"]) if f["position"] else None
        frames.append(SegFrame(int(f["segment"]) if f["segment"] is not None else single, pos, sop, f["frame"]))
    series = tuple(str(s.SeriesInstanceUID) for s in seg.get("ReferencedSeriesSequence", []) if s.get("SeriesInstanceUID"))
    return SegObject(
        path=Path(path),
        seg_type=str(seg.SegmentationType).upper(),
        max_fractional=int(seg.get("MaximumFractionalValue", 1) or 1),
        rows=int(seg.Rows),
        columns=int(seg.Columns),
        orientation=tuple(float(x) for x in iop) if iop else None,
        pixel_spacing=(float(spacing[0]), float(spacing[1])) if spacing else None,
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
