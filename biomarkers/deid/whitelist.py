"""Whitelisted acquisition metadata: the only DICOM attributes that reach sidecars,
manifests, feature tables and MLflow.

Whitelist, not blacklist: anything not listed here is dropped, wherever the source
hid identity (free text, protocol names, private tags, sequences). Values are
further restricted by type: numbers must parse as numbers, and text values must
match a conservative pattern (no free text). Dates are never copied.
"""

from __future__ import annotations

import re
from typing import Any

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

# Codes: letters, digits and a few separators, short; no spaces-separated prose.
_CODE = re.compile(r"^[A-Za-z0-9 _.+\-/()]{1,40}$")


def clean_value(value: Any, kind: str) -> Any:
    """Return a whitelisted, type-checked rendering of a DICOM value, or None."""
    if value is None or value == "":
        return None
    if kind == "present":
        return True
    if kind == "num":
        try:
            return float(value)
        except (TypeError, ValueError):
            return None
    if kind == "nums":
        try:
            return [float(v) for v in value]
        except (TypeError, ValueError):
            return None
    if kind == "code":
        if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
            value = "\\".join(str(v) for v in value)
        s = str(value).strip()
        return s if _CODE.match(s) else None
    raise ValueError(f"unknown whitelist kind {kind!r}")


def whitelisted_metadata(ds) -> dict[str, Any]:
    """Sidecar metadata of a pydicom Dataset: only whitelisted attributes, cleaned."""
    out: dict[str, Any] = {}
    for keyword, (key, kind) in SIDECAR_ATTRIBUTES.items():
        v = clean_value(ds.get(keyword, None) if hasattr(ds, "get") else None, kind)
        if v is not None:
            out[key] = v
    return out
