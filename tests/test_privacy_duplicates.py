"""Duplicates (issue 15): of two files with one SOP instance the complete one is kept, the other reported."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pydicom
import pytest

from biomarkers.deid import DeidSettings, Deidentifier
from biomarkers.dicom.export import export_dicom
from biomarkers.deid.keys import Pseudonymizer

SECRET = b"duplicates-test-secret-0123456789"


@pytest.fixture(scope="module")
def series_with_truncated_copy(shared_data, tmp_path_factory):
    """One STS CT series; a truncated copy of its first slice sorts before the complete file."""
    src = tmp_path_factory.mktemp("dup") / "src"
    shutil.copytree(shared_data / "sts" / "dicom" / "STS_001" / "CT" / "image", src / "series")
    first = sorted((src / "series").iterdir())[0]
    data = first.read_bytes()
    (src / "a_copy.dcm").write_bytes(data[: len(data) - 5000])  # "a_" sorts before "series/"
    return src, first


def test_ingest_keeps_the_complete_copy(series_with_truncated_copy, tmp_path):
    from biomarkers.dicom.ingest import run_ingest

    src, first = series_with_truncated_copy
    report = run_ingest(src, tmp_path / "out", executor="serial")
    assert report.counts()["failed"] == 0
    rep = json.loads((tmp_path / "out" / "report.json").read_text())
    unused = rep["unused_files"]
    assert len(unused) == 1 and "truncated" in unused[0]["reason"]  # the truncated copy is the one not used
    assert unused[0]["ref"].startswith("src-") and "a_copy" not in json.dumps(rep)
    # one keyed reference format: the one deid-export gives the same file (Pseudonymizer.reference)
    assert unused[0]["ref"] == Deidentifier().pseudonymizer.reference("src", "a_copy.dcm")
    ref = run_ingest(first.parent, tmp_path / "ref", executor="serial")  # the series alone
    import pandas as pd

    a = pd.read_parquet(tmp_path / "out" / "manifest.parquet")
    b = pd.read_parquet(tmp_path / "ref" / "manifest.parquet")
    assert list(a.content_hash) == list(b.content_hash)  # the same voxels: the complete slice was used
    assert ref.counts() == report.counts()


def test_export_keeps_the_complete_copy(series_with_truncated_copy, tmp_path):
    src, first = series_with_truncated_copy
    deid = Deidentifier(DeidSettings(), pseudonymizer=Pseudonymizer(SECRET))
    r = export_dicom(src, tmp_path / "exp", deid)
    n = len(list(first.parent.iterdir()))
    assert r.counts() == {"done": n, "skipped": 1, "failed": 0}
    skipped = [c for c in r.cases if c.status == "skipped"]
    assert "duplicate" in skipped[0].reason and "truncated" in skipped[0].reason
    assert skipped[0].case == deid.pseudonymizer.reference("src", "a_copy.dcm")  # keyed, not the path
    new = pydicom.dcmread(tmp_path / "exp" / deid.patient_id(pydicom.dcmread(first).PatientID)
                          / deid.uid(pydicom.dcmread(first).SeriesInstanceUID)
                          / f"{deid.uid(pydicom.dcmread(first).SOPInstanceUID)}.dcm")
    np.testing.assert_array_equal(new.pixel_array, pydicom.dcmread(first).pixel_array)
