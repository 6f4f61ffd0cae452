"""ROI and segment names (issue 15): unconfigured names that may name a person become keyed references."""

from __future__ import annotations

import pytest

from biomarkers.deid.keys import Pseudonymizer
from biomarkers.dicom.masks import MaskSettings
from biomarkers.dicom.roi import match_roi_names, name_allowed

P = Pseudonymizer(b"roi-test-secret-0123456789abcdef")
REF = P.referencer("roi")


def test_unconfigured_name_is_keyed_everywhere():
    names = ["GTV_Mass_CT", "Müller-Schön^Erika", "MRN 4711-0815"]
    out = match_roi_names(names, None, None, REF)
    assert out[0].canonical == "GTV_Mass_CT" and out[0].display == "GTV_Mass_CT"
    for m in out[1:]:
        assert m.canonical == m.display == REF(m.name)
        assert m.display.startswith("roi-") and len(m.display) == 12
    # configured ROIs: the unmatched name's reason names the reference only
    out = match_roi_names(names, {"GTV": ["GTV_Mass*"]}, None, REF)
    assert out[0].canonical == "GTV"
    for m in out[1:]:
        assert m.canonical is None and m.name not in m.reason and REF(m.name) in m.reason
        assert "Müller" not in m.reason and "4711" not in m.reason


def test_reference_keyed_and_stable():
    a, b = P.reference("roi", " Müller-Schön "), Pseudonymizer(b"another-site-secret-0123456789xyz").reference("roi", "Müller-Schön")
    assert a == REF("müller-schön") and a != b  # keyed: another secret gives another reference
    assert name_allowed(a, [])  # a reference is already keyed (re-ingest of an export keeps it)


def test_allow_patterns_validated_and_used():
    assert name_allowed("Liver seg 2", None) and not name_allowed("Liver_Mustermann", None)
    assert name_allowed("Lesion_A7", [r"lesion_[a-z]\d"]) and not name_allowed("GTV", [])
    with pytest.raises(Exception, match="allow_roi_names"):
        MaskSettings(allow_roi_names=["(unclosed"])


def test_no_deid_shows_names():
    assert match_roi_names(["Erika Mustermann"], None, None, None)[0].canonical == "Erika_Mustermann"
