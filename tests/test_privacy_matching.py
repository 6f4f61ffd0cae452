"""One normaliser (issue 15) for the sidecar filter and ``biomarkers scan``: accents, case, separators, dates."""

from __future__ import annotations

import gzip

import pytest

from biomarkers.deid.normalise import Matcher, fold_key
from biomarkers.deid.scan import scan_files
from biomarkers.deid.whitelist import clean_value

NAME = "MÜLLER-SCHÖN^ERIKA"  # fictional


@pytest.mark.parametrize("text", ["MULLERSCHON", "Mueller-Schoen", "müller schön", "MULLER_SCHON", "mUeLlErScHöN"])
def test_fold_key_meets(text):
    assert fold_key(text) == fold_key("MÜLLER-SCHÖN") == "mullerschon"


@pytest.mark.parametrize("written", ["20190815", "2019-08-15", "15/08/2019", "15.08.2019", "15082019", "2019.08.15"])
def test_dates_in_the_usual_forms(written):
    m = Matcher([("birth", "20190815", "date")])
    assert m.find(f"KERNEL {written}") == "birth"


def test_names_by_component_and_institution_by_word():
    m = Matcher([("name", NAME, "name"), ("site", "Klinikum Musterstadt-Süd", "institution")])
    assert m.find("ERIKA") == "name" and m.find("schoen_b30f") == "name"
    assert m.find("MUSTERSTADT RT") == "site" and m.find("SUED") is None  # 3-letter words are not matched alone
    assert m.find("Klinikum") is None and m.find("B30f") is None


@pytest.mark.parametrize("code", ["MULLERSCHON", "B30f_Mueller", "musterstadt", "K 15.08.2019", "15/08/19", "SCHON"])
def test_sidecar_filter_normalises(code):
    from pydicom.dataset import Dataset

    from biomarkers.deid.whitelist import identifying_strings, whitelisted_metadata

    ds = Dataset()
    ds.PatientName, ds.InstitutionName, ds.Manufacturer = NAME, "Klinikum Musterstadt-Süd", "SIEMENS"
    ds.ConvolutionKernel = code
    forbidden = identifying_strings(ds)
    assert clean_value(code, "code", forbidden) is None
    assert "convolution_kernel" not in whitelisted_metadata(ds)
    assert clean_value("B30f", "code", forbidden) == "B30f"


def test_scan_finds_normalised_renderings(tmp_path):
    (tmp_path / "a.txt").write_text("kernel=mueller_schoen", encoding="utf-8")
    (tmp_path / "b.txt").write_bytes("Müller Schön".encode("latin-1"))
    (tmp_path / "c.gz").write_bytes(gzip.compress("date 15.08.2019".encode("utf-16-le")))
    (tmp_path / "clean.txt").write_text("nothing here 2020-01-01")
    hits = scan_files([tmp_path], {"name": (NAME, "name"), "birth": ("20190815", "date")})
    found = {(h.path.split("/")[-1], h.label) for h in hits}
    assert {("a.txt", "name"), ("b.txt", "name"), ("c.gz", "birth")} <= found
    assert not any(h.path.endswith("clean.txt") for h in hits)
