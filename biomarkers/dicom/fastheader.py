"""A minimal DICOM header reader for the common case, ~10x faster than pydicom's element model.

Part 10 file, little-endian implicit/explicit VR, single-frame image: it walks element
headers and keeps only :data:`HEADER_TAGS`. Anything unusual returns None and pydicom
reads the file (:func:`biomarkers.dicom.header.read_header`).
"""

from __future__ import annotations

import struct
from pathlib import Path

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
    # dimensions of multi-volume series (biomarkers.dicom.dims)
    0x00200011: ("SeriesNumber", "IS"), 0x00180081: ("EchoTime", "DS"), 0x00180080: ("RepetitionTime", "DS"),
    0x00200100: ("TemporalPositionIdentifier", "IS"), 0x00181060: ("TriggerTime", "DS"),
    0x00541300: ("FrameReferenceTime", "DS"), 0x00181242: ("ActualFrameDuration", "IS"),
    0x00189087: ("DiffusionBValue", "FD"), 0x00189089: ("DiffusionGradientOrientation", "FD"),
    0x00189075: ("DiffusionDirectionality", "CS"), 0x00181312: ("InPlanePhaseEncodingDirection", "CS"),
    0x00185100: ("PatientPosition", "CS"),
    0x00089208: ("ComplexImageComponent", "CS"),
    # vendors' private diffusion/image-type tags, as dcm2niix reads them (names are ours)
    0x00431039: ("GE_SlopInt_6_9", "IS"), 0x001910BB: ("GE_UserData20", "DS"), 0x001910BC: ("GE_UserData21", "DS"),
    0x001910BD: ("GE_UserData22", "DS"), 0x0043102F: ("GE_ImageType", "SS"),
    0x0019100C: ("Siemens_B_value", "IS"), 0x0019100E: ("Siemens_DiffusionGradientDirection", "FD"),
    0x20011003: ("Philips_DiffusionBFactor", "FL"), 0x200510B0: ("Philips_DiffusionDirectionRL", "FL"),
    0x200510B1: ("Philips_DiffusionDirectionAP", "FL"), 0x200510B2: ("Philips_DiffusionDirectionFH", "FL"),
    0x20051011: ("Philips_ImageType", "CS"),
    # refusals (biomarkers.dicom.refusals) and vendor scaling (Philips MRScaleSlope, dcm2niix's "precise")
    0x00080064: ("ConversionType", "CS"), 0x00280301: ("BurnedInAnnotation", "CS"), 0x00080070: ("Manufacturer", "LO"),
    0x2005100E: ("Philips_MRScaleSlope", "FL"),
}
#: Private attributes: our name -> (tag, VR) (pydicom reads them by tag; their VR may be UN).
PRIVATE_TAGS = {name: (tag, vr) for tag, (name, vr) in _TAGS.items() if (tag >> 16) % 2 == 1}
#: The header attributes the index reads (fast path or ``pydicom.dcmread(specific_tags=...)``).
HEADER_TAGS = [tag if (tag >> 16) % 2 == 1 else name for tag, (name, vr) in _TAGS.items() if vr != "SQ"]
_BINARY = {"FD": "d", "FL": "f", "SS": "h"}
_LONG_VRS = {b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN", b"UC", b"UR", b"OD", b"OL", b"OV", b"SV", b"UV"}
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_EXPL = struct.Struct("<HH2sH")  # group, element, VR, 16-bit length (explicit VR)
_IMPL = struct.Struct("<HHI")  # group, element, 32-bit length (implicit VR, items, delimiters)
_PIXEL = 0x7FE00010
#: Decoded values by (tag, raw bytes), bounded: files of a series repeat most values (this also
#: makes them one string object each in a large index). Not for values unique to a file:
_PER_FILE = frozenset({0x00080018, 0x00200032, 0x00200013})  # SOPInstanceUID, ImagePositionPatient, InstanceNumber
_MEMO: dict = {}
_MEMO_SIZE = 1 << 14
_MISS = object()
_MORE = object()  # _parse: the header goes on past the bytes read
_IMPLICIT = "1.2.840.10008.1.2"
_EXPLICIT = "1.2.840.10008.1.2.1"


class FastHeader:
    """Header values of one file, pydicom-like access (``get`` / attributes), strings for text VRs."""

    def __init__(self, values: dict, meta: dict, pixel: tuple[int, int] | None):
        self._v = values
        self.get = values.get  # the dict's own lookup: no Python frame per call (read_header calls it often)
        self.file_meta = dict(meta)  # dict-like, as pydicom's FileMetaDataset
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


def _skip_sequence(buf: bytes, pos: int, explicit: bool, depth: int = 0) -> int | None:
    """Position after an undefined-length sequence starting at ``pos`` (its first item), or None."""
    if depth > 8:
        return None
    n = len(buf)
    item, u32 = _IMPL.unpack_from, _U32.unpack_from  # items and delimiters: implicit layout
    elem = _EXPL.unpack_from if explicit else item
    while pos + 8 <= n:
        g, e, length = item(buf, pos)
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
            if explicit:
                g, e, vr, ln = elem(buf, pos)
                if g == 0xFFFE:
                    if e == 0xE00D:
                        pos += 8
                        break
                    ln, vpos = u32(buf, pos + 4)[0], pos + 8
                elif vr in _LONG_VRS:
                    ln, vpos = u32(buf, pos + 8)[0], pos + 12
                else:
                    vpos = pos + 8
            else:
                g, e, ln = elem(buf, pos)
                if g == 0xFFFE and e == 0xE00D:
                    pos += 8
                    break
                vpos = pos + 8
            pos = _skip_sequence(buf, vpos, explicit, depth + 1) if ln == 0xFFFFFFFF else vpos + ln
            if pos is None:
                return None
    return None


def decode_value(raw: bytes, vr: str):
    """A raw little-endian value of VR ``vr`` (text VRs: str or list of str for multi-values)."""
    if vr == "US":
        return _U16.unpack_from(raw, 0)[0] if len(raw) >= 2 else None
    if vr in _BINARY:  # little-endian binary numbers: one value, else a list
        n = len(raw) // struct.calcsize(_BINARY[vr])
        vals = list(struct.unpack_from(f"<{n}{_BINARY[vr]}", raw, 0)) if n else []
        return None if not vals else vals[0] if n == 1 else vals
    if not raw.isascii():
        raise ValueError("non-ASCII text")  # character sets: let pydicom decode
    s = raw.decode("ascii").rstrip("\x00 ").strip()
    if vr in ("DS", "IS", "CS") and "\\" in s:
        return [x.strip() for x in s.split("\\")]
    return s


def fast_header(path: Path, size: int, chunk: int = 1 << 16) -> FastHeader | None:
    """Parse the header of a simple Part 10 file (see above), or None to use pydicom.

    Reads ``chunk`` bytes (most headers are a few kB; MR vendors' private blocks (Siemens CSA,
    GE) take 10-40 kB: a smaller first read would parse those headers twice), then up to
    64 kB, then the rest of the file, only while the header runs past what was read.
    """
    with open(path, "rb", buffering=0) as fh:
        buf = fh.read(chunk)
        if len(buf) < 132 or buf[128:132] != b"DICM":
            return None
        more = (1 << 16) - chunk if chunk < 1 << 16 else size
        while True:
            try:
                res = _parse(buf, size)
            except struct.error:  # an element header cut at the end of what was read
                res = _MORE if len(buf) < size else None
            except (ValueError, UnicodeDecodeError):
                return None
            if res is not _MORE:
                return res
            extra = fh.read(more) if len(buf) < size else b""
            if not extra:
                return None
            buf += extra
            more = size


def _parse(buf: bytes, size: int):
    pos, n = 132, len(buf)
    meta: dict = {}
    while pos + 8 <= n:  # file meta group (explicit VR)
        g, e, vr, length = _EXPL.unpack_from(buf, pos)
        tag, vpos = (g << 16) | e, pos + 8
        if vr in _LONG_VRS:
            length, vpos = _U32.unpack_from(buf, pos + 8)[0], pos + 12
        if g != 0x0002:
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
    tags, long_vrs, u32, memo = _TAGS, _LONG_VRS, _U32.unpack_from, _MEMO
    unpack = _EXPL.unpack_from if explicit else _IMPL.unpack_from
    while True:  # one element per turn (the index's hot loop: no call per element)
        if pos + 8 > n:
            return _MORE if n < size else FastHeader(values, meta, None)
        if pos + 12 > n and n < size:
            return _MORE
        if explicit:
            g, e, vr, length = unpack(buf, pos)
            if g == 0xFFFE:  # item / delimiter: implicit layout
                length, vpos = u32(buf, pos + 4)[0], pos + 8
            elif vr in long_vrs:
                length, vpos = u32(buf, pos + 8)[0], pos + 12
            else:
                vpos = pos + 8
        else:
            g, e, length = unpack(buf, pos)
            vpos = pos + 8
        tag = (g << 16) | e
        if tag >= _PIXEL:
            return FastHeader(values, meta, (vpos, length) if tag == _PIXEL else None)
        if length == 0xFFFFFFFF:
            if tag == 0x52009230:
                return None  # enhanced multi-frame: pydicom
            pos = _skip_sequence(buf, vpos, explicit)
            if pos is None:
                return _MORE if n < size else None
            continue
        if vpos + length > n:
            return _MORE if n < size else None
        spec = tags.get(tag)
        if spec is not None:
            if spec[1] == "SQ":
                return None
            raw = buf[vpos : vpos + length]
            if tag in _PER_FILE:
                v = decode_value(raw, spec[1])
            else:  # values files repeat (UIDs of the series, spacing, ...): decoded once, one object
                v = memo.get((tag, raw), _MISS)
                if v is _MISS:
                    if len(memo) >= _MEMO_SIZE:
                        memo.clear()
                    v = memo[(tag, raw)] = decode_value(raw, spec[1])
                if v.__class__ is list:
                    v = v.copy()  # each header its own list
            values[spec[0]] = v
        pos = vpos + length
