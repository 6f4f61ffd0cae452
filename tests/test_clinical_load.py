"""Clinical loading: schema, readers (cp1252/';' CSV, xlsx), validation report, de-identification.

Expected values are the hand-written rows of test_clinical_fixtures (what the exports say)
and an independent HMAC recomputation of pseudonyms and date offsets.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import pandas as pd
import pytest
from test_clinical_fixtures import EXPECTED, date_offset, pseudonym, write_clinical

from biomarkers.clinical import ClinicalValidationError, load_clinical, load_schema
from biomarkers.errors import ConfigError, InputError

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture()
def loaded(tmp_path):
    p = write_clinical(tmp_path)
    schema = load_schema(p["schema"])
    df, rep = load_clinical([p["a"], p["b"], p["c"]], schema, known_patients={pseudonym(x) for x in EXPECTED})
    return p, df, rep


def one(rep, **match):
    found = rep.where(**match)
    assert len(found) == 1, (match, [vars(i) for i in rep.issues])
    return found[0]


def test_good_rows_kept_with_pseudonyms_mapped_values_and_shifted_dates(loaded):
    p, df, rep = loaded
    by_id = df.set_index("patient_id")
    for orig, exp in EXPECTED.items():
        row = by_id.loc[pseudonym(orig)]
        assert row["centre"] == exp["centre"]
        assert row["age"] == pytest.approx(exp["age"])
        assert row["sex"] == exp["sex"]
        assert (pd.isna(row["grade"]) if exp["grade"] is None else row["grade"] == exp["grade"])
        assert row["histology"] == exp["histology"]
        if exp["followup_months"] is None:
            assert pd.isna(row["followup_months"])
        else:
            assert row["followup_months"] == pytest.approx(exp["followup_months"])
        shifted = exp["diagnosis_date"] + dt.timedelta(days=date_offset(orig))
        assert row["diagnosis_date"].date() == shifted
        assert row["diagnosis_date"].date() != exp["diagnosis_date"]
    # no original id anywhere in the table
    assert not df.astype(str).apply(lambda c: c.str.contains("STS_")).any().any()
    assert list(df.columns) == ["patient_id", "centre", "age", "sex", "grade", "histology", "diagnosis_date", "followup_months"]
    # 6 STS patients + STS_099 (not in imaging, kept) + STS_012 (bad values set missing, kept)
    assert len(df) == 8 and rep.n_read == 14 and rep.n_kept == 8


def test_every_problem_reported_with_file_row_column_and_action(loaded):
    p, df, rep = loaded
    a, b = str(p["a"]), str(p["b"])
    # out-of-range optional value -> set missing (STS_001 follow-up -5), row 1 = line 2
    i = one(rep, file=a, row=1, column="followup_months")
    assert (i.line, i.action, i.value) == (2, "set missing", "-5.0") and "out of range [0, 600]" in i.problem
    assert i.patient == pseudonym("STS_001")
    # wrong type in an optional variable -> set missing
    i = one(rep, file=a, row=2, column="grade")
    assert i.action == "set missing" and "wrong type" in i.problem and i.value == "two"
    # age above the de-identification cap -> capped
    i = one(rep, file=a, row=3, column="age")
    assert i.action == "capped" and i.value == ">89"  # ages capped in the report too (issue 15)
    # unknown id (not matching the id pattern) -> rejected, value redacted
    i = one(rep, file=a, row=4, column="patient_id")
    assert i.action == "rejected" and "pattern" in i.problem and i.value == "<redacted>"
    # unknown patient (valid id, no imaging) -> kept and reported
    i = one(rep, file=a, row=5, column="patient_id")
    assert i.action == "kept" and "not in the imaging cohort" in i.problem and i.patient == pseudonym("STS_099")
    # duplicated id: both copies rejected, each names the other
    for r, other in ((6, 7), (7, 6)):
        i = one(rep, file=a, row=r, column="patient_id")
        assert i.action == "rejected" and f"duplicated patient id (also in centre_a.csv row {other})" == i.problem
    assert pseudonym("STS_008") not in set(df["patient_id"])
    # out-of-range required value -> rejected
    i = one(rep, file=a, row=8, column="age")
    assert i.action == "rejected" and "out of range [0, 120] years" in i.problem and i.value == ">89"  # 150, capped
    # missing required value -> rejected
    i = one(rep, file=a, row=9, column="age")
    assert i.action == "rejected" and i.problem == "missing value (required)"
    # several bad optional values on one row: each reported, the row kept
    assert {x.column: x.action for x in rep.where(file=a, row=10) if x.column != "patient_id"} == {
        "grade": "set missing", "histology": "set missing", "diagnosis_date": "set missing"}
    assert one(rep, file=a, row=10, column="diagnosis_date").value == "<redacted>"  # dates never echoed
    # the second centre's own column name and encoding: reported under its name
    i = one(rep, file=b, row=3, column="Âge (années)")
    assert (i.line, i.variable, i.action, i.value) == (4, "age", "rejected", "abc")
    # an unknown column is not loaded (it could hold identifiers)
    assert one(rep, file=a, column="comment").action == "column ignored"
    assert "comment" not in df.columns
    # nothing else
    assert len(rep.issues) == 15  # 1 file-level + 10 rows of centre A (row 10: 4) + 1 of centre B
    # files: encodings and delimiters detected
    info = {Path(f["file"]).name: f for f in rep.files}
    assert (info["centre_a.csv"]["encoding"], info["centre_a.csv"]["delimiter"]) == ("utf-8", ",")
    assert (info["centre_b.csv"]["encoding"], info["centre_b.csv"]["delimiter"]) == ("cp1252", ";")
    assert info["centre_b.csv"]["centre_spec"] == "B" and info["centre_c.xlsx"]["format"] == "xlsx"


def test_report_files_and_run_report(loaded, tmp_path):
    p, df, rep = loaded
    csv = rep.write(tmp_path / "v.csv")
    back = pd.read_csv(csv)
    assert len(back) == len(rep.issues) and {"file", "row", "line", "column", "problem", "action"} <= set(back.columns)
    assert "STS_0" not in csv.read_text()  # original ids never in the report
    rr = rep.run_report()
    assert rr.counts() == {"done": 8, "skipped": 0, "failed": 6}


def test_missing_mandatory_value_aborts_and_names_row(tmp_path):
    p = write_clinical(tmp_path)
    bad = tmp_path / "centre_a_bad.csv"
    bad.write_text("patient_id,centre,age,sex\nSTS_001,A,54,M\nSTS_002,A,61,\nSTS_003,A,70,X\n", encoding="utf-8")
    with pytest.raises(ClinicalValidationError) as e:
        load_clinical([bad], load_schema(p["schema"]))
    msg = str(e.value)
    assert "centre_a_bad.csv row 2 (line 3), column 'sex': missing value (mandatory for every patient)" in msg
    assert "centre_a_bad.csv row 3 (line 4), column 'sex': not an allowed value" in msg
    assert {(i.row, i.action) for i in e.value.report.issues if i.column == "sex"} == {(2, "load aborted"), (3, "load aborted")}


def test_parquet_input_and_no_deid_key_mismatch(tmp_path):
    """Parquet exports load too; row numbers are data rows (no line)."""
    p = write_clinical(tmp_path)
    src = pd.DataFrame({"patient_id": ["STS_001", "STS_002"], "centre": ["A", "A"], "age": [54, -1], "sex": ["M", "F"]})
    f = tmp_path / "centre_a.parquet"
    src.to_parquet(f)
    df, rep = load_clinical(f, load_schema(p["schema"]))
    assert list(df["patient_id"]) == [pseudonym("STS_001")]
    i = one(rep, column="age")
    assert (i.row, i.line, i.action) == (2, None, "rejected")


def test_schema_errors_name_file_and_key(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("variables:\n  age: {type: float, mni: 0}\n")
    with pytest.raises(ConfigError, match=r"s.yaml: variables.age.mni: unknown key"):
        load_schema(f)
    f.write_text("variables:\n  age: {type: float, min: 5, max: 1}\n")
    with pytest.raises(ConfigError, match="min .* greater than max"):
        load_schema(f)
    f.write_text("centres: {B: {columns: {X: nope}}}\nvariables:\n  age: {type: float}\n")
    with pytest.raises(ConfigError, match="unknown canonical names"):
        load_schema(f)


def test_example_schema_config_is_valid():
    s = load_schema(REPO / "configs" / "clinical_schema.yaml")
    assert s.variables["sex"].mandatory and s.centres["B"].decimal == ","
    assert math.isclose(s.variables["age"].max, 120)


def test_clinical_ids_and_dates_meet_the_real_dicom_headers(loaded, shared_data):
    """Imaging and clinical meet without identifiers: the pseudonym of the DICOM PatientID of the
    real STS series equals the clinical pseudonym, and both get the same date shift (intervals kept)."""
    import pydicom

    from biomarkers.deid import Deidentifier

    p, df, rep = loaded
    deid = Deidentifier()
    by_id = df.set_index("patient_id")
    for orig, exp in EXPECTED.items():
        f = sorted((shared_data / "sts" / "dicom" / orig / "CT" / "image").glob("*.dcm"))[0]
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        pid = deid.patient_id(ds.PatientID)  # what the ingest writes for this series
        assert pid in by_id.index
        row = by_id.loc[pid]
        assert row["sex"] == {"M": "male", "F": "female"}[ds.PatientSex]
        study = dt.datetime.strptime(ds.StudyDate, "%Y%m%d").date()
        shifted_study = deid.date(study, ds.PatientID)
        assert shifted_study != study
        assert (shifted_study - row["diagnosis_date"].date()) == (study - exp["diagnosis_date"])


@pytest.mark.parametrize("encoding,delimiter,expected_encoding", [
    ("utf-8-sig", "\t", "utf-8-sig"),
    ("utf-16", "\t", "utf-16"),
    ("cp1252", "|", "cp1252"),
    ("utf-8", ";", "utf-8"),
])
def test_reader_detects_encoding_and_delimiter(tmp_path, encoding, delimiter, expected_encoding):
    from biomarkers.clinical.readers import read_table

    rows = [["patient_id", "Âge (années)", "histology"], ["STS_004", "38,5", "Liposarcome myxoïde"], ["STS_005", "72", "LMS"]]
    f = tmp_path / "centre_b.csv"
    f.write_bytes("\r\n".join(delimiter.join(r) for r in rows).encode(encoding))
    raw = read_table(f)
    assert (raw.encoding, raw.delimiter) == (expected_encoding, delimiter)
    assert list(raw.frame.columns[1:4]) == rows[0]
    assert raw.frame["histology"].tolist() == ["Liposarcome myxoïde", "LMS"]
    assert raw.frame["__line__"].tolist() == [2, 3]


def test_unreadable_file_or_missing_id_column_does_not_stop_the_others(tmp_path):
    p = write_clinical(tmp_path)
    noid = tmp_path / "centre_a_noid.csv"
    noid.write_text("name_of_patient,age,sex\nx,54,M\n", encoding="utf-8")
    broken = tmp_path / "broken.xlsx"
    broken.write_bytes(b"this is not a zip file")
    df, rep = load_clinical([noid, broken, p["c"]], load_schema(p["schema"]))
    assert list(df["patient_id"]) == [pseudonym("STS_006")]
    probs = {Path(i.file).name: i for i in rep.issues if i.row is None and i.action == "rejected"}
    assert "no patient id column" in probs["centre_a_noid.csv"].problem
    assert "broken.xlsx" in probs["broken.xlsx"].problem and "cannot read" in probs["broken.xlsx"].problem
    rr = rep.run_report()
    assert {c.case: c.status for c in rr.cases} == {"centre_a_noid.csv": "failed", "broken.xlsx": "failed", "centre_c.xlsx:row 1": "done"}
    with pytest.raises(InputError, match="no clinical file could be loaded"):
        load_clinical([noid], load_schema(p["schema"]))
