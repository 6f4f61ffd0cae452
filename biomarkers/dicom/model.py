"""Data model shared by the ingest steps (index -> qualify -> convert -> masks).

Identifiers here are the *original* DICOM values (hospital side, in memory only).
They are pseudonymised (``biomarkers.deid``) before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..geometry import Grid


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
    extra: dict = field(default_factory=dict)


@dataclass
class ImageStack:
    """One geometrically consistent stack of slices (a series may split into several)."""

    key: str  # stable id within the run, e.g. "<series_uid>" or "<series_uid>#2"
    patient_id: str
    study_uid: str
    series_uid: str
    modality: str
    frame_of_reference_uid: str
    files: list[DicomFile]  # sorted along the slice normal
    grid: Grid | None = None
    qc: dict = field(default_factory=dict)  # flag name -> value (bool/number/str)
    status: str = "pending"  # converted | skipped | failed
    reason: str = ""
    out_path: str = ""  # NIfTI path relative to OUT, once converted

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
