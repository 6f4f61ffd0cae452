"""The QC report leaks nothing: identifying values planted into real STS DICOM headers (names, ids,
birth dates, study dates, institution, free text, private tags; the source folders are named after
the planted patient ids) reach no byte of ``OUT/qc`` (page, thumbnails, JSON), PNGs carry no
metadata chunk, and the page names patients by pseudonym only.

(The privacy tests of de-identification, ``test_deid_privacy.py``, scan the other outputs.)
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from biomarkers.deid.canary import default_canaries, plant_dicom
from biomarkers.deid.scan import scan_files
from biomarkers.dicom.ingest import run_ingest
from biomarkers.cli import main
from biomarkers.qc.render import png_chunks

SECRET = "qc-privacy-test-secret-0123456789"


@pytest.fixture(scope="module")
def report(shared_data, tmp_path_factory):
    work = tmp_path_factory.mktemp("qcpriv")
    canaries = default_canaries(1)
    src = work / "hospital" / "dicom"
    needles = plant_dicom([shared_data / "sts" / "dicom" / "STS_001"], src, canaries, modalities=["CT", "PET"])
    out = work / "OUT"
    mp = pytest.MonkeyPatch()
    mp.setenv("BIOMARKERS_SECRET", SECRET)
    mp.delenv("BIOMARKERS_SECRET_FILE", raising=False)
    try:
        ing = run_ingest(src, out, executor="serial")
        code = main(["qc", str(out), "--executor", "serial"])  # the command on an ingest OUT
    finally:
        mp.undo()
    rep = json.loads((out / "qc" / "report.json").read_text())
    return {"src": src, "out": out, "needles": needles, "ingest": ing, "qc": rep, "code": code, "canaries": canaries}


def test_positive_control(report):
    found = {h.label for h in scan_files([report["src"]], report["needles"])}
    assert any(lbl.endswith("PatientName") for lbl in found) and any(lbl.endswith("PatientID") for lbl in found)
    assert report["ingest"].counts()["done"] >= 3  # CT, PET and at least one mask
    assert report["code"] == 0 and report["qc"]["counts"]["done"] >= 2


def test_no_planted_value_in_any_qc_byte(report):
    qc = report["out"] / "qc"
    files = [p for p in qc.rglob("*") if p.is_file()]
    assert len(files) > 8 and (qc / "index.html").is_file()
    hits = scan_files([qc], report["needles"])
    assert hits == [], "\n".join(map(str, hits[:30]))
    page = (qc / "index.html").read_text()
    assert str(report["src"]) not in page and str(report["src"].parent) not in page
    for c in report["canaries"]:
        assert c.patient_id not in page and c.name.split("^")[0] not in page


def test_pngs_carry_no_metadata(report):
    pngs = list((report["out"] / "qc").rglob("*.png"))
    assert len(pngs) >= 8
    for p in pngs:
        assert png_chunks(p.read_bytes()) == ["IHDR", "PLTE", "IDAT", "IEND"], p.name


def test_page_names_patients_by_pseudonym(report):
    m = pd.read_parquet(Path(report["out"]) / "manifest.parquet")
    page = (report["out"] / "qc" / "index.html").read_text()
    pseudos = set(m.patient_id.astype(str))
    assert pseudos and all(p.startswith("BM-") for p in pseudos)
    assert all(p in page for p in pseudos)
    for path in m.loc[(m.kind == "mask") & (m.path.fillna("") != ""), "path"]:
        assert page.count(f'data-mask="{path}"') == 1


def test_qc_of_a_folder_that_is_no_output_exits_2(tmp_path, capsys):
    assert main(["qc", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path) in err and "manifest.parquet" in err
