"""Images the converter refuses: one definition of each "not a measurement we understand".

Each predicate takes a header accessor ``get(name)`` (``pydicom.Dataset.get`` or
:class:`~biomarkers.dicom.fastheader.FastHeader` ``.get``; DICOM keywords) and returns the
skip reason, or ``""`` when the image may be converted. :func:`biomarkers.dicom.header.read_header`
applies them to every image file (the file becomes an unsupported object with that reason,
reported as a skipped row of its series); other areas (e.g. the privacy checks of burned-in
text, issue 15) import :func:`screen_capture_reason` rather than writing their own rule.

Not refused here but elsewhere: a Siemens mosaic without its CSA count
(:mod:`biomarkers.dicom.mosaic`), a multi-frame layout that cannot be ordered
(:mod:`biomarkers.dicom.enhanced`, :func:`biomarkers.dicom.dims.assemble_volumes`).
"""

from __future__ import annotations

from typing import Callable

#: Secondary Capture SOP classes (single-frame and the four multi-frame ones).
SECONDARY_CAPTURE_SOPS = {
    "1.2.840.10008.5.1.4.1.1.7": "Secondary Capture Image",
    "1.2.840.10008.5.1.4.1.1.7.1": "Multi-frame Single Bit Secondary Capture Image",
    "1.2.840.10008.5.1.4.1.1.7.2": "Multi-frame Grayscale Byte Secondary Capture Image",
    "1.2.840.10008.5.1.4.1.1.7.3": "Multi-frame Grayscale Word Secondary Capture Image",
    "1.2.840.10008.5.1.4.1.1.7.4": "Multi-frame True Color Secondary Capture Image",
}
#: SOP classes that typically carry burned-in text (patient name, dates, site) in their pixels or content:
#: ultrasound (annotations on the image), encapsulated documents, visible-light photographs and video.
BURNED_IN_SOPS = {
    "1.2.840.10008.5.1.4.1.1.6.1": "Ultrasound Image",
    "1.2.840.10008.5.1.4.1.1.3.1": "Ultrasound Multi-frame Image",
    "1.2.840.10008.5.1.4.1.1.104.1": "Encapsulated PDF",
    "1.2.840.10008.5.1.4.1.1.104.2": "Encapsulated CDA",
    "1.2.840.10008.5.1.4.1.1.77.1.4": "VL Photographic Image",
    "1.2.840.10008.5.1.4.1.1.77.1.1.1": "Video Endoscopic Image",
    "1.2.840.10008.5.1.4.1.1.77.1.2.1": "Video Microscopic Image",
    "1.2.840.10008.5.1.4.1.1.77.1.4.1": "Video Photographic Image",
}
#: ImageType values (3rd and later) that vendors write on screen saves, photos, reports and renderings.
CAPTURE_IMAGE_TYPES = {"SCREEN SAVE", "SCREENSAVE", "SCREEN SHOT", "SCREENSHOT", "SCREEN CAPTURE", "CAPTURE",
                       "SECONDARY CAPTURE", "PHOTO", "CSA REPORT", "REPORT", "CSA 3D EDITOR", "VRT", "RENDERING"}
#: PhotometricInterpretation values of colour images.
COLOUR_PHOTOMETRICS = ("RGB", "YBR", "PALETTE", "ARGB", "CMYK", "HSV")


_PHOTOMETRIC_TERMS = {"MONOCHROME1", "MONOCHROME2", "PALETTE COLOR", "RGB", "HSV", "ARGB", "CMYK", "YBR_FULL",
                      "YBR_FULL_422", "YBR_PARTIAL_422", "YBR_PARTIAL_420", "YBR_ICT", "YBR_RCT", "XYB", ""}


def _values(v) -> tuple[str, ...]:
    if v is None:
        return ()
    if isinstance(v, (str, bytes)):
        v = str(v).split("\\")
    return tuple(str(x).strip().upper() for x in v)


def screen_capture_reason(get: Callable) -> str:
    """Why an image is likely a screen capture or carries burned-in annotation ("" if not).

    True for: a Secondary Capture SOP class (single- or multi-frame); an SOP class that typically carries
    burned-in text (:data:`BURNED_IN_SOPS`: ultrasound, encapsulated documents, photographs, video); ConversionType (0008,0064)
    present (the SC equipment module: digitised film, workstation, video...); BurnedInAnnotation
    (0028,0301) ``YES``; ImageType ``DERIVED\\SECONDARY`` with a capture value among the later
    ones (:data:`CAPTURE_IMAGE_TYPES`, e.g. GE ``SCREEN SAVE``, Siemens ``CSA REPORT``) or, single-frame,
    without patient geometry (no ImagePositionPatient/ImageOrientationPatient).

    ``DERIVED\\SECONDARY`` alone is not a reason: GE writes it on ordinary PET reconstructions
    (and scanners on reformats) whose geometry and values are real.
    """
    sop = str(get("SOPClassUID") or "")
    if sop in SECONDARY_CAPTURE_SOPS:
        return f"screen capture: {SECONDARY_CAPTURE_SOPS[sop]} (SOP class), not a measured image"
    if sop in BURNED_IN_SOPS:
        return f"burned-in text likely: {BURNED_IN_SOPS[sop]} (SOP class: annotations in the pixels or content)"
    conversion = str(get("ConversionType") or "").strip()
    if conversion:  # the defined terms only: a reason never echoes free header text
        shown = conversion if conversion in ("DV", "DI", "DF", "WSD", "SD", "SI", "DRW", "SYN") else "(other)"
        return f"screen capture: ConversionType {shown} (a converted or captured image, not a measured one)"
    if str(get("BurnedInAnnotation") or "").strip().upper() == "YES":
        return "burned-in annotation (BurnedInAnnotation YES): text in the pixels, not a clean measured image"
    it = _values(get("ImageType"))
    if it[:2] == ("DERIVED", "SECONDARY"):
        capture = [v for v in it[2:] if v in CAPTURE_IMAGE_TYPES]
        if capture:
            return f"screen capture: ImageType DERIVED\\SECONDARY\\{capture[0]} (a capture, report or rendering)"
        single = str(get("NumberOfFrames") or "1").strip() in ("", "1")  # enhanced: geometry per frame
        if single and (get("ImagePositionPatient") is None or get("ImageOrientationPatient") is None):
            return "screen capture: ImageType DERIVED\\SECONDARY without patient geometry (a capture, not a volume)"
    return ""


def colour_reason(get: Callable) -> str:
    """Why an image is colour where grey values are expected ("" if grey)."""
    pi = str(get("PhotometricInterpretation") or "").strip().upper()
    try:
        spp = int(get("SamplesPerPixel") or 1)
    except (TypeError, ValueError):
        spp = 1
    if spp > 1 or pi.startswith(COLOUR_PHOTOMETRICS):
        pi = pi if pi in _PHOTOMETRIC_TERMS else "(other)"  # defined terms only: never free header text
        return (f"colour image (PhotometricInterpretation {pi or '?'}, SamplesPerPixel {spp}): "
                "CT/MR/PET grey values expected")
    return ""


def refusal_reason(get: Callable) -> str:
    """The first reason an image file is refused (screen capture, then colour), else ""."""
    return screen_capture_reason(get) or colour_reason(get)
