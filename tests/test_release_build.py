"""Partner releases: contents read back by pandas/pyarrow/DuckDB, checksums, dictionary,
privacy refusals (identifiers, k-anonymity), immutability and schema-change reports."""

from __future__ import annotations

import hashlib
import json
import math
import tarfile
import textwrap
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow.parquet as pq
import pytest
from test_clinical_fixtures import EXPECTED, FEATURES, features_wide, pseudonym, write_clinical

from biomarkers.cli import main
from biomarkers.clinical import load_schema
from biomarkers.errors import PrivacyError
from biomarkers.release import ReleaseConfig, ReleaseExistsError, build_release, verify_release

REPO = Path(__file__).resolve().parent.parent


def cfg(**kw) -> ReleaseConfig:
    base = dict(name="sts", cohort="Six STS patients with CT, MR and PET", clinical_variables=["age_band", "sex", "grade", "histology", "followup_months"],
                privacy={"k": 2, "quasi_identifiers": ["sex"]})
    base.update(kw)
    return ReleaseConfig.model_validate(base)


@pytest.fixture()
def inputs(tmp_path):
    p = write_clinical(tmp_path / "clinical")
    fdir = tmp_path / "FEATURES"
    fdir.mkdir()
    features_wide().to_parquet(fdir / "features_wide.parquet", index=False)
    return p, fdir, load_schema(p["schema"])


def build(inputs, out, **kw):
    p, fdir, schema = inputs
    config = kw.pop("config", None) or cfg()
    return build_release(fdir, [p["a"], p["b"], p["c"]], config, out, schema=schema, tracking_uri=False, **kw)


def norm(v):
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return None
    return v.item() if hasattr(v, "item") else v


def test_release_read_back_identically_with_pandas_pyarrow_duckdb(inputs, tmp_path):
    res = build(inputs, tmp_path / "R", version="1.0.0", archive=True)
    folder = tmp_path / "R" / "sts-1.0.0"
    assert res.path == folder
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["features.parquet", "clinical.parquet", "data_dictionary.csv", "data_dictionary.md", "manifest.json", "README.md"])
    for name in ("features.parquet", "clinical.parquet"):
        f = folder / name
        by_pandas = pd.read_parquet(f)
        by_arrow = pq.read_table(f).to_pydict()
        con = duckdb.connect()
        rel = con.execute(f"SELECT * FROM read_parquet('{f.as_posix()}')")
        cols = [d[0] for d in rel.description]
        rows = rel.fetchall()
        by_duck = {c: [r[i] for r in rows] for i, c in enumerate(cols)}
        assert list(by_pandas.columns) == list(by_arrow) == cols
        for c in cols:
            a = [norm(v) for v in by_pandas[c].tolist()]
            assert a == [norm(v) for v in by_arrow[c]] == [norm(v) for v in by_duck[c]], (name, c)
    feats = pd.read_parquet(folder / "features.parquet")
    clin = pd.read_parquet(folder / "clinical.parquet")
    # values are those of the inputs (features) and of the exports (clinical)
    src = features_wide().set_index(["patient_id", "modality"])
    got = feats.set_index(["patient_id", "modality"])
    for k in src.index:
        assert got.loc[k, FEATURES] .tolist() == src.loc[k, FEATURES].tolist()
    c = clin.set_index("patient_id")
    assert list(clin.columns) == ["patient_id", "age_band", "sex", "grade", "histology", "followup_months"]
    assert c.loc[pseudonym("STS_004"), "age_band"] == "30-39"  # 38.5 years
    assert c.loc[pseudonym("STS_003"), "age_band"] == "80-89"  # 95 capped at 89
    for orig, exp in EXPECTED.items():
        assert c.loc[pseudonym(orig), "sex"] == exp["sex"]
    assert len(clin) == 6 and len(feats) == 18
    # every checksum verifies (independent hashlib) and nothing unlisted
    m = json.loads((folder / "manifest.json").read_text())
    assert set(m["files"]) == {"features.parquet", "clinical.parquet", "data_dictionary.csv", "data_dictionary.md", "README.md"}
    for f, info in m["files"].items():
        assert hashlib.sha256((folder / f).read_bytes()).hexdigest() == info["sha256"]
    assert verify_release(folder) == []
    assert m["tables"]["features.parquet"]["rows"] == 18 and m["tables"]["clinical.parquet"]["rows"] == 6
    assert m["cohort"]["n_patients"] == 6 and m["cohort"]["definition"].startswith("Six STS")
    assert "pyradiomics-bhklab" in m["software"] or "pyradiomics" in m["software"]
    assert len(m["config_hashes"]["release_config"]) == 64
    # archive: same files, checksum file verifies
    arc = tmp_path / "R" / "sts-1.0.0.tar.gz"
    with tarfile.open(arc) as t:
        assert sorted(t.getnames()) == sorted(f"sts-1.0.0/{p.name}" for p in folder.iterdir())
    digest, name = (tmp_path / "R" / "sts-1.0.0.tar.gz.sha256").read_text().split()
    assert name == arc.name and digest == hashlib.sha256(arc.read_bytes()).hexdigest()
    # no original id in any file, even decompressed
    for f in folder.iterdir():
        text = f.read_bytes() if f.suffix != ".parquet" else pd.read_parquet(f).to_csv().encode()
        assert b"STS_0" not in text and b"STS0" not in text, f


def test_data_dictionary_covers_every_column(inputs, tmp_path):
    res = build(inputs, tmp_path / "R")
    folder = res.path
    d = pd.read_csv(folder / "data_dictionary.csv", keep_default_na=False)
    for name in ("features.parquet", "clinical.parquet"):
        cols = list(pd.read_parquet(folder / name).columns)
        assert list(d.loc[d["file"] == name, "column"]) == cols
    assert (d["meaning"].str.len() > 0).all()
    row = d.set_index("column")
    # pyradiomics naming split and documented; IBSI tags from the IBSI reference naming
    r = row.loc["wavelet-LLH_glcm_Contrast"]
    assert (r["image_type"], r["feature_class"], r["feature"]) == ("wavelet-LLH", "glcm", "Contrast")
    assert "wavelet" in r["filter"] and "LLH" in r["filter"]
    assert row.loc["original_firstorder_Mean", "ibsi_code"] == "stat_mean"
    assert row.loc["original_glcm_Contrast", "ibsi_code"] == "cm_contrast_3D_avg"
    assert row.loc["original_shape_MeshVolume", "ibsi_code"] == "morph_volume"
    assert row.loc["original_shape_MeshVolume", "unit"] == "mm^3"
    assert "average gray level intensity" in row.loc["original_firstorder_Mean", "meaning"]
    assert row.loc["followup_months", "unit"] == "months"
    md = (folder / "data_dictionary.md").read_text()
    for c in d["column"]:
        assert f"`{c}`" in md


def test_dictionary_takes_settings_and_codes_from_extraction_outputs(inputs, tmp_path):
    p, fdir, schema = inputs
    (fdir / "provenance.json").write_text(json.dumps({"versions": {"pyradiomics": "v3.1.4"}, "params": [
        {"modality": "CT", "name": "ct", "path": "/home/someone/ct.yaml", "param_hash": "abc",
         "params": {"setting": {"binWidth": 25, "force2D": True}, "imageType": {"Original": {}}}}]}))
    long = pd.DataFrame({"image_type": ["original"], "feature_class": ["glcm"], "feature": ["Contrast"], "ibsi_code": ["cm_contrast_2_5D_avg"]})
    long.to_parquet(fdir / "features_long.parquet")
    res = build_release(fdir, [p["a"], p["b"], p["c"]], cfg(), tmp_path / "R", schema=schema, tracking_uri=False)
    d = pd.read_csv(res.path / "data_dictionary.csv", keep_default_na=False).set_index("column")
    assert d.loc["original_glcm_Contrast", "ibsi_code"] == "cm_contrast_2_5D_avg"  # from features_long
    assert json.loads(d.loc["original_firstorder_Mean", "extraction_settings"]) == {"CT": {"binWidth": 25, "force2D": True}}
    m = json.loads((res.path / "manifest.json").read_text())
    assert m["config_hashes"]["extraction_params"] == {"CT": "abc"}
    assert "/home/someone" not in (res.path / "manifest.json").read_text()


@pytest.mark.parametrize("column,value,kind", [
    ("acquisition_note", "2011-03-14", "date"),
    ("operator", "DOE^JOHN", "person_name"),
])
def test_release_with_injected_identifier_is_refused(inputs, tmp_path, column, value, kind):
    p, fdir, schema = inputs
    df = features_wide()
    df[column] = ["ok"] * len(df)
    df.loc[4, column] = value
    df.to_parquet(fdir / "features_wide.parquet", index=False)
    with pytest.raises(PrivacyError) as e:
        build_release(fdir, [p["a"], p["b"], p["c"]], cfg(), tmp_path / "R", schema=schema, tracking_uri=False)
    assert f"features.parquet: column '{column}'" in str(e.value) and kind in str(e.value)
    assert value not in str(e.value)  # the identifying value itself is not repeated
    assert not (tmp_path / "R").exists() or not any((tmp_path / "R").iterdir())  # nothing written, no temp left


def test_original_id_in_free_text_is_refused(inputs, tmp_path):
    p, fdir, schema = inputs
    sch = textwrap.dedent("""\
        patient_id: {column: patient_id}
        variables:
          age: {type: float}
          sex: {type: category, mapping: {M: male, F: female}}
          notes: {type: str}
        """)
    (tmp_path / "s.yaml").write_text(sch)
    f = tmp_path / "notes.csv"
    f.write_text("patient_id,centre,age,sex,notes\n" + "\n".join(
        f"STS_00{i},A,50,{'M' if i % 2 else 'F'},{'see also sts_001 file' if i == 3 else 'none'}" for i in range(1, 7)) + "\n")
    with pytest.raises(PrivacyError, match=r"(?s)original patient id.*clinical.parquet.*patient id of " + pseudonym("STS_001")):
        build_release(fdir, [f], cfg(clinical_variables=["sex", "notes"]), tmp_path / "R",
                      schema=load_schema(tmp_path / "s.yaml"), tracking_uri=False)
    assert not (tmp_path / "R").exists() or not any((tmp_path / "R").iterdir())


def test_k_anonymity_refusal_names_the_combination(inputs, tmp_path):
    config = cfg(privacy={"k": 2, "quasi_identifiers": ["age_band", "sex", "centre"]})
    with pytest.raises(PrivacyError) as e:
        build(inputs, tmp_path / "R", config=config)
    msg = str(e.value)
    assert "k-anonymity (k=2)" in msg
    # STS_001: 54 years, male, centre A -> alone in its group (hand computed from the exports)
    assert "age_band=50-59, sex=male, centre=A: 1 patient(s)" in msg
    assert "age_band=30-39, sex=female, centre=B: 1 patient(s)" in msg
    assert "6 combination(s)" in msg
    # sex alone: 3 male, 3 female -> passes with k=3, fails with k=4 naming both groups
    build(inputs, tmp_path / "R", config=cfg(privacy={"k": 3, "quasi_identifiers": ["sex"]}))
    with pytest.raises(PrivacyError, match=r"sex=female: 3 patient\(s\); sex=male: 3 patient\(s\)"):
        build(inputs, tmp_path / "R", config=cfg(privacy={"k": 4, "quasi_identifiers": ["sex"]}))


def test_versions_immutable_and_schema_change_reported(inputs, tmp_path):
    p, fdir, schema = inputs
    out = tmp_path / "R"
    r1 = build(inputs, out)
    assert r1.version == "1.0.0" and r1.schema_changes == []
    before = {f.name: f.read_bytes() for f in r1.path.iterdir()}
    with pytest.raises(ReleaseExistsError, match="already exists"):
        build(inputs, out, version="1.0.0")
    assert {f.name: f.read_bytes() for f in r1.path.iterdir()} == before
    # next version: one feature renamed, one clinical variable dropped
    df = features_wide().rename(columns={"original_glcm_Contrast": "original_glcm_ContrastRenamed"})
    df.to_parquet(fdir / "features_wide.parquet", index=False)
    r2 = build(inputs, out, config=cfg(clinical_variables=["age_band", "sex", "histology", "followup_months"]))
    assert r2.version == "1.0.1"
    assert "features.parquet: column renamed 'original_glcm_Contrast' -> 'original_glcm_ContrastRenamed'" in r2.schema_changes
    assert "clinical.parquet: column dropped 'grade'" in r2.schema_changes
    m2 = json.loads((r2.path / "manifest.json").read_text())
    assert m2["schema_changes"]["previous_version"] == "1.0.0"
    assert set(m2["schema_changes"]["changes"]) == set(r2.schema_changes) and len(r2.schema_changes) == 2
    assert "column dropped 'grade'" in (r2.path / "README.md").read_text()
    assert verify_release(r1.path) == [] and verify_release(r2.path) == []
    # a tampered file is detected
    victim = r1.path / "clinical.parquet"
    victim.chmod(0o644)
    victim.write_bytes(victim.read_bytes() + b"x")
    assert verify_release(r1.path) == ["clinical.parquet: checksum mismatch"]


def test_cli_release_and_refusal_exit_status(inputs, tmp_path, capsys):
    p, fdir, schema = inputs
    conf = tmp_path / "release.yaml"
    conf.write_text(textwrap.dedent(f"""\
        name: sts-cli
        cohort: test cohort
        clinical_schema: {p['schema']}
        clinical_variables: [sex, histology]
        privacy: {{k: 2, quasi_identifiers: [sex]}}
        """))
    args = ["release", "--features", str(fdir), "--clinical", str(p["a"]), str(p["b"]), str(p["c"]),
            "--config", str(conf), "--out", str(tmp_path / "R"), "--no-mlflow"]
    assert main(args + ["--version", "2.0.0"]) == 0
    assert (tmp_path / "R" / "sts-cli-2.0.0" / "manifest.json").is_file()
    assert main(args + ["--version", "2.0.0"]) == 2
    assert "already exists" in capsys.readouterr().err
    conf.write_text(conf.read_text().replace("k: 2", "k: 5"))
    assert main(args + ["--version", "2.0.1"]) == 2
    err = capsys.readouterr().err
    assert "k-anonymity (k=5)" in err and "sex=female: 3 patient(s)" in err
    assert not (tmp_path / "R" / "sts-cli-2.0.1").exists()


def test_example_release_config_is_valid():
    from biomarkers.release import load_release_config

    c = load_release_config(REPO / "configs" / "release.yaml")
    assert c.privacy.k == 5 and "age_band" in c.privacy.quasi_identifiers
    assert (REPO / "configs" / c.clinical_schema).is_file()


def test_mlflow_failure_keeps_the_complete_release_and_says_so(inputs, tmp_path):
    p, fdir, schema = inputs
    res = build_release(fdir, [p["a"], p["b"], p["c"]], cfg(), tmp_path / "R", schema=schema,
                        tracking_uri="nosuchscheme://nowhere")
    assert res.mlflow_run_id is None and res.mlflow_error
    assert "not logged to MLflow" in res.summary()
    assert verify_release(res.path) == []


def test_release_from_a_loaded_clinical_table_and_config_path(inputs, tmp_path):
    """The pipeline's form: clinical table already loaded (pseudonymised), config given as a path."""
    from biomarkers.clinical import load_clinical
    from biomarkers.deid import Deidentifier

    p, fdir, schema = inputs
    deid = Deidentifier(schema.deid)
    clin, _ = load_clinical([p["a"], p["b"], p["c"]], schema, deid)
    conf = tmp_path / "release.yaml"
    conf.write_text(f"name: sts-pipe\nclinical_schema: {p['schema']}\nclinical_variables: [sex, grade]\n"
                    "privacy: {k: 3, quasi_identifiers: [sex]}\n")
    res = build_release(fdir, clin, conf, tmp_path / "R", deidentifier=deid, tracking_uri=False)
    assert res.to_dict()["name"] == "sts-pipe" and verify_release(res.path) == []
    assert list(pd.read_parquet(res.path / "clinical.parquet").columns) == ["patient_id", "sex", "grade"]
    # a raw (non-pseudonymised) id injected into the table is refused
    bad = clin.copy()
    bad.loc[bad["patient_id"] == pseudonym("STS_002"), "patient_id"] = "STS_002"
    feats = features_wide()
    feats.loc[feats["patient_id"] == pseudonym("STS_002"), "patient_id"] = "STS_002"
    feats.to_parquet(fdir / "features_wide.parquet", index=False)
    with pytest.raises(PrivacyError, match=r"features.parquet: column 'patient_id' row \d+: id"):
        build_release(fdir, bad, conf, tmp_path / "R", version="9.9.9", tracking_uri=False)
    assert not (tmp_path / "R" / "sts-pipe-9.9.9").exists()


def test_intervals_released_instead_of_dates(inputs, tmp_path):
    """Dates are refused; the days between two dates (same shift for both) are released."""
    p, fdir, schema = inputs
    sch = tmp_path / "s.yaml"
    sch.write_text(textwrap.dedent("""\
        patient_id: {column: patient_id}
        variables:
          sex: {type: category, mapping: {M: male, F: female}}
          diagnosis_date: {type: date}
          surgery_date: {type: date}
        """))
    f = tmp_path / "dates.csv"
    f.write_text("patient_id,centre,sex,diagnosis_date,surgery_date\n" + "\n".join(
        f"STS_00{i},A,{'M' if i % 2 else 'F'},2011-03-0{i},2011-04-1{i}" for i in range(1, 7)) + "\n")
    base = dict(privacy={"k": 3, "quasi_identifiers": ["sex"], "age_variable": None})
    with pytest.raises(PrivacyError, match="clinical.parquet: column 'diagnosis_date'.*date"):
        build_release(fdir, [f], cfg(clinical_variables=["sex", "diagnosis_date"], **base), tmp_path / "R",
                      schema=load_schema(sch), tracking_uri=False)
    conf = cfg(clinical_variables=["sex", "days_to_surgery"], intervals={"days_to_surgery": {"start": "diagnosis_date", "end": "surgery_date"}}, **base)
    res = build_release(fdir, [f], conf, tmp_path / "R", schema=load_schema(sch), tracking_uri=False)
    clin = pd.read_parquet(res.path / "clinical.parquet").set_index("patient_id")
    # 2011-03-0i -> 2011-04-1i: 31 + 10 = 41 days for every patient (hand computed)
    assert clin["days_to_surgery"].tolist() == [41] * 6
    d = pd.read_csv(res.path / "data_dictionary.csv", keep_default_na=False).set_index("column")
    assert d.loc["days_to_surgery", "unit"] == "days" and "diagnosis_date" in d.loc["days_to_surgery", "meaning"]
