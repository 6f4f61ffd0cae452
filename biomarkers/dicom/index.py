"""Index a folder of DICOM files: header-only reads, grouping into image stacks.

Every file under SRC is looked at (any name, recursively); ``DICOMDIR`` files are
ignored. Only headers are parsed (``stop_before_pixels``, a fixed tag list), so
indexing is fast and memory-light. Files that cannot be used (not DICOM,
unreadable, truncated pixel data, duplicate SOP instances) are collected as
:class:`UnusedFile` with a reason; they never stop the run.

Series are split into stacks where orientation, in-plane size, pixel spacing or
acquisition differ (a localizer mixed into a series becomes its own stack).
RTSTRUCT and SEG files become :class:`~biomarkers.dicom.model.SegmentationObject`.

Identifiers kept here are the original DICOM values, in memory only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from .model import DicomFile, ImageStack, SegmentationObject

RTSTRUCT_SOP = "1.2.840.10008.5.1.4.1.1.481.3"
SEG_SOP = "1.2.840.10008.5.1.4.1.1.66.4"
DICOMDIR_SOP = "1.2.840.10008.1.3.10"
#: Transfer syntaxes whose pixel data can be read straight from the file bytes.
UNCOMPRESSED_LE = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"}
#: SOP classes converted as images (single-frame and enhanced multi-frame CT/MR/PET).
IMAGE_SOPS = {
    "1.2.840.10008.5.1.4.1.1.2": "CT Image",
    "1.2.840.10008.5.1.4.1.1.2.1": "Enhanced CT Image",
    "1.2.840.10008.5.1.4.1.1.2.2": "Legacy Converted Enhanced CT Image",
    "1.2.840.10008.5.1.4.1.1.4": "MR Image",
    "1.2.840.10008.5.1.4.1.1.4.1": "Enhanced MR Image",
    "1.2.840.10008.5.1.4.1.1.4.4": "Legacy Converted Enhanced MR Image",
    "1.2.840.10008.5.1.4.1.1.128": "PET Image",
    "1.2.840.10008.5.1.4.1.1.130": "Enhanced PET Image",
    "1.2.840.10008.5.1.4.1.1.128.1": "Legacy Converted Enhanced PET Image",
}

HEADER_TAGS = [
    "SOPClassUID", "SOPInstanceUID", "Modality", "PatientID", "StudyInstanceUID", "SeriesInstanceUID",
    "FrameOfReferenceUID", "Rows", "Columns", "PixelSpacing", "ImageOrientationPatient",
    "ImagePositionPatient", "InstanceNumber", "AcquisitionNumber", "ImageType", "NumberOfFrames",
    "RescaleSlope", "RescaleIntercept", "BitsAllocated", "BitsStored", "PixelRepresentation",
    "SamplesPerPixel", "PhotometricInterpretation", "SliceThickness", "Units", "AcquisitionDate",
    "AcquisitionTime", "AcquisitionDateTime", "GantryDetectorTilt", "EchoNumbers",
]


@dataclass
class UnusedFile:
    """An input file that was not used, with why (path relative to SRC).

    ``reason`` never contains a path (paths may carry patient names); a duplicate
    names the file it duplicates in ``duplicate_of``.
    """

    rel: str
    reason: str
    duplicate_of: str = ""


@dataclass
class IndexResult:
    """What :func:`index_folder` found under SRC."""

    files: list[DicomFile] = field(default_factory=list)  # image frames/slices (one per frame)
    segmentations: list[SegmentationObject] = field(default_factory=list)
    unused: list[UnusedFile] = field(default_factory=list)
    unsupported: list[DicomFile] = field(default_factory=list)  # DICOM objects that are not convertible images
    n_files: int = 0
    n_cached: int = 0  # files whose header came from the index cache (not read again)


# --------------------------------------------------------------------------- files
def list_files(src: Path, exclude: Path | None = None) -> list[tuple[str, str, int, int]]:
    """Every regular file under ``src`` as ``(rel, path, size, mtime_ns)``, sorted by ``rel``
    (hidden temp files included), except below the folder ``exclude``."""
    from ..io import walk_files

    return walk_files(src, hidden=True, exclude=exclude)


def _f(v, default=None):
    try:
        return float(v)
    except (TypeError, ValueError):
        return default


def _i(v, default=None):
    try:
        return int(v)
    except (TypeError, ValueError):
        return default


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


def _frame_geometry(ds) -> list[dict]:
    """Per-frame position/orientation/spacing/rescale of an enhanced multi-frame object."""
    shared = ds.get("SharedFunctionalGroupsSequence")
    shared = shared[0] if shared else None
    per = ds.get("PerFrameFunctionalGroupsSequence")
    if not per:
        return []

    def grab(item, seq, attr):
        for src in (item, shared):
            if src is None:
                continue
            s = src.get(seq)
            if s and attr in s[0]:
                return s[0].get(attr)
        return None

    frames = []
    for i, item in enumerate(per):
        frames.append(
            {
                "frame": i,
                "position": grab(item, "PlanePositionSequence", "ImagePositionPatient"),
                "orientation": grab(item, "PlaneOrientationSequence", "ImageOrientationPatient"),
                "spacing": grab(item, "PixelMeasuresSequence", "PixelSpacing"),
                "thickness": grab(item, "PixelMeasuresSequence", "SliceThickness"),
                "slope": grab(item, "PixelValueTransformationSequence", "RescaleSlope"),
                "intercept": grab(item, "PixelValueTransformationSequence", "RescaleIntercept"),
            }
        )
    return frames


# --------------------------------------------------------------------------- fast header path
# A minimal reader for the common case (Part 10 file, little-endian implicit/explicit VR,
# single-frame image): it walks element headers and keeps only HEADER_TAGS, ~10x faster
# than pydicom's full element model. Anything unusual returns None and pydicom reads the file.
import struct

_TAGS = {
    0x00080016: ("SOPClassUID", "UI"), 0x00080018: ("SOPInstanceUID", "UI"), 0x00080060: ("Modality", "CS"),
    0x00100020: ("PatientID", "LO"), 0x0020000D: ("StudyInstanceUID", "UI"), 0x0020000E: ("SeriesInstanceUID", "UI"),
    0x00200052: ("FrameOfReferenceUID", "UI"), 0x00280010: ("Rows", "US"), 0x00280011: ("Columns", "US"),
    0x00280030: ("PixelSpacing", "DS"), 0x00200037: ("ImageOrientationPatient", "DS"),
    0x00200032: ("ImagePositionPatient", "DS"), 0x00200013: ("InstanceNumber", "IS"),
    0x00200012: ("AcquisitionNumber", "IS"), 0x00080008: ("ImageType", "CS"), 0x00280008: ("NumberOfFrames", "IS"),
    0x00281053: ("RescaleSlope", "DS"), 0x00281052: ("RescaleIntercept", "DS"), 0x00280100: ("BitsAllocated", "US"),
    0x00280101: ("BitsStored", "US"), 0x00280103: ("PixelRepresentation", "US"), 0x00280002: ("SamplesPerPixel", "US"),
    0x00280004: ("PhotometricInterpretation", "CS"), 0x00180050: ("SliceThickness", "DS"), 0x00541001: ("Units", "CS"),
    0x00080022: ("AcquisitionDate", "DA"), 0x00080032: ("AcquisitionTime", "TM"), 0x0008002A: ("AcquisitionDateTime", "DT"),
    0x00181120: ("GantryDetectorTilt", "DS"), 0x00180086: ("EchoNumbers", "IS"),
    0x52009230: ("PerFrameFunctionalGroupsSequence", "SQ"),
}
_LONG_VRS = {b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN", b"UC", b"UR", b"OD", b"OL", b"OV", b"SV", b"UV"}
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_HDR = struct.Struct("<HH")
_PIXEL = 0x7FE00010
_IMPLICIT = "1.2.840.10008.1.2"
_EXPLICIT = "1.2.840.10008.1.2.1"


class _Meta(dict):
    def get(self, key, default=None):  # noqa: D401 - dict-like like pydicom's FileMetaDataset
        return super().get(key, default)


class FastHeader:
    """Header values of one file, pydicom-like access (``get`` / attributes), strings for text VRs."""

    def __init__(self, values: dict, meta: dict, pixel: tuple[int, int] | None):
        self._v = values
        self.file_meta = _Meta(meta)
        self.pixel = pixel  # (value offset, length) of PixelData, or None

    def get(self, key, default=None):
        return self._v.get(key, default)

    def __contains__(self, key) -> bool:
        return key in self._v

    def __getattr__(self, key):
        try:
            return self.__dict__["_v"][key]
        except KeyError:
            raise AttributeError(key) from None


def _elem(buf: bytes, pos: int, explicit: bool) -> tuple[int, bytes | None, int, int]:
    g, e = _HDR.unpack_from(buf, pos)
    if explicit and g != 0xFFFE:
        vr = buf[pos + 4 : pos + 6]
        if vr in _LONG_VRS:
            return (g << 16) | e, vr, _U32.unpack_from(buf, pos + 8)[0], pos + 12
        return (g << 16) | e, vr, _U16.unpack_from(buf, pos + 6)[0], pos + 8
    return (g << 16) | e, None, _U32.unpack_from(buf, pos + 4)[0], pos + 8


def _skip_sequence(buf: bytes, pos: int, explicit: bool, depth: int = 0) -> int | None:
    """Position after an undefined-length sequence starting at ``pos`` (its first item), or None."""
    if depth > 8:
        return None
    n = len(buf)
    while pos + 8 <= n:
        g, e = _HDR.unpack_from(buf, pos)
        length = _U32.unpack_from(buf, pos + 4)[0]
        pos += 8
        if g == 0xFFFE and e == 0xE0DD:
            return pos
        if g != 0xFFFE or e != 0xE000:
            return None
        if length != 0xFFFFFFFF:
            pos += length
            continue
        while True:  # undefined-length item: elements until the item delimiter
            if pos + 8 > n:
                return None
            g, e = _HDR.unpack_from(buf, pos)
            if g == 0xFFFE and e == 0xE00D:
                pos += 8
                break
            _, _, ln, vpos = _elem(buf, pos, explicit)
            pos = _skip_sequence(buf, vpos, explicit, depth + 1) if ln == 0xFFFFFFFF else vpos + ln
            if pos is None:
                return None
    return None


def _decode(raw: bytes, vr: str):
    if vr == "US":
        return _U16.unpack_from(raw, 0)[0] if len(raw) >= 2 else None
    if not raw.isascii():
        raise ValueError("non-ASCII text")  # character sets: let pydicom decode
    s = raw.decode("ascii").rstrip("\x00 ").strip()
    if vr in ("DS", "IS", "CS") and "\\" in s:
        return [x.strip() for x in s.split("\\")]
    return s


def fast_header(path: Path, size: int, chunk: int = 1 << 16) -> FastHeader | None:
    """Parse the header of a simple Part 10 file (see above), or None to use pydicom."""
    with open(path, "rb") as fh:
        buf = fh.read(chunk)
        if len(buf) < 132 or buf[128:132] != b"DICM":
            return None
        try:
            res = _parse(buf, size)
            if res is None and len(buf) < size:
                buf += fh.read()
                res = _parse(buf, size)
        except (struct.error, ValueError, UnicodeDecodeError):
            return None
    return res


def _parse(buf: bytes, size: int) -> FastHeader | None:
    pos, n = 132, len(buf)
    meta: dict = {}
    while pos + 8 <= n:
        tag, vr, length, vpos = _elem(buf, pos, True)
        if tag >> 16 != 0x0002:
            break
        if tag == 0x00020010:
            meta["TransferSyntaxUID"] = buf[vpos : vpos + length].decode("ascii").rstrip("\x00 ")
        elif tag == 0x00020002:
            meta["MediaStorageSOPClassUID"] = buf[vpos : vpos + length].decode("ascii").rstrip("\x00 ")
        pos = vpos + length
    ts = meta.get("TransferSyntaxUID")
    if ts not in (_IMPLICIT, _EXPLICIT):
        return None  # compressed / big endian / deflated: pydicom
    explicit = ts == _EXPLICIT
    values: dict = {}
    while True:
        if pos + 8 > n:
            return None if n < size else FastHeader(values, meta, None)
        if pos + 12 > n and n < size:
            return None
        tag, vr, length, vpos = _elem(buf, pos, explicit)
        if tag == _PIXEL:
            return FastHeader(values, meta, (vpos, length))
        if tag > _PIXEL:
            return FastHeader(values, meta, None)
        if length == 0xFFFFFFFF:
            if tag == 0x52009230:
                return None  # enhanced multi-frame: pydicom
            pos = _skip_sequence(buf, vpos, explicit)
            if pos is None:
                return None
            continue
        if vpos + length > n:
            return None
        spec = _TAGS.get(tag)
        if spec is not None:
            if spec[1] == "SQ":
                return None
            values[spec[0]] = _decode(buf[vpos : vpos + length], spec[1])
        pos = vpos + length


def read_header(path: Path, rel: str) -> tuple[str, object]:
    """Read one file's header. Returns ``(kind, value)``.

    kind is ``"image"`` (value: list of DicomFile, one per frame), ``"seg"``
    (SegmentationObject), ``"other"`` (DicomFile of an unsupported object) or
    ``"unused"`` (UnusedFile).
    """
    if path.name.upper() == "DICOMDIR":
        return "unused", UnusedFile(rel, "DICOMDIR (ignored)")
    try:
        st = path.stat()
        size = st.st_size
    except OSError as err:
        return "unused", UnusedFile(rel, f"unreadable: {err.strerror}")
    if size == 0:
        return "unused", UnusedFile(rel, "empty file")
    forced = False
    pixel = None
    ds = fast_header(path, size)
    if ds is not None and ds.get("SOPClassUID") in IMAGE_SOPS and _i(ds.get("NumberOfFrames"), 1) in (None, 1):
        pixel = ds.pixel
    else:
        import pydicom
        from pydicom.errors import InvalidDicomError

        try:
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=HEADER_TAGS)
            except InvalidDicomError:
                forced = True
                ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=HEADER_TAGS, force=True)
        except Exception as err:  # noqa: BLE001 - any parse failure is a reason, not a crash
            return "unused", UnusedFile(rel, f"unreadable DICOM header ({type(err).__name__})")
    sop_class = str(ds.get("SOPClassUID", "") or "")
    sop_uid = str(ds.get("SOPInstanceUID", "") or "")
    if not sop_class or not sop_uid:
        if forced:
            return "unused", UnusedFile(rel, "not a DICOM file")
        return "unused", UnusedFile(rel, "truncated or incomplete DICOM header (no SOPClassUID/SOPInstanceUID)")
    meta = getattr(ds, "file_meta", None)
    if meta is not None and str(meta.get("MediaStorageSOPClassUID", "")) == DICOMDIR_SOP or sop_class == DICOMDIR_SOP:
        return "unused", UnusedFile(rel, "DICOMDIR (ignored)")
    ts = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    common = dict(
        path=path,
        rel=rel,
        sop_class_uid=sop_class,
        sop_instance_uid=sop_uid,
        modality=str(ds.get("Modality", "") or ""),
        patient_id=str(ds.get("PatientID", "") or ""),
        study_uid=str(ds.get("StudyInstanceUID", "") or ""),
        series_uid=str(ds.get("SeriesInstanceUID", "") or ""),
        frame_of_reference_uid=str(ds.get("FrameOfReferenceUID", "") or ""),
        transfer_syntax_uid=ts,
    )
    intern_shared(common)
    if sop_class in (RTSTRUCT_SOP, SEG_SOP):
        return "seg", (_segmentation(path, rel, common, sop_class), sop_uid)
    image_type = tuple(str(x).upper() for x in (ds.get("ImageType") or ()))
    nframes = _i(ds.get("NumberOfFrames"), 1) or 1
    common.update(
        size=size,
        mtime_ns=st.st_mtime_ns,
        bits_allocated=_i(ds.get("BitsAllocated")),
        bits_stored=_i(ds.get("BitsStored")),
        pixel_representation=_i(ds.get("PixelRepresentation"), 0),
        samples_per_pixel=_i(ds.get("SamplesPerPixel"), 1),
        photometric=str(ds.get("PhotometricInterpretation", "") or ""),
        slice_thickness=_f(ds.get("SliceThickness")),
        units=str(ds.get("Units", "") or ""),
        acquisition_date=str(ds.get("AcquisitionDate", "") or ""),
        acquisition_time=str(ds.get("AcquisitionTime", "") or ""),
        acquisition_datetime=str(ds.get("AcquisitionDateTime", "") or ""),
        gantry_tilt=_f(ds.get("GantryDetectorTilt"), 0.0),
        echo_number=_i(ds.get("EchoNumbers")),
    )
    if sop_class in IMAGE_SOPS and (ds.get("Rows") is None or ds.get("Columns") is None):
        return "unused", UnusedFile(rel, "truncated or incomplete image header (no Rows/Columns)")
    if sop_class not in IMAGE_SOPS or ds.get("Rows") is None:
        return "other", DicomFile(**common, reason=f"unsupported object: {IMAGE_SOPS.get(sop_class) or _sop_name(sop_class)}")
    # pixel data present and complete?
    expected = _expected_pixel_bytes(ds)
    if expected is None:
        return "unused", UnusedFile(rel, "image without Rows/Columns/BitsAllocated")
    if ts in UNCOMPRESSED_LE and pixel is not None:
        vpos, length = pixel
        if length < expected or vpos + expected > size:
            have = min(length, size - vpos)
            return "unused", UnusedFile(rel, f"truncated pixel data ({have} of {expected} bytes)")
        pixel_offset = vpos
    elif ts in UNCOMPRESSED_LE:
        off = pixel_data_offset(path, size, expected, explicit=ts == "1.2.840.10008.1.2.1")
        if off is None:
            if size < expected:
                return "unused", UnusedFile(rel, f"truncated file ({size} bytes, pixel data needs {expected})")
            # unusual layout: check with a full read
            import pydicom

            try:
                full = pydicom.dcmread(path, force=forced)
                n = len(full.PixelData)
            except Exception as err:  # noqa: BLE001
                return "unused", UnusedFile(rel, f"truncated or unreadable pixel data ({type(err).__name__})")
            if n < expected:
                return "unused", UnusedFile(rel, f"truncated pixel data ({n} of {expected} bytes)")
        pixel_offset = off
    else:
        pixel_offset = None
    base = DicomFile(
        **common,
        rows=_i(ds.get("Rows")),
        columns=_i(ds.get("Columns")),
        pixel_spacing=tuple(float(x) for x in ds.PixelSpacing) if ds.get("PixelSpacing") else None,
        image_orientation=tuple(float(x) for x in ds.ImageOrientationPatient) if ds.get("ImageOrientationPatient") else None,
        image_position=tuple(float(x) for x in ds.ImagePositionPatient) if ds.get("ImagePositionPatient") else None,
        instance_number=_i(ds.get("InstanceNumber")),
        acquisition_number=_i(ds.get("AcquisitionNumber")),
        image_type=image_type,
        number_of_frames=nframes,
        rescale_slope=_f(ds.get("RescaleSlope")),
        rescale_intercept=_f(ds.get("RescaleIntercept")),
        pixel_offset=pixel_offset,
    )
    if nframes <= 1 and ds.get("PerFrameFunctionalGroupsSequence") is None:
        return "image", [base]
    # multi-frame: needs the functional groups (a full header read of this one file)
    import pydicom

    try:
        full = pydicom.dcmread(path, stop_before_pixels=True, force=forced)
    except Exception as err:  # noqa: BLE001
        return "unused", UnusedFile(rel, f"unreadable multi-frame header ({type(err).__name__})")
    frames = _frame_geometry(full)
    if not frames or any(f["position"] is None for f in frames):
        base.reason = "unsupported object: multi-frame image without per-frame positions"
        return "other", base
    out = [
        dataclasses.replace(
            base,
            frame=fr["frame"],
            pixel_offset=None,
            slice_thickness=_f(fr["thickness"]) if fr["thickness"] is not None else base.slice_thickness,
            pixel_spacing=tuple(float(x) for x in fr["spacing"]) if fr["spacing"] else base.pixel_spacing,
            image_orientation=tuple(float(x) for x in fr["orientation"]) if fr["orientation"] else base.image_orientation,
            image_position=tuple(float(x) for x in fr["position"]),
            instance_number=fr["frame"] + 1,
            rescale_slope=_f(fr["slope"], base.rescale_slope),
            rescale_intercept=_f(fr["intercept"], base.rescale_intercept),
        )
        for fr in frames
    ]
    return "image", out


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


def _sop_name(uid: str) -> str:
    try:
        from pydicom.uid import UID

        name = UID(uid).name
        return name if name != uid else f"SOP class {uid}"
    except Exception:  # noqa: BLE001
        return f"SOP class {uid}"


def _segmentation(path: Path, rel: str, common: dict, sop_class: str) -> SegmentationObject:
    import pydicom

    ds = pydicom.dcmread(
        path,
        stop_before_pixels=True,
        specific_tags=["ReferencedFrameOfReferenceSequence", "ReferencedSeriesSequence", "FrameOfReferenceUID"],
        force=True,
    )
    series: list[str] = []
    sops: list[str] = []
    for fr in ds.get("ReferencedFrameOfReferenceSequence", []) or []:
        for st in fr.get("RTReferencedStudySequence", []) or []:
            for se in st.get("RTReferencedSeriesSequence", []) or []:
                if se.get("SeriesInstanceUID"):
                    series.append(str(se.SeriesInstanceUID))
                for ci in se.get("ContourImageSequence", []) or []:
                    if ci.get("ReferencedSOPInstanceUID"):
                        sops.append(str(ci.ReferencedSOPInstanceUID))
    for se in ds.get("ReferencedSeriesSequence", []) or []:
        if se.get("SeriesInstanceUID"):
            series.append(str(se.SeriesInstanceUID))
        for ri in se.get("ReferencedInstanceSequence", []) or []:
            if ri.get("ReferencedSOPInstanceUID"):
                sops.append(str(ri.ReferencedSOPInstanceUID))
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


@contextlib.contextmanager
def quiet_pydicom():
    """Silence pydicom's value-validation warnings/logs for the duration (restores the mode)."""
    import warnings

    from pydicom import config

    mode = config.settings.reading_validation_mode
    try:
        config.settings.reading_validation_mode = config.IGNORE
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        config.settings.reading_validation_mode = mode


def index_paths(items: list[tuple[str, str]]) -> list[tuple[str, object]]:
    """Read the headers of ``(absolute path, rel)`` pairs (a work item: picklable, top level)."""
    with quiet_pydicom():
        return _index_paths(items, [])


def _index_paths(items, out):
    for p, rel in items:
        try:
            out.append(read_header(Path(p), rel))
        except Exception as err:  # noqa: BLE001 - never fatal
            out.append(("unused", UnusedFile(rel, f"unreadable ({type(err).__name__}: {err})")))
    return out


def collect(results: Iterable[tuple[str, object]], n_files: int) -> IndexResult:
    """Merge header results; flag duplicate SOP instances (the first path in sorted order wins)."""
    res = IndexResult(n_files=n_files)
    rows = sorted(results, key=lambda kv: _rel_of(kv))
    seen: dict[str, str] = {}
    for kind, v in rows:
        if kind == "unused":
            res.unused.append(v)
            continue
        rel = _rel_of((kind, v))
        key = v[0].sop_instance_uid if kind == "image" else v[1] if kind == "seg" else v.sop_instance_uid
        if key in seen:
            res.unused.append(UnusedFile(rel, "duplicate (same SOP instance as another file)", duplicate_of=seen[key]))
            continue
        seen[key] = rel
        if kind == "image":
            res.files.extend(v)
        elif kind == "seg":
            res.segmentations.append(v[0])
        else:
            res.unsupported.append(v)
    res.unused.sort(key=lambda u: u.rel)
    return res


def _rel_of(kv) -> str:
    kind, v = kv
    if kind in ("image", "seg"):
        return v[0].rel
    return v.rel


def index_folder(src: str | Path, exclude: Path | None = None, executor=None, chunk: int = 256,
                 cache=None) -> IndexResult:
    """Index every file under ``src`` (header reads; ``executor`` parallelises chunks of files).

    ``cache``: an optional :class:`~biomarkers.dicom.index_cache.IndexCache`; files whose
    size and mtime are unchanged since they were cached are not read again
    (``IndexResult.n_cached`` counts them), and the cache is updated with the new reads.
    """
    src = Path(src)
    todo, hits, present = split_cached(list_files(src, exclude), cache)
    return merge(todo, read_headers(todo, executor, chunk), hits, present, cache)


def merge(todo: list[tuple[str, str, int, int]], fresh: list, hits: list, present: set[str], cache=None) -> IndexResult:
    """Store the fresh reads of ``todo`` in ``cache`` (if any) and collect them with the cached ``hits``."""
    if cache is not None:
        cache.update(((rel, size, mt, kind, v) for (_, rel, size, mt), (kind, v) in zip(todo, fresh)), present)
    res = collect(hits + fresh, len(present))
    res.n_cached = len(hits)
    return res


def split_cached(entries: list[tuple[str, str, int, int]], cache=None
                 ) -> tuple[list[tuple[str, str, int, int]], list, set[str]]:
    """``(to read, cached results, every rel)`` of :func:`list_files` entries.

    Files to read are ``(path, rel, size, mtime_ns)``.
    """
    todo: list[tuple[str, str, int, int]] = []
    hits: list = []
    present: set[str] = set()
    for rel, path, size, mt in entries:
        present.add(rel)
        hit = cache.lookup(rel, path, size, mt) if cache is not None else None
        if hit is not None:
            hits.append(hit)
        else:
            todo.append((path, rel, size, mt))
    return todo, hits, present


def read_headers(todo: list[tuple[str, str, int, int]], executor=None, chunk: int = 256) -> list[tuple[str, object]]:
    """Header results of ``todo`` (see :func:`split_cached`), in its order; chunks go to ``executor``."""
    pairs = [(p, rel) for p, rel, _, _ in todo]
    if executor is None or len(pairs) <= chunk:
        return index_paths(pairs)
    n = max(1, min(len(pairs) // chunk + 1, 4 * max(1, executor.workers)))
    size = -(-len(pairs) // n)
    parts: dict[int, list] = {}
    items = [(f"index-{i}", pairs[i * size : (i + 1) * size]) for i in range(n)]
    for out in executor.map_unordered(index_paths, items):
        i = int(out.key.split("-")[1])
        if out.ok:
            parts[i] = out.value
        else:
            parts[i] = [("unused", UnusedFile(rel, f"unreadable ({out.error})")) for _, rel in pairs[i * size : (i + 1) * size]]
    return [r for i in range(n) for r in parts.get(i, [])]


# --------------------------------------------------------------------------- stacks
def _orientation_key(iop) -> tuple:
    if iop is None:
        return ("none",)
    return tuple(round(float(x), 4) for x in iop)


def is_localizer(f: DicomFile) -> bool:
    return "LOCALIZER" in f.image_type


def build_stacks(files: list[DicomFile]) -> list[ImageStack]:
    """Group image frames into patient/study/series, then split each series into stacks.

    Split keys: orientation (rounded to 1e-4), rows x columns, pixel spacing, localizer
    image type; then acquisition number when positions repeat inside a group. Stacks
    of a series are ordered by decreasing slice count: the largest has key ``<series>``,
    further ones ``<series>#2``, ``#3``...
    """
    by_series: dict[tuple, list[DicomFile]] = defaultdict(list)
    for f in files:
        by_series[(f.patient_id, f.study_uid, f.series_uid)].append(f)
    stacks: list[ImageStack] = []
    for (pid, study, series), fs in sorted(by_series.items()):
        groups: dict[tuple, list[DicomFile]] = defaultdict(list)
        for f in fs:
            k = (
                _orientation_key(f.image_orientation),
                f.rows,
                f.columns,
                tuple(round(x, 4) for x in f.pixel_spacing) if f.pixel_spacing else None,
                is_localizer(f),
            )
            groups[k].append(f)
        parts: list[list[DicomFile]] = []
        for g in groups.values():
            parts.extend(_split_acquisitions(g))
        parts.sort(key=lambda p: (-len(p), p[0].instance_number or 0, p[0].rel))
        for n, part in enumerate(parts, start=1):
            first = part[0]
            stacks.append(
                ImageStack(
                    key=series if n == 1 else f"{series}#{n}",
                    patient_id=pid,
                    study_uid=study,
                    series_uid=series,
                    modality=first.modality,
                    frame_of_reference_uid=first.frame_of_reference_uid,
                    files=sort_along_normal(part),
                )
            )
    return stacks


def _positions_along_normal(fs: list[DicomFile]) -> np.ndarray | None:
    iop = fs[0].image_orientation
    if iop is None or any(f.image_position is None for f in fs):
        return None
    normal = np.cross(np.asarray(iop[:3]), np.asarray(iop[3:]))
    return np.asarray([f.image_position for f in fs], dtype=float) @ normal


def _split_acquisitions(fs: list[DicomFile]) -> list[list[DicomFile]]:
    d = _positions_along_normal(fs)
    if d is None or len(fs) < 2:
        return [fs]
    if len(np.unique(np.round(d, 3))) == len(d):
        return [fs]
    for attr in ("acquisition_number", "echo_number"):
        vals = {getattr(f, attr) for f in fs}
        if len(vals) > 1:
            out: dict = defaultdict(list)
            for f in fs:
                out[getattr(f, attr)].append(f)
            return list(out.values())
    return [fs]


def sort_along_normal(fs: list[DicomFile]) -> list[DicomFile]:
    """Sort frames by position along the slice normal (then instance number, path)."""
    d = _positions_along_normal(fs)
    if d is None:
        return sorted(fs, key=lambda f: (f.instance_number or 0, f.rel))
    order = sorted(range(len(fs)), key=lambda i: (round(float(d[i]), 4), fs[i].instance_number or 0, fs[i].rel))
    return [fs[i] for i in order]
