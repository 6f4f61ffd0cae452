"""DICOM SOP classes and transfer syntaxes the ingest knows."""

from __future__ import annotations

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


def sop_name(uid: str) -> str:
    """The SOP class name of ``uid`` (pydicom's dictionary), else ``SOP class <uid>``."""
    try:
        from pydicom.uid import UID

        name = UID(uid).name
        if name != uid:
            return name
    except Exception:  # noqa: BLE001
        pass
    # a private SOP class UID is shown only as such: UIDs may embed an MRN or a date (issue 15)
    return f"SOP class {uid}" if str(uid).startswith("1.2.840.10008.") else "private SOP class"
