"""Clinical test data for the six shared STS patients, written by the tests themselves.

Three exports, as three centres would send them:

* ``centre_a.csv`` (UTF-8, ',' delimiter, canonical column names): STS_001..STS_003 plus bad rows;
* ``centre_b.csv`` (cp1252, ';' delimiter, decimal comma, dd.mm.yyyy dates, its own
  column names with accents): STS_004, STS_005 plus a bad row;
* ``centre_c.xlsx`` (Excel, sex coded 1/2, real Excel date cells): STS_006.

Also a small ``features_wide.parquet`` in the extraction area's layout for the six
patients (CT, MR, PT rows, one ROI each). Other test modules import these helpers.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import os
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd

from conftest import STS_PATIENTS

SCHEMA_YAML = textwrap.dedent(
    """\
    patient_id: {column: patient_id, pattern: "STS_[0-9]{3}"}
    centre_column: centre
    join: series
    date_format: "%Y-%m-%d"
    centres:
      A: {files: ["*centre_a*"]}
      B:
        files: ["*centre_b*"]
        columns:
          "Patient ID": patient_id
          "Âge (années)": age
          "Gender": sex
          "Tumour grade": grade
          "Histology": histology
          "Diagnosis date": diagnosis_date
          "Follow-up (months)": followup_months
        date_format: "%d.%m.%Y"
        decimal: ","
    variables:
      age: {type: float, unit: years, min: 0, max: 120, required: true, age: true, description: Age at diagnosis}
      sex:
        type: category
        mandatory: true
        description: Sex
        mapping: {M: male, "1": male, male: male, F: female, "2": female, female: female}
      grade: {type: int, allowed: [1, 2, 3], description: FNCLCC grade}
      histology:
        type: category
        description: Histological subtype
        mapping: {lps: liposarcoma, liposarcoma: liposarcoma, "liposarcome myxoïde": liposarcoma,
                  lms: leiomyosarcoma, leiomyosarcoma: leiomyosarcoma, ups: UPS}
      diagnosis_date: {type: date, description: Date of diagnosis}
      followup_months: {type: float, unit: months, min: 0, max: 600, description: Follow-up}
    """
)

# centre A: UTF-8, comma. Lines: header=1, data from line 2.
CENTRE_A = textwrap.dedent(
    """\
    patient_id,centre,age,sex,grade,histology,diagnosis_date,followup_months,comment
    STS_001,A,54,M,2,LPS,2011-03-14,-5,ok
    STS_002,A,61,male,two,lms,2012-07-01,40.5,ok
    STS_003,A,95,F,3,ups,2010-11-30,12,ok
    XX-99,A,50,M,1,lps,2011-01-01,10,unknown id format
    STS_099,A,47,M,1,lps,2011-01-01,10,not in imaging
    STS_008,A,70,F,1,lps,2011-01-01,10,dup
    STS_008,A,71,F,1,lps,2011-01-01,10,dup
    STS_010,A,150,M,1,lps,2011-01-01,10,age out of range
    STS_011,A,,F,1,lps,2011-01-01,10,age missing
    STS_012,A,40,M,4,sarcoma,2011-02-30,10,bad grade histology date
    """
)
# centre B: cp1252, semicolon, decimal comma, accented header and value, d.m.Y dates.
CENTRE_B = (
    "Patient ID;Âge (années);Gender;Tumour grade;Histology;Diagnosis date;Follow-up (months)\r\n"
    "STS_004;38,5;2;1;Liposarcome myxoïde;02.05.2013;24,5\r\n"
    "STS_005;72;2;3;LMS;17.09.2009;7\r\n"
    "STS_013;abc;2;3;LMS;17.09.2009;7\r\n"
)

#: What the good rows say (original values, before de-identification); sex as in the DICOM headers.
EXPECTED = {
    "STS_001": dict(centre="A", age=54.0, sex="male", grade=2, histology="liposarcoma", diagnosis_date=dt.date(2011, 3, 14), followup_months=None),
    "STS_002": dict(centre="A", age=61.0, sex="male", grade=None, histology="leiomyosarcoma", diagnosis_date=dt.date(2012, 7, 1), followup_months=40.5),
    "STS_003": dict(centre="A", age=89.0, sex="female", grade=3, histology="UPS", diagnosis_date=dt.date(2010, 11, 30), followup_months=12.0),
    "STS_004": dict(centre="B", age=38.5, sex="female", grade=1, histology="liposarcoma", diagnosis_date=dt.date(2013, 5, 2), followup_months=24.5),
    "STS_005": dict(centre="B", age=72.0, sex="female", grade=3, histology="leiomyosarcoma", diagnosis_date=dt.date(2009, 9, 17), followup_months=7.0),
    "STS_006": dict(centre="C", age=66.0, sex="male", grade=2, histology="UPS", diagnosis_date=dt.date(2014, 1, 20), followup_months=30.0),
}
TEST_SECRET = "test-secret-0123456789abcdef"


def pseudonym(original: str, secret: str | None = None) -> str:
    """Independent re-computation of the pseudonym (HMAC-SHA256, base32, 12 characters)."""
    key = (secret or os.environ.get("BIOMARKERS_SECRET") or TEST_SECRET).encode()
    d = hmac.new(key, b"patient\x00" + original.strip().upper().encode(), hashlib.sha256).digest()
    return "BM-" + base64.b32encode(d).decode()[:12]


def date_offset(original: str, max_shift_days: int = 365) -> int:
    key = (os.environ.get("BIOMARKERS_SECRET") or TEST_SECRET).encode()
    d = hmac.new(key, b"date\x00" + original.strip().upper().encode(), hashlib.sha256).digest()
    return -(1 + int.from_bytes(d[:4], "big") % max_shift_days)


def write_clinical(tmp: Path) -> dict[str, Path]:
    """Write the three exports and the schema; return their paths."""
    from openpyxl import Workbook

    tmp.mkdir(parents=True, exist_ok=True)
    a = tmp / "centre_a.csv"
    a.write_text(CENTRE_A, encoding="utf-8")
    b = tmp / "centre_b.csv"
    b.write_bytes(CENTRE_B.encode("cp1252"))
    c = tmp / "centre_c.xlsx"
    wb = Workbook()
    ws = wb.active
    ws.append(["patient_id", "centre", "age", "sex", "grade", "histology", "diagnosis_date", "followup_months"])
    ws.append(["STS_006", "C", 66, 1, 2, "UPS", dt.datetime(2014, 1, 20), 30])
    wb.save(c)
    schema = tmp / "schema.yaml"
    schema.write_text(SCHEMA_YAML, encoding="utf-8")
    return {"a": a, "b": b, "c": c, "schema": schema}


FEATURES = ["original_firstorder_Mean", "original_glcm_Contrast", "original_shape_MeshVolume", "wavelet-LLH_glcm_Contrast"]


def features_wide(patients=STS_PATIENTS, seed: int = 0) -> pd.DataFrame:
    """A small features_wide table: one row per patient x modality (CT, MR, PT), ROI GTV."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in patients:
        pid = pseudonym(p)
        for k, mod in enumerate(["CT", "MR", "PT"]):
            row = {
                "patient_id": pid,
                "study_uid": "2.25." + str(int(hashlib.sha256(f"{p}/study".encode()).hexdigest()[:15], 16)),
                "series_uid": "2.25." + str(int(hashlib.sha256(f"{p}/{mod}".encode()).hexdigest()[:15], 16)),
                "modality": mod,
                "roi": "GTV",
            }
            for f in FEATURES:
                row[f] = float(rng.normal(100 * (k + 1), 10))
            rows.append(row)
    return pd.DataFrame(rows)


def write_features(folder: Path, patients=STS_PATIENTS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    df = features_wide(patients)
    df.to_parquet(folder / "features_wide.parquet", index=False)
    return folder


def test_fixture_files_are_what_they_claim(tmp_path):
    """The exports really are cp1252/';' and a real xlsx (guards the other tests' premises)."""
    p = write_clinical(tmp_path)
    raw = p["b"].read_bytes()
    import pytest

    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    assert b";" in raw.splitlines()[0] and b"," not in raw.splitlines()[0]
    assert p["c"].read_bytes()[:2] == b"PK"  # zip container
    # the reference pseudonym agrees with the project's keyed pseudonymiser
    from biomarkers.deid import Pseudonymizer

    assert Pseudonymizer.from_env().patient_id("STS_001") == pseudonym("STS_001")
