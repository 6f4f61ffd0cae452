"""Settings of ``biomarkers ingest`` (config file section validated by pydantic)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..config import Settings
from ..deid import DeidSettings
from .masks import MaskSettings


class IngestSettings(Settings):
    """``biomarkers ingest`` configuration (YAML, unknown keys are errors).

    Attributes:
        allow_gaps: convert stacks with missing slices (flag ``missing_slices``; the
            missing slices are filled by linear interpolation between neighbours).
            Default False: such stacks are skipped with the reason ``missing slices``.
        spacing_tolerance: relative deviation of a slice step from the median step
            (positions along the normal) still counted as uniform.
        position_tolerance_mm: two slices closer than this (mm, along the normal) are
            duplicate positions.
        pet_suv: convert PET in Bq/ml (Units BQML) to SUV body-weight (g/ml).
        philips_scaling: values of Philips MR images with a private scale slope (2005,100E):
            ``display`` (RescaleSlope/Intercept only, the values the scanner displays; the
            default) or ``precise`` (the floating-point values before display scaling,
            ``(SV * RS + RI) / (RS * SS)`` with SS = MRScaleSlope; dcm2niix's default). The
            choice applied is recorded in each sidecar (``philips_scaling``).
        compresslevel: gzip level of the ``.nii.gz`` outputs (1 = fast).
        masks: how RTSTRUCT/SEG/NIfTI masks are matched and rasterised.
        deid: de-identification (on by default).
        index_cache: where header reads are cached between runs, so an unchanged file is
            not read again: ``auto`` (the user's cache folder, ``$BIOMARKERS_CACHE_DIR`` or
            ``~/.cache/biomarkers``), ``off``, or a folder. The cache holds original
            identifiers and must stay on the source side: a folder inside the output
            (or the source) folder is refused. See :mod:`biomarkers.dicom.index_cache`.
    """

    allow_gaps: bool = False
    spacing_tolerance: float = Field(0.01, gt=0, lt=0.5)
    position_tolerance_mm: float = Field(0.01, gt=0)
    pet_suv: bool = True
    philips_scaling: Literal["display", "precise"] = "display"
    compresslevel: int = Field(1, ge=0, le=9)
    masks: MaskSettings = Field(default_factory=MaskSettings)
    deid: DeidSettings = Field(default_factory=DeidSettings)
    index_cache: str = Field("auto", min_length=1)

    def conversion_dict(self) -> dict:
        """The settings that change converted voxels/headers (part of each input hash)."""
        return {
            "allow_gaps": self.allow_gaps,
            "spacing_tolerance": self.spacing_tolerance,
            "position_tolerance_mm": self.position_tolerance_mm,
            "pet_suv": self.pet_suv,
            "philips_scaling": self.philips_scaling,
            "deid": self.deid.model_dump(mode="json"),
        }
