"""PET exports keep what SUV needs (PS3.15 Retain Longitudinal Temporal Information with Modified
Dates, 113107): times of day kept, dates (and date parts of date-times) shifted by whole days,
PatientBirthTime removed. Checked by re-ingesting an exported BQML PET written by ``biomarkers synth``:
its SUV voxels equal those of the original's ingest."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest

from biomarkers.deid import Deidentifier
from biomarkers.deid.deidentifier import DeidSettings
from biomarkers.deid.export import ExportSettings
from biomarkers.deid.keys import Pseudonymizer
from biomarkers.dicom.export import export_dicom
from biomarkers.dicom.ingest import run_ingest
from biomarkers.synth.cohort import synthesize

SECRET = b"pet-times-secret-0123456789abcdef"


def _suv(out: Path) -> tuple[np.ndarray, dict]:
    df = pd.read_parquet(out / "manifest.parquet")
    row = df[(df.modality == "PT") & (df.kind == "image")]
    assert len(row) == 1 and row.status.iloc[0] == "converted", df.to_string()
    p = out / row.path.iloc[0]
    import json

    return np.asanyarray(nib.load(str(p)).dataobj).astype(np.float64), json.loads(
        p.with_name(p.name.replace(".nii.gz", ".json")).read_text())


@pytest.fixture(scope="module")
def pet(tmp_path_factory):
    root = tmp_path_factory.mktemp("pet_times")
    synthesize(root / "synth", patients=1, centres=1, ct_size=64, pet_size=32, executor=None)
    src = next((root / "synth").rglob("PT_0001.dcm")).parent
    for f in src.glob("*.dcm"):  # a birth time and a date-time the export must handle
        ds = pydicom.dcmread(f)
        ds.PatientBirthTime = "074512"
        ri = ds.RadiopharmaceuticalInformationSequence[0]
        ri.RadiopharmaceuticalStartDateTime = f"{ds.SeriesDate}{ri.RadiopharmaceuticalStartTime}"
        ds.save_as(f)
    deid = Deidentifier(DeidSettings(), pseudonymizer=Pseudonymizer(SECRET))
    # SUVbw needs the weight: the site keeps patient characteristics (option 113108)
    rep = export_dicom(src, root / "E", deid, ExportSettings(retain_patient_characteristics=True))
    assert rep.counts().get("done", 0) == len(list(src.glob("*.dcm"))), rep.summary()
    run_ingest(src, root / "A", executor="serial", deidentifier=deid)
    run_ingest(root / "E", root / "F", executor="serial", deidentifier=deid)
    return dict(src=src, E=root / "E", A=root / "A", F=root / "F", deid=deid)


def test_reingested_pet_export_same_suv(pet):
    a, side_a = _suv(pet["A"])
    f, side_f = _suv(pet["F"])
    assert side_a["units"].startswith("SUVbw") and side_f["units"].startswith("SUVbw")
    assert a.shape == f.shape and np.abs(a).max() > 0
    np.testing.assert_allclose(f, a, rtol=1e-4, atol=1e-4 * np.abs(a).max())
    assert abs(side_a["pet_suv"]["decay_s"] - side_f["pet_suv"]["decay_s"]) < 1e-6


def test_pet_export_times_kept_dates_shifted_birth_time_removed(pet):
    src = {f.name: pydicom.dcmread(f) for f in pet["src"].glob("*.dcm")}
    real_dates = {str(o.get(k)) for o in src.values() for k in ("StudyDate", "SeriesDate", "AcquisitionDate",
                                                               "ContentDate", "PatientBirthDate") if o.get(k)}
    assert real_dates
    o = next(iter(src.values()))
    exported = list(pet["E"].rglob("*.dcm"))
    assert len(exported) == len(src)
    for f in exported:
        n = pydicom.dcmread(f)
        assert "PatientBirthTime" not in n
        ri_o, ri_n = o.RadiopharmaceuticalInformationSequence[0], n.RadiopharmaceuticalInformationSequence[0]
        assert ri_n.RadiopharmaceuticalStartTime == ri_o.RadiopharmaceuticalStartTime
        assert n.SeriesTime == o.SeriesTime
        start = str(ri_n.RadiopharmaceuticalStartDateTime)
        assert start[8:] == str(ri_o.RadiopharmaceuticalStartDateTime)[8:] and start[:8] == str(n.SeriesDate)
        assert str(n.SeriesDate) == pet["deid"].dicom_date(str(o.SeriesDate), str(o.PatientID))
        raw = f.read_bytes()
        for d in real_dates:  # no real date anywhere in the file
            assert d.encode() not in raw, f"{f.name}: a real date remains"
