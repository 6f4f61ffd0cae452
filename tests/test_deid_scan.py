"""Leak scanners: variants, raw/gz/zip/Parquet/SQLite scanning, MLflow stores, table heuristics."""

from __future__ import annotations

import datetime as dt
import gzip
import sqlite3
import zipfile

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from biomarkers.cli import main
from biomarkers.deid.scan import Finding, find_identifying_values, identifying_variants, scan_files, scan_mlflow

NEEDLES = {
    "name": ("Zyxwortel^Johanna", "name"),
    "pid": ("QCH-07301", "id"),
    "dob": ("19610311", "date"),
}


def test_variants_hand_written():
    v = identifying_variants("Zyxwortel^Johanna", "name")
    for s in ["Zyxwortel^Johanna", "ZYXWORTEL^JOHANNA", "zyxwortel^johanna", "Zyxwortel, Johanna",
              "Johanna Zyxwortel", "JOHANNA ZYXWORTEL", "Zyxwortel", "Johanna"]:
        assert s in v, s
    assert identifying_variants("Johanna Zyxwortel", "name") >= {"Zyxwortel^Johanna", "Zyxwortel, Johanna"}
    assert identifying_variants("Zyxwortel, Johanna", "name") >= {"Zyxwortel^Johanna", "Johanna Zyxwortel"}
    d = identifying_variants("1961-03-11", "date")
    assert {"1961-03-11", "19610311", "11.03.1961", "11/03/1961", "03/11/1961"} <= d
    assert identifying_variants("11.03.1961", "date") == d
    assert "QCH07301" in identifying_variants("QCH-07301", "id")
    assert "Lee" not in identifying_variants("Lee^Ann", "name")  # short parts alone are not searched
    assert identifying_variants("  ", "text") == set()


def test_scan_finds_values_in_every_layer(tmp_path):
    d = tmp_path / "out"
    d.mkdir()
    (d / "clean.json").write_text('{"patient_id": "BM-ABCDEFGHIJKL", "kvp": 120}')
    (d / "plain.txt").write_text("report for JOHANNA ZYXWORTEL")  # upper-case rendering
    (d / "img.nii.gz").write_bytes(gzip.compress(b"\x00" * 348 + b"descrip: QCH-07301" + b"\x00" * 100))
    (d / "utf16.txt").write_bytes("born 11.03.1961".encode("utf-16-le"))
    with zipfile.ZipFile(d / "model.zip", "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("MLmodel", "signature: zyxwortel, johanna")
    # Parquet: dictionary-encoded, compressed strings and a typed date column
    t = pa.table(
        {"who": pa.array(["Zyxwortel^Johanna"] * 50 + ["x"] * 50).dictionary_encode(),
         "dob": pa.array([dt.date(1961, 3, 11)] * 100, type=pa.date32())}
    )
    pq.write_table(t, d / "table.parquet", compression="zstd", use_dictionary=True)
    raw = (d / "table.parquet").read_bytes()
    assert b"1961-03-11" not in raw and b"19610311" not in raw  # only decoding finds the date
    con = sqlite3.connect(d / "runs.db")
    con.execute("CREATE TABLE params (key TEXT, value TEXT)")
    con.execute("INSERT INTO params VALUES ('patient', 'qch07301')")
    con.commit()
    con.close()
    (d / "QCH-07301_CT.nii.gz").write_bytes(gzip.compress(b"\x00" * 10))  # identifier in a file name

    hits = scan_files([d], NEEDLES)
    where = {(h.path.split("/")[-1], h.layer.split(":")[0], h.label) for h in hits}
    assert ("plain.txt", "raw", "name") in where
    assert ("img.nii.gz", "gunzip", "pid") in where
    assert ("utf16.txt", "raw/utf-16", "dob") in where
    assert ("model.zip", "zip", "name") in where
    assert ("table.parquet", "parquet-table", "dob") in where
    assert ("table.parquet", "parquet-table", "name") in where
    assert ("runs.db", "raw", "pid") in where or ("runs.db", "sqlite-table", "pid") in where
    assert ("QCH-07301_CT.nii.gz", "name", "pid") in where
    assert not any(h.path.endswith("clean.json") for h in hits)
    assert scan_files([d / "clean.json"], NEEDLES) == []
    with pytest.raises(FileNotFoundError):
        scan_files([tmp_path / "missing"], NEEDLES)


def test_scan_mlflow_sqlite_store(tmp_path, monkeypatch):
    import mlflow

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    try:
        exp = mlflow.create_experiment("leak", artifact_location=str(tmp_path / "artifacts"))
        with mlflow.start_run(experiment_id=exp):
            mlflow.log_param("n", 3)
            mlflow.log_metric("auc", 0.7)
        assert scan_mlflow(uri, NEEDLES) == []
        with mlflow.start_run(experiment_id=exp):
            mlflow.set_tag("note", "QCH-07301")
        with mlflow.start_run(experiment_id=exp):
            mlflow.log_text("cohort: 1961-03-11", "notes/cohort.txt")
    finally:
        mlflow.set_tracking_uri(None)
    hits = scan_mlflow(uri, NEEDLES)
    assert {h.label for h in hits} == {"pid", "dob"}
    assert any(h.path.endswith("cohort.txt") and h.label == "dob" for h in hits)
    assert any("mlflow.db" in h.path and h.label == "pid" for h in hits)
    import sqlite3 as _sq

    con = _sq.connect(tmp_path / "mlflow.db")
    con.execute("UPDATE experiments SET artifact_location = 's3://bucket/x' WHERE name = 'leak'")
    con.commit()
    con.close()
    assert "<artifact store not scanned>" in {h.label for h in scan_mlflow(uri, NEEDLES)}


def test_cli_scan_exit_status(tmp_path, capsys):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.csv").write_text("id,v\nBM-ABCDEFGHIJKL,1\n")
    needles = tmp_path / "needles.csv"
    needles.write_text("label,value,kind\npid,QCH-07301,id\n")
    assert main(["scan", str(tmp_path / "a"), "--needles", str(needles)]) == 0
    (tmp_path / "a" / "y.txt").write_text("qch07301")
    assert main(["scan", str(tmp_path / "a"), "--needles", str(needles)]) == 1
    assert "y.txt" in capsys.readouterr().out
    store = tmp_path / "mlruns"
    (store / "1" / "abc" / "params").mkdir(parents=True)
    (store / "1" / "abc" / "params" / "site").write_text("QCH-07301")
    (tmp_path / "a" / "y.txt").unlink()
    assert main(["scan", str(tmp_path / "a"), "--needles", str(needles), "--mlflow", str(store)]) == 1
    (tmp_path / "a" / "y.txt").write_text("qch07301")
    bad = tmp_path / "bad.csv"
    bad.write_text("pid,QCH-07301,nickname\n")
    assert main(["scan", str(tmp_path / "a"), "--needles", str(bad)]) == 2


def test_find_identifying_values_flags_planted_cells():
    df = pd.DataFrame(
        {
            "patient_id": ["BM-ABCDEFGHIJKL", "STS_001", "BM-ZZZZZZZZZZZZ"],
            "centre": ["A", "B", "A"],
            "comment": ["ok", "Zyxwortel^Johanna", "call +41 61 555 12 34"],
            "visit": ["day 3", "11.03.1961", "2019-08-13"],
            "contact": ["", "j.z@example.org", ""],
            "scan_date": pd.to_datetime(["2019-01-01", None, "2019-02-01"]),
            "series_uid": ["2.25.123", "1.3.6.1.4.1.14519.5", "2.25.9"],
            "original_firstorder_Mean": [1.5, 20000907.0, 3.0],  # a number is not a date
            "dob_int": [19610311, 0, 1],
            "days_to_event": [10, 200, 35],
        }
    )
    got = {(f.column, f.row, f.value_kind) for f in find_identifying_values(df)}
    assert got == {
        ("patient_id", 1, "id"),
        ("comment", 1, "person_name"),
        ("comment", 2, "phone"),
        ("visit", 1, "date"),
        ("visit", 2, "date"),
        ("contact", 1, "email"),
        ("scan_date", 0, "date"),
        ("scan_date", 2, "date"),
        ("series_uid", 1, "uid"),
        ("dob_int", 0, "date"),
    }
    f = find_identifying_values(df)[0]
    assert isinstance(f, Finding) and "STS_001" not in f.reason  # the value is not repeated


def test_find_identifying_values_clean_release_table():
    df = pd.DataFrame(
        {
            "patient_id": ["BM-ABCDEFGHIJKL", "BM-QRSTUVWXYZ23"],
            "centre": ["centre_a", "centre_b"],
            "modality": ["CT", "PT"],
            "roi": ["GTV_Mass_CT", "GTV"],
            "series_uid": ["2.25.1234567", "2.25.7654321"],
            "age": [89.0, 45.0],
            "survival_days": [365, 1200],
            "wavelet-LLH_glcm_Contrast": [0.1, 0.2],
            "manufacturer": ["GE MEDICAL SYSTEMS", "SIEMENS"],
        }
    )
    assert find_identifying_values(df) == []


def test_scan_offsets_alignment_and_non_ascii(tmp_path):
    blob = bytes(range(256)) * 3 + b"xx" + "Zyxwortel".encode("utf-16-le") + b"\x00\x01" + b"QCH-07301!"
    (tmp_path / "b.bin").write_bytes(b"\x07" + blob)  # odd alignment of the UTF-16 text
    hits = {(h.label, h.layer, h.offset) for h in scan_files([tmp_path / "b.bin"], NEEDLES)}
    u16 = 1 + 768 + 2
    assert ("name", "raw/utf-16", u16) in hits
    assert ("pid", "raw", 1 + len(blob) - len(b"QCH-07301!")) in hits
    (tmp_path / "c.txt").write_text("Dr. Jürgen Müller-Lüdenscheid", encoding="latin-1")
    (tmp_path / "d.txt").write_text("MÜLLER-LÜDENSCHEID^JÜRGEN", encoding="utf-8")
    got = scan_files([tmp_path / "d.txt"], {"n": ("Müller-Lüdenscheid^Jürgen", "name")})
    assert got and got[0].label == "n"
    got = scan_files([tmp_path / "c.txt"], {"n": ("Müller-Lüdenscheid^Jürgen", "name")})  # Latin-1, "First Last"
    assert got and got[0].label == "n"
    assert scan_files([tmp_path / "b.bin"], {"n": ("Müller-Lüdenscheid^Jürgen", "name")}) == []
