"""Whitelisted sidecar metadata on real shared headers with identity hidden in unexpected places."""

from __future__ import annotations

import json

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from biomarkers.deid import DeidSettings, Deidentifier, Pseudonymizer
from biomarkers.deid.whitelist import NEVER_WHITELISTED, SIDECAR_ATTRIBUTES, clean_value, whitelisted_metadata

PLANTED = {
    "AdditionalPatientHistory": "Johanna Zyxwortel, 12 Nightingale Lane",
    "ProtocolName": "MGH_WBS_2D",
    "StudyDescription": "IBSI_1_STS_001_CT",
    "SeriesDescription": "QCH07301X CT chest",
    "StudyID": "QCH07301X",
    "StationName": "QCHCTSTATION7",
    "InstitutionName": "Quillfeather Canary Hospital",
    "ImageComments": "born 19610311",
}


@pytest.fixture()
def ct_header(shared_data):
    return pydicom.dcmread(shared_data / "sts/dicom/STS_001/CT/image/000000.dcm", stop_before_pixels=True)


def test_whitelist_never_lists_free_text():
    assert not set(SIDECAR_ATTRIBUTES) & NEVER_WHITELISTED
    for kw in ("ProtocolName", "SeriesDescription", "StudyDescription", "StudyID", "AdditionalPatientHistory",
               "ContributingEquipmentSequence", "DeviceSerialNumber", "PatientID", "PatientName", "StudyDate"):
        assert kw not in SIDECAR_ATTRIBUTES


def test_real_header_values(ct_header):
    md = whitelisted_metadata(ct_header)
    # values read by eye from the shared file's header dump (pydicom print), not from the code
    assert md["modality"] == "CT" and md["manufacturer"] == "GE MEDICAL SYSTEMS" and md["model"] == "Discovery ST"
    assert md["kvp"] == 140.0 and md["tube_current_ma"] == 90.0 and md["convolution_kernel"] == "SOFT"
    assert md["pixel_spacing_mm"] == pytest.approx([0.976562, 0.976562])
    assert md["body_part"] == "EXTREMITY" and md["patient_position"] == "HFS"
    assert set(md) <= {k for k, _ in SIDECAR_ATTRIBUTES.values()}


def test_planted_identity_never_passes(ct_header):
    ds = ct_header
    for kw, v in PLANTED.items():
        setattr(ds, kw, v)
    eq = Dataset()
    eq.Manufacturer = "CanaryVendor"
    eq.DeviceSerialNumber = "SN-QCH-998127"
    eq.InstitutionName = PLANTED["InstitutionName"]
    ds.ContributingEquipmentSequence = Sequence([eq])
    ds.PatientID = "QCH07301X"
    ds.PatientName = "Zyxwortel^Johanna"
    ds.DeviceSerialNumber = "SN-QCH-998127"
    # identity smuggled into whitelisted attributes
    ds.ConvolutionKernel = "QCH07301X"  # the patient id
    ds.ReconstructionMethod = "Zyxwortel recon"  # the patient's last name
    ds.BodyPartExamined = "QCHCTSTATION7"  # the station
    ds.ManufacturerModelName = "Model 1961031123"  # long digit run (id/date/serial)
    ds.add_new((0x0029, 0x0010), "LO", "QCH CANARY")
    ds.add_new((0x0029, 0x1001), "LO", "QCH07301X")
    md = Deidentifier(DeidSettings(), pseudonymizer=Pseudonymizer(b"x" * 20)).metadata(ds)
    text = json.dumps(md)
    for needle in ["QCH", "Zyxwortel", "Johanna", "MGH", "STS_001", "Nightingale", "998127", "19610311", "1961031123"]:
        assert needle.lower() not in text.lower(), (needle, md)
    assert md["manufacturer"] == "GE MEDICAL SYSTEMS" and md["kvp"] == 140.0  # the rest still passes
    assert "convolution_kernel" not in md and "reconstruction_method" not in md and "model" not in md


@pytest.mark.parametrize(
    "value,kind,expected",
    [
        ("140", "num", 140.0),
        ("nan", "num", None),
        ("inf", "num", None),
        ("20000907", "num", None),  # a date smuggled into a number
        (20000907.5, "num", 20000907.5),
        ("abc", "num", None),
        (["0.9", "0.9"], "nums", [0.9, 0.9]),
        (["0.9", "nan"], "nums", None),
        ("B30f", "code", "B30f"),
        ("GE MEDICAL SYSTEMS / MIM Software", "code", "GE MEDICAL SYSTEMS / MIM Software"),
        ("the patient was seen by dr x", "code", None),  # prose
        ("ACC77310422", "code", None),  # long digit run
        ("a@b.org", "code", None),
        ("x" * 41, "code", None),
        (["DECY", "ATTN"], "code", "DECY\\ATTN"),
        (["DECY", "19610311"], "code", None),
        ("", "code", None),
    ],
)
def test_clean_value(value, kind, expected):
    assert clean_value(value, kind) == expected


def test_clean_value_forbidden_case_insensitive():
    assert clean_value("soft qch07301x", "code", forbidden={"QCH07301X"}) is None
    assert clean_value("SOFT", "code", forbidden={"QCH07301X", "ab"}) == "SOFT"  # 2-char forbidden ignored
