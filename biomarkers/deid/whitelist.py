"""Whitelisted acquisition metadata: the only DICOM attributes that reach sidecars,
manifests, feature tables and MLflow.

Whitelist, not blacklist: anything not listed here is dropped, wherever the source
hid identity (free text, protocol names, private tags, sequences). Values are
further restricted by type: numbers must parse as numbers, and text values must
match a conservative pattern (no free text). Dates are never copied.
"""

from __future__ import annotations

import math
import re
from typing import Any, Iterable

from .normalise import fold_key, institution_words, name_components

#: DICOM keyword -> (sidecar key, kind). kind: "num", "nums" (multi-valued numbers) or "code" (short code string).
SIDECAR_ATTRIBUTES: dict[str, tuple[str, str]] = {
    "Modality": ("modality", "code"),
    "Manufacturer": ("manufacturer", "code"),
    "ManufacturerModelName": ("model", "code"),
    "KVP": ("kvp", "num"),
    "XRayTubeCurrent": ("tube_current_ma", "num"),
    "Exposure": ("exposure_mas", "num"),
    "ConvolutionKernel": ("convolution_kernel", "code"),
    "SliceThickness": ("slice_thickness_mm", "num"),
    "PixelSpacing": ("pixel_spacing_mm", "nums"),
    "MagneticFieldStrength": ("field_strength_t", "num"),
    "EchoTime": ("echo_time_ms", "num"),
    "RepetitionTime": ("repetition_time_ms", "num"),
    "FlipAngle": ("flip_angle_deg", "num"),
    "ScanningSequence": ("scanning_sequence", "code"),
    "MRAcquisitionType": ("mr_acquisition_type", "code"),
    "Units": ("units", "code"),
    "DecayCorrection": ("decay_correction", "code"),
    "CorrectedImage": ("corrected_image", "code"),
    "BodyPartExamined": ("body_part", "code"),
    "PatientPosition": ("patient_position", "code"),
    "ContrastBolusAgent": ("contrast_agent_present", "present"),
    "ReconstructionMethod": ("reconstruction_method", "code"),
}

#: Attributes never whitelisted, whatever a config says: free text and site-specific names
#: where real exports hide identity (protocol names like ``MGH_...``, descriptions that
#: repeat the patient id, station names, serial numbers, comments...).
NEVER_WHITELISTED: frozenset[str] = frozenset(
    {
        "ProtocolName", "SeriesDescription", "StudyDescription", "StudyID", "StationName",
        "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName", "DeviceSerialNumber",
        "AdditionalPatientHistory", "ImageComments", "PatientComments", "StudyComments",
        "RequestedProcedureDescription", "PerformedProcedureStepDescription", "AccessionNumber",
        "ContributingEquipmentSequence", "DerivationDescription", "OperatorsName", "SoftwareVersions",
    }
)

#: Attributes whose values identify the patient, the site or a device; a whitelisted code
#: containing one of them (e.g. a kernel named after the patient id) is dropped.
IDENTIFYING_ATTRIBUTES: tuple[str, ...] = (
    "PatientID", "PatientName", "OtherPatientIDs", "OtherPatientNames", "PatientBirthName",
    "PatientMotherBirthName", "AccessionNumber", "StudyID", "InstitutionName", "InstitutionAddress",
    "InstitutionalDepartmentName", "StationName", "DeviceSerialNumber", "ReferringPhysicianName",
    "PerformingPhysicianName", "OperatorsName", "PhysiciansOfRecord", "RequestingPhysician",
)

# Codes: letters, digits and a few separators, short; no spaces-separated prose.
_CODE = re.compile(r"^[A-Za-z0-9 _.+\-/()]{1,40}$")
# Five or more digits in a row: ids, dates, serial numbers, phone numbers.
_LONG_DIGITS = re.compile(r"\d{5,}")
# More than six words (separators such as "/" not counted): prose.
_MAX_WORDS = 6
# A date written with separators (15.08.2019, 2019-08-15, 15/08/19): the digit runs are short.
_DATE_LIKE = re.compile(r"\d{1,4}[./\-]\d{1,2}[./\-]\d{2,4}")


def _is_date_like_number(x: float) -> bool:
    """A number that reads as a calendar date YYYYMMDD (e.g. a date smuggled into a numeric field)."""
    if not x.is_integer() or not 18000101 <= x <= 22001231:
        return False
    i = int(x)
    return 1 <= (i // 100) % 100 <= 12 and 1 <= i % 100 <= 31


def clean_value(value: Any, kind: str, forbidden: Iterable[str] = ()) -> Any:
    """Return a whitelisted, type-checked rendering of a DICOM value, or None.

    ``kind``: ``num`` (finite number, not a YYYYMMDD-like integer), ``nums`` (list of
    finite numbers), ``code`` (short code string: at most 40 characters of letters, digits
    and ``_ .+-/()``, at most 6 words, no run of 5+ digits, no date with separators, not
    containing any of the ``forbidden`` strings, compared by
    :func:`biomarkers.deid.normalise.fold_key`: accents, case and separators ignored) or
    ``present`` (True when non-empty).
    """
    if value is None or value == "":
        return None
    if kind == "present":
        return True
    if kind == "num":
        try:
            x = float(value)
        except (TypeError, ValueError):
            return None
        return x if math.isfinite(x) and not _is_date_like_number(x) else None
    if kind == "nums":
        try:
            xs = [float(v) for v in value]
        except (TypeError, ValueError):
            return None
        return xs if xs and all(math.isfinite(x) for x in xs) else None
    if kind == "code":
        if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
            value = "\\".join(str(v) for v in value)
        s = str(value).strip()
        if "\\" in s:  # multi-valued codes: check each part
            parts = [clean_value(p, "code", forbidden) for p in s.split("\\")]
            return s if all(p is not None for p in parts) else None
        if not _CODE.match(s) or _LONG_DIGITS.search(s) or _DATE_LIKE.search(s) \
                or len(re.findall(r"[A-Za-z0-9]+", s)) > _MAX_WORDS:
            return None
        key = fold_key(s)
        for f in forbidden:
            k = fold_key(f)
            if len(k) >= 3 and k in key:
                return None
        return s
    raise ValueError(f"unknown whitelist kind {kind!r}")


def identifying_strings(ds) -> set[str]:
    """The dataset's own identifying values (and their name components), for :func:`clean_value`."""
    out: set[str] = set()
    if not hasattr(ds, "get"):
        return out
    persons = [e.keyword for e in ds if getattr(e, "VR", "") == "PN" and e.keyword] if hasattr(ds, "__iter__") \
        and hasattr(ds, "data_element") else []  # every person of a pydicom Dataset (reviewers, operators...)
    for kw in (*IDENTIFYING_ATTRIBUTES, *persons):
        v = ds.get(kw, None)
        if v is None or v == "":
            continue
        values = list(v) if (isinstance(v, (list, tuple)) or type(v).__name__ == "MultiValue") else [v]
        for item in values:
            t = str(item).strip()
            if not t:
                continue
            out.add(t)
            out.update(p for p in name_components(t) if len(p) >= 3)
            if kw.startswith("Institution") or kw == "StationName":
                out.update(institution_words(t))
    return out


def whitelisted_metadata(ds) -> dict[str, Any]:
    """Sidecar metadata of a pydicom Dataset: only whitelisted top-level attributes, cleaned.

    Sequences are never entered (identity hides in e.g. ContributingEquipmentSequence)
    and private tags are never read.
    """
    out: dict[str, Any] = {}
    forbidden = identifying_strings(ds)
    for keyword, (key, kind) in SIDECAR_ATTRIBUTES.items():
        v = clean_value(ds.get(keyword, None) if hasattr(ds, "get") else None, kind, forbidden)
        if v is not None:
            out[key] = v
    return out
