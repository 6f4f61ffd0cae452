"""Read one DICOM file's header into a :class:`HeaderResult` (pixel data never read).

Only headers are parsed: the fast reader (:mod:`.fastheader`) for simple files, else
pydicom with ``stop_before_pixels`` and a fixed tag list. Files that cannot be used (not
DICOM, unreadable, truncated pixel data) give an ``unused`` result with a reason; RTSTRUCT
and SEG files a :class:`~biomarkers.dicom.model.SegmentationObject`. Identifiers kept here
are the original DICOM values, in memory only.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from .dims import dimension_values
from .fastheader import HEADER_TAGS, PRIVATE_TAGS, FastHeader, decode_value, fast_header
from .model import DicomFile, SegmentationObject
from .refusals import refusal_reason
from .sop import DICOMDIR_SOP, IMAGE_SOPS, RTSTRUCT_SOP, SEG_SOP, UNCOMPRESSED_LE, sop_name


@dataclass
class UnusedFile:
    """An input file that was not used, with why (path relative to SRC).

    ``reason`` never contains a path (paths may carry patient names); a duplicate
    names the file it duplicates in ``duplicate_of``.
    """

    rel: str
    reason: str
    duplicate_of: str = ""



class HeaderKind(StrEnum):
    IMAGE = "image"  # a convertible image: one DicomFile per frame
    SEG = "seg"  # an RTSTRUCT or SEG
    OTHER = "other"  # a DICOM object that is not a convertible image
    UNUSED = "unused"  # not used (reason in ``unused``)


@dataclass
class HeaderResult:
    """What reading one file's header found: ``kind`` and its one payload."""

    kind: HeaderKind
    rel: str  # path relative to SRC
    frames: list[DicomFile] = field(default_factory=list)  # image
    segmentation: SegmentationObject | None = None  # seg
    other: DicomFile | None = None  # other (why: ``other.reason``)
    unused: UnusedFile | None = None  # unused
    sop_instance_uid: str = ""  # duplicate detection

    @classmethod
    def not_used(cls, rel: str, reason: str, duplicate_of: str = "") -> "HeaderResult":
        return cls(HeaderKind.UNUSED, rel, unused=UnusedFile(rel, reason, duplicate_of))


def to_float(v, default=None) -> float | None:
    """``float(v)``, else ``default`` (missing or not a number)."""
    try:
        return float(v)
    except (TypeError, ValueError):
        return default


def _i(v, default=None):
    try:
        return int(v)
    except (TypeError, ValueError):
        return default


def _getter(ds):
    """``get(name)`` for a FastHeader or a pydicom Dataset, private names of
    :data:`~biomarkers.dicom.fastheader.PRIVATE_TAGS` included (raw UN values decoded)."""
    if isinstance(ds, FastHeader):
        return ds.get

    def get(name: str):
        spec = PRIVATE_TAGS.get(name)
        if spec is None:
            return ds.get(name)
        el = ds.get(spec[0])
        v = None if el is None else el.value
        if isinstance(v, bytes):
            try:
                return decode_value(v, spec[1])
            except (ValueError, UnicodeDecodeError):
                return None
        return v

    return get


def _expected_pixel_bytes(ds) -> int | None:
    try:
        n = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1) or 1)
        n *= int(ds.get("NumberOfFrames", 1) or 1)
        bits = int(ds.BitsAllocated)
    except (AttributeError, TypeError, ValueError):
        return None
    return (n * bits + 7) // 8


def pixel_data_offset(path: Path, size: int, expected: int, explicit: bool) -> int | None:
    """Offset of the pixel bytes of an uncompressed file whose PixelData is its last element.

    Returns None when the layout is not the simple one (trailing elements, odd
    padding...): callers then fall back to pydicom.
    """
    padded = expected + (expected % 2)
    hdr_len = 12 if explicit else 8
    start = size - padded - hdr_len
    if start < 132:
        return None
    with open(path, "rb") as fh:
        fh.seek(start)
        hdr = fh.read(hdr_len)
    if hdr[:4] != b"\xe0\x7f\x10\x00":
        return None
    length = int.from_bytes(hdr[-4:], "little")
    if length != padded:
        return None
    return start + hdr_len


#: Per-frame values of an enhanced multi-frame object: name -> (functional group sequence, attribute).
FRAME_GEOMETRY = {
    "position": ("PlanePositionSequence", "ImagePositionPatient"),
    "orientation": ("PlaneOrientationSequence", "ImageOrientationPatient"),
    "spacing": ("PixelMeasuresSequence", "PixelSpacing"),
    "thickness": ("PixelMeasuresSequence", "SliceThickness"),
    "slope": ("PixelValueTransformationSequence", "RescaleSlope"),
    "intercept": ("PixelValueTransformationSequence", "RescaleIntercept"),
}


def functional_group(item, shared, seq: str, attr: str):
    """``attr`` of the first item of ``seq`` in the per-frame group ``item``, else in ``shared`` (or None)."""
    for src in (item, shared):
        s = src.get(seq) if src is not None else None
        if s and attr in s[0]:
            return s[0].get(attr)
    return None


def frame_values(ds, spec: dict = FRAME_GEOMETRY) -> list[dict]:
    """One dict per frame of a multi-frame object: ``frame`` (0-based), ``item`` (its per-frame
    functional group) and each ``spec`` name (per-frame value, else the shared one, else None)."""
    shared = ds.get("SharedFunctionalGroupsSequence")
    shared = shared[0] if shared else None
    per = ds.get("PerFrameFunctionalGroupsSequence") or []
    return [{"frame": i, "item": it, **{k: functional_group(it, shared, *sa) for k, sa in spec.items()}}
            for i, it in enumerate(per)]


def read_header(path: Path, rel: str) -> HeaderResult:
    """Read one file's header (never raises on a bad file: an ``unused`` result says why)."""
    if path.name.upper() == "DICOMDIR":
        return HeaderResult.not_used(rel, "DICOMDIR (ignored)")
    try:
        st = path.stat()
        size = st.st_size
    except OSError as err:
        return HeaderResult.not_used(rel, f"unreadable: {err.strerror}")
    if size == 0:
        return HeaderResult.not_used(rel, "empty file")
    forced = False
    pixel = None
    ds = fast_header(path, size)
    if ds is not None and ds.get("SOPClassUID") in IMAGE_SOPS and _i(ds.get("NumberOfFrames"), 1) in (None, 1):
        pixel = ds.pixel
    else:
        pydicom = load_pydicom()
        from pydicom.errors import InvalidDicomError

        try:
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=HEADER_TAGS)
            except InvalidDicomError:
                forced = True
                ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=HEADER_TAGS, force=True)
        except Exception as err:  # noqa: BLE001 - any parse failure is a reason, not a crash
            return HeaderResult.not_used(rel, f"unreadable DICOM header ({type(err).__name__})")
    sop_class = str(ds.get("SOPClassUID", "") or "")
    sop_uid = str(ds.get("SOPInstanceUID", "") or "")
    if not sop_class or not sop_uid:
        if forced:
            return HeaderResult.not_used(rel, "not a DICOM file")
        return HeaderResult.not_used(rel, "truncated or incomplete DICOM header (no SOPClassUID/SOPInstanceUID)")
    meta = getattr(ds, "file_meta", None)
    if meta is not None and str(meta.get("MediaStorageSOPClassUID", "")) == DICOMDIR_SOP or sop_class == DICOMDIR_SOP:
        return HeaderResult.not_used(rel, "DICOMDIR (ignored)")
    ts = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    def text(key: str) -> str:
        return str(ds.get(key, "") or "")

    common = dict(
        path=path, rel=rel, sop_class_uid=sop_class, sop_instance_uid=sop_uid, modality=text("Modality"),
        patient_id=text("PatientID"), study_uid=text("StudyInstanceUID"), series_uid=text("SeriesInstanceUID"),
        frame_of_reference_uid=text("FrameOfReferenceUID"), transfer_syntax_uid=ts,
    )
    intern_shared(common)
    if sop_class in (RTSTRUCT_SOP, SEG_SOP):
        return HeaderResult(HeaderKind.SEG, rel, segmentation=_segmentation(path, rel, common, sop_class), sop_instance_uid=sop_uid)
    image_type = tuple(str(x).upper() for x in (ds.get("ImageType") or ()))
    nframes = _i(ds.get("NumberOfFrames"), 1) or 1
    common.update(
        size=size, mtime_ns=st.st_mtime_ns, bits_allocated=_i(ds.get("BitsAllocated")), bits_stored=_i(ds.get("BitsStored")),
        pixel_representation=_i(ds.get("PixelRepresentation"), 0), samples_per_pixel=_i(ds.get("SamplesPerPixel"), 1),
        photometric=text("PhotometricInterpretation"), slice_thickness=to_float(ds.get("SliceThickness")),
        units=text("Units"), acquisition_date=text("AcquisitionDate"), acquisition_time=text("AcquisitionTime"),
        acquisition_datetime=text("AcquisitionDateTime"), gantry_tilt=to_float(ds.get("GantryDetectorTilt"), 0.0),
        echo_number=_i(ds.get("EchoNumbers")),
    )
    get = _getter(ds)
    if "PHILIPS" in text("Manufacturer").upper():  # private scale slope (ingest.philips_scaling)
        common["philips_scale_slope"] = to_float(get("Philips_MRScaleSlope"))
    common.update(dimension_values(get, image_type, ds.get("ImageOrientationPatient")))
    refusal = refusal_reason(get) if ds.get("Rows") is not None else ""  # screen capture, burned-in, colour
    if refusal:
        return HeaderResult(HeaderKind.OTHER, rel, other=DicomFile(**common, reason=refusal), sop_instance_uid=sop_uid)
    if sop_class in IMAGE_SOPS and (ds.get("Rows") is None or ds.get("Columns") is None):
        return HeaderResult.not_used(rel, "truncated or incomplete image header (no Rows/Columns)")
    if sop_class not in IMAGE_SOPS or ds.get("Rows") is None:
        other = DicomFile(**common, reason=f"unsupported object: {IMAGE_SOPS.get(sop_class) or sop_name(sop_class)}")
        return HeaderResult(HeaderKind.OTHER, rel, other=other, sop_instance_uid=sop_uid)
    # pixel data present and complete?
    expected = _expected_pixel_bytes(ds)
    if expected is None:
        return HeaderResult.not_used(rel, "image without Rows/Columns/BitsAllocated")
    if ts in UNCOMPRESSED_LE and pixel is not None:
        vpos, length = pixel
        if length < expected or vpos + expected > size:
            have = min(length, size - vpos)
            return HeaderResult.not_used(rel, f"truncated pixel data ({have} of {expected} bytes)")
        pixel_offset = vpos
    elif ts in UNCOMPRESSED_LE:
        off = pixel_data_offset(path, size, expected, explicit=ts == "1.2.840.10008.1.2.1")
        if off is None:
            if size < expected:
                return HeaderResult.not_used(rel, f"truncated file ({size} bytes, pixel data needs {expected})")
            # unusual layout: check with a full read
            pydicom = load_pydicom()

            try:
                full = pydicom.dcmread(path, force=forced)
                n = len(full.PixelData)
            except Exception as err:  # noqa: BLE001
                return HeaderResult.not_used(rel, f"truncated or unreadable pixel data ({type(err).__name__})")
            if n < expected:
                return HeaderResult.not_used(rel, f"truncated pixel data ({n} of {expected} bytes)")
        pixel_offset = off
    else:
        pixel_offset = None
    def floats(key: str) -> tuple[float, ...] | None:
        return tuple(float(x) for x in ds.get(key)) if ds.get(key) else None

    base = DicomFile(
        **common, rows=_i(ds.get("Rows")), columns=_i(ds.get("Columns")), pixel_spacing=floats("PixelSpacing"),
        image_orientation=floats("ImageOrientationPatient"), image_position=floats("ImagePositionPatient"),
        instance_number=_i(ds.get("InstanceNumber")), acquisition_number=_i(ds.get("AcquisitionNumber")),
        image_type=image_type, number_of_frames=nframes, rescale_slope=to_float(ds.get("RescaleSlope")),
        rescale_intercept=to_float(ds.get("RescaleIntercept")), pixel_offset=pixel_offset,
    )
    if nframes <= 1 and ds.get("PerFrameFunctionalGroupsSequence") is None:
        if "MOSAIC" in image_type:  # Siemens mosaic: one record per tile, or refused with the reason
            from .mosaic import MosaicError, read_mosaic

            try:
                return HeaderResult(HeaderKind.IMAGE, rel, frames=read_mosaic(base), sop_instance_uid=sop_uid)
            except MosaicError as err:
                base.reason = str(err)
                return HeaderResult(HeaderKind.OTHER, rel, other=base, sop_instance_uid=sop_uid)
        return HeaderResult(HeaderKind.IMAGE, rel, frames=[base], sop_instance_uid=sop_uid)
    # multi-frame: needs the functional groups (a full header read of this one file)
    pydicom = load_pydicom()

    try:
        full = pydicom.dcmread(path, stop_before_pixels=True, force=forced)
    except Exception as err:  # noqa: BLE001
        return HeaderResult.not_used(rel, f"unreadable multi-frame header ({type(err).__name__})")
    from .enhanced import LayoutError, enhanced_frames

    try:
        out = enhanced_frames(full, base)
    except LayoutError as err:
        base.reason = str(err)
        return HeaderResult(HeaderKind.OTHER, rel, other=base, sop_instance_uid=sop_uid)
    return HeaderResult(HeaderKind.IMAGE, rel, frames=out, sop_instance_uid=sop_uid)


#: Values that every file of a series (or study, or cohort) repeats: one string object each.
SHARED_FIELDS = ("sop_class_uid", "modality", "patient_id", "study_uid", "series_uid", "frame_of_reference_uid",
                 "transfer_syntax_uid")


def intern_shared(values: dict) -> dict:
    """Intern the :data:`SHARED_FIELDS` strings of ``values`` in place (memory of a large index)."""
    for k in SHARED_FIELDS:
        v = values.get(k)
        if isinstance(v, str):
            values[k] = sys.intern(v)
    return values


def _segmentation(path: Path, rel: str, common: dict, sop_class: str) -> SegmentationObject:
    pydicom = load_pydicom()

    ds = pydicom.dcmread(
        path,
        stop_before_pixels=True,
        specific_tags=["ReferencedFrameOfReferenceSequence", "ReferencedSeriesSequence", "FrameOfReferenceUID"],
        force=True,
    )
    series: list[str] = []
    sops: list[str] = []

    def refs(items, instances: str) -> None:  # referenced series and their SOP instances
        for se in items or []:
            if se.get("SeriesInstanceUID"):
                series.append(str(se.SeriesInstanceUID))
            sops.extend(str(ri.ReferencedSOPInstanceUID) for ri in se.get(instances, []) or [] if ri.get("ReferencedSOPInstanceUID"))

    for fr in ds.get("ReferencedFrameOfReferenceSequence", []) or []:  # RTSTRUCT
        for st in fr.get("RTReferencedStudySequence", []) or []:
            refs(st.get("RTReferencedSeriesSequence"), "ContourImageSequence")
    refs(ds.get("ReferencedSeriesSequence"), "ReferencedInstanceSequence")  # SEG
    for_uid = common["frame_of_reference_uid"]
    if not for_uid:
        refs = ds.get("ReferencedFrameOfReferenceSequence") or []
        if refs and refs[0].get("FrameOfReferenceUID"):
            for_uid = str(refs[0].FrameOfReferenceUID)
    return SegmentationObject(
        path=path,
        rel=rel,
        kind="RTSTRUCT" if sop_class == RTSTRUCT_SOP else "SEG",
        patient_id=common["patient_id"],
        study_uid=common["study_uid"],
        series_uid=common["series_uid"],
        frame_of_reference_uid=for_uid,
        referenced_series_uids=tuple(dict.fromkeys(series)),
        referenced_sop_uids=tuple(dict.fromkeys(sops)),
    )


#: quiet_pydicom's state: how many contexts are open, pydicom's mode before the first one silenced it.
_QUIET: dict = {"depth": 0, "saved": None}


@contextlib.contextmanager
def quiet_pydicom():
    """Silence pydicom's value-validation warnings/logs for the duration (restores the mode).

    pydicom is not imported for this (its import costs ~0.5 s and ~45 MB with its plugins,
    and the fast reader handles most files without it): a reader that needs it inside the
    context takes it from :func:`load_pydicom`, which silences it then.
    """
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _QUIET["depth"] += 1
        try:
            if "pydicom" in sys.modules:
                _silence()
            yield
        finally:
            _QUIET["depth"] -= 1
            if _QUIET["depth"] == 0 and _QUIET["saved"] is not None:
                from pydicom import config

                config.settings.reading_validation_mode = _QUIET["saved"][0]
                _QUIET["saved"] = None


def _silence() -> None:
    from pydicom import config

    if _QUIET["saved"] is None:
        _QUIET["saved"] = (config.settings.reading_validation_mode,)
        config.settings.reading_validation_mode = config.IGNORE


def load_pydicom():
    """``pydicom``, imported on first use; inside :func:`quiet_pydicom` its validation silenced."""
    import pydicom

    if _QUIET["depth"]:
        _silence()
    return pydicom

