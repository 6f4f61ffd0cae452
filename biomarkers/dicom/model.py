"""Data model shared by the ingest steps (index -> qualify -> convert -> masks).

Identifiers here are the *original* DICOM values (hospital side, in memory only).
They are pseudonymised (``biomarkers.deid``) before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..geometry import Grid
from ..manifest import Status


@dataclass(slots=True)
class DicomFile:
    """Header summary of one indexed DICOM file (pixel data not read).

    Slotted (no per-instance ``__dict__``): a cohort's index holds one per file.
    """

    path: Path
    rel: str  # path relative to SRC (for reports)
    sop_class_uid: str
    sop_instance_uid: str
    modality: str
    patient_id: str
    study_uid: str
    series_uid: str
    frame_of_reference_uid: str = ""
    transfer_syntax_uid: str = ""
    rows: int | None = None
    columns: int | None = None
    pixel_spacing: tuple[float, float] | None = None
    image_orientation: tuple[float, ...] | None = None
    image_position: tuple[float, float, float] | None = None
    instance_number: int | None = None
    acquisition_number: int | None = None
    image_type: tuple[str, ...] = ()
    number_of_frames: int = 1
    rescale_slope: float | None = None
    rescale_intercept: float | None = None
    size: int | None = None  # file size (bytes) and modification time (ns) when indexed
    mtime_ns: int | None = None
    bits_allocated: int | None = None
    bits_stored: int | None = None
    pixel_representation: int = 0
    samples_per_pixel: int | None = 1
    photometric: str = ""
    slice_thickness: float | None = None  # mm
    units: str = ""  # DICOM Units (PET: BQML, GML...)
    acquisition_date: str = ""  # original DICOM DA/TM/DT values (hospital side only)
    acquisition_time: str = ""
    acquisition_datetime: str = ""
    gantry_tilt: float | None = 0.0  # degrees
    echo_number: int | None = None
    frame: int | None = None  # frame index in a multi-frame file (None: single frame)
    pixel_offset: int | None = None  # byte offset of uncompressed pixel data (fast read), else None
    reason: str = ""  # why an object is not converted (unsupported objects)
    # Per-frame values of the dimensions a multi-volume series varies along (filled by the
    # header reader, for enhanced/mosaic frames by their decoders; read by biomarkers.dicom.dims).
    series_number: int | None = None
    echo_time: float | None = None  # ms
    repetition_time: float | None = None  # ms
    temporal_position: int | None = None  # TemporalPositionIdentifier (enhanced: TemporalPositionIndex)
    trigger_time: float | None = None  # ms
    frame_reference_time: float | None = None  # ms (PET FrameReferenceTime, from the injection/start)
    frame_duration: float | None = None  # ms (PET ActualFrameDuration)
    b_value: float | None = None  # s/mm^2
    gradient: tuple[float, float, float] | None = None  # diffusion direction, LPS patient coordinates
    gradient_image: tuple[float, float, float] | None = None  # GE's image-frame vector (dims turns it into gradient)
    phase_encoding: str = ""  # InPlanePhaseEncodingDirection: "ROW" / "COL"
    patient_position: str = ""  # PatientPosition, e.g. "HFS"
    complex_part: str = ""  # "" (magnitude / not stated), "phase", "real" or "imaginary"
    # Pixel source and values of a slice cut from a larger stored image (biomarkers.dicom.mosaic).
    tile: tuple[int, int, int, int] | None = None  # (stored rows, stored columns, first row, first column)
    slice_time_ms: float | None = None  # slice timing (Siemens MosaicRefAcqTimes), ms from the volume's start
    philips_scale_slope: float | None = None  # Philips MRScaleSlope (2005,100E): precise = display / (RS * SS)


@dataclass
class ImageStack:
    """One geometrically consistent stack of slices (a series may split into several)."""

    key: str  # stable id within the run, e.g. "<series_uid>" or "<series_uid>#2"
    patient_id: str
    study_uid: str
    series_uid: str
    modality: str
    frame_of_reference_uid: str
    files: list[DicomFile]  # the first volume's slices, sorted along the slice normal
    grid: Grid | None = None  # the 3-D grid of one volume
    qc: dict = field(default_factory=dict)  # flag name -> value (bool/number/str)
    status: Status = Status.PENDING  # then converted | skipped | failed
    reason: str = ""

    #: Every volume's slices in ``files`` order (``volumes[0] is files``); empty for a 3-D stack.
    volumes: list[list[DicomFile]] = field(default_factory=list)
    dimension: str = ""  # what the 4th axis is: "time" or "diffusion" ("" for 3-D)
    ordered_by: str = ""  # the attribute that orders the volumes (e.g. "TemporalPositionIdentifier")
    label: tuple[str, ...] = ()  # output name parts of a split series, e.g. ("e2",), ("ph",)
    part: int = 1  # 2, 3...: further geometric stacks of the same series and label

    @property
    def n_volumes(self) -> int:
        return len(self.volumes) or 1

    @property
    def all_files(self) -> list[DicomFile]:
        """Every frame of the stack, volume after volume."""
        return [f for v in self.volumes for f in v] if self.volumes else self.files

    @property
    def sop_instance_uids(self) -> list[str]:
        return [f.sop_instance_uid for f in self.files]


@dataclass
class SegmentationObject:
    """An RTSTRUCT or SEG file found by the index (parsed later)."""

    path: Path
    rel: str
    kind: str  # "RTSTRUCT" | "SEG"
    patient_id: str
    study_uid: str
    series_uid: str
    frame_of_reference_uid: str = ""
    referenced_series_uids: tuple[str, ...] = ()
    referenced_sop_uids: tuple[str, ...] = ()
