"""Work items of ``biomarkers ingest`` (picklable records sent to executor workers; no secret).

:class:`ConvertJob`: one qualified image stack -> a NIfTI + sidecar (:func:`~.convert.convert_stack`).
:class:`MaskJob`: the masks of one RTSTRUCT/SEG object, or of the NIfTI masks beside one stack
(:func:`~.convert.convert_masks`). Both build their manifest rows through
:class:`biomarkers.manifest.ManifestRow`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from ..manifest import ImageRef, ManifestRow, Status
from .model import ImageStack, SegmentationObject


@dataclass
class ConvertJob:
    """One image stack to convert.

    ``settings``: the conversion settings (``IngestSettings.conversion_dict()`` + ``compresslevel``);
    ``deid``: ``DeidSettings`` as a dict (the sidecar metadata policy).
    """

    stack: ImageStack
    ref: ImageRef
    out: str
    settings: dict
    deidentified: bool = True
    input_hash: str = ""
    deid: dict = field(default_factory=dict)

    def row(self, status: str, reason: str = "", grid=None, flags: Iterable[str] = (), content_hash: str = "") -> ManifestRow:
        return ManifestRow.image(self.ref, status, reason, n_files=len({f.path for f in self.stack.files}), grid=grid,
                                 flags=flags, input_hash=self.input_hash, content_hash=content_hash)


@dataclass
class MaskJob:
    """Masks of one segmentation ``object`` (RTSTRUCT/SEG) or of ``nifti_paths`` beside ``stacks[0]``.

    ``images``: stack key -> :class:`ImageRef` of each candidate stack; ``patient_id``/``study_uid``/
    ``series_uid``: pseudonymised ids of the mask rows (the segmentation's series, or the image's for NIfTI).
    """

    stacks: list[ImageStack]
    images: dict[str, ImageRef]
    settings: object  # MaskSettings
    out: str
    patient_id: str
    study_uid: str
    series_uid: str
    input_hash: str
    compresslevel: int = 1
    object: SegmentationObject | None = None
    nifti_paths: list[str] = field(default_factory=list)

    def row(self, image: ImageRef | None, roi: str, status: str, reason: str = "", **kw) -> ManifestRow:
        return ManifestRow.mask(self.patient_id, self.study_uid, self.series_uid, image, roi, status, reason,
                                input_hash=self.input_hash, **kw)

    def failed_row(self, reason: str) -> ManifestRow:
        """The row of a job whose worker failed."""
        return self.row(None, "", Status.FAILED, reason)
