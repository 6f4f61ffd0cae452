"""Analysis tables: clinical x features joins, one-sided patients, duplicate errors, the CLI."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from test_clinical_fixtures import EXPECTED, FEATURES, features_wide, pseudonym, write_clinical, write_features

from biomarkers.cli import main
from biomarkers.clinical import load_clinical, load_schema
from biomarkers.clinical.link import link
from biomarkers.errors import InputError


@pytest.fixture()
def tables(tmp_path):
    p = write_clinical(tmp_path)
    clin, _ = load_clinical([p["a"], p["b"], p["c"]], load_schema(p["schema"]))
    return p, clin


def test_series_join_one_row_per_patient_series_roi(tables):
    p, clin = tables
    feats = features_wide(["STS_001", "STS_002", "STS_003", "STS_004", "STS_005", "STS_006", "STS_077"])
    table, rep = link(feats, clin, join="series")
    assert len(table) == 6 * 3
    assert list(table.columns[:8]) == ["patient_id", "centre", "age", "sex", "grade", "histology", "diagnosis_date", "followup_months"]
    assert list(table.columns[8:13]) == ["study_uid", "series_uid", "modality", "roi", FEATURES[0]]
    # values travel with their row: a CT feature value of STS_004 equals the input's
    src = feats.set_index(["patient_id", "modality"])
    got = table.set_index(["patient_id", "modality"])
    key = (pseudonym("STS_004"), "CT")
    assert got.loc[key, FEATURES[1]] == src.loc[key, FEATURES[1]]
    assert got.loc[key, "age"] == EXPECTED["STS_004"]["age"]
    assert rep.features_only == [pseudonym("STS_077")]
    assert sorted(rep.clinical_only) == sorted([pseudonym("STS_099"), pseudonym("STS_012")])
    assert rep.n_patients_linked == 6


def test_patient_join_prefixes_modality(tables):
    p, clin = tables
    feats = features_wide()
    table, rep = link(feats, clin, join="patient")
    assert len(table) == 6 and table["patient_id"].is_unique
    for mod in ("CT", "MR", "PT"):
        for f in FEATURES:
            assert f"{mod}_{f}" in table.columns
    src = feats.set_index(["patient_id", "modality"])
    row = table.set_index("patient_id").loc[pseudonym("STS_002")]
    assert row["PT_original_glcm_Contrast"] == src.loc[(pseudonym("STS_002"), "PT"), "original_glcm_Contrast"]
    # left join keeps clinical-only patients with missing features
    left, _ = link(feats, clin, join="patient", how="left")
    assert len(left) == 8 and left.set_index("patient_id").loc[pseudonym("STS_099"), "CT_original_firstorder_Mean"] != left.set_index("patient_id").loc[pseudonym("STS_099"), "CT_original_firstorder_Mean"]


def test_duplicated_ids_are_errors_naming_them(tables):
    p, clin = tables
    feats = features_wide()
    dup = pd.concat([clin, clin[clin["patient_id"] == pseudonym("STS_003")]])
    with pytest.raises(InputError, match=pseudonym("STS_003") + r" \(2 rows\)"):
        link(feats, dup)
    fdup = pd.concat([feats, feats.iloc[[0]]])
    with pytest.raises(InputError, match="duplicated patient x series x ROI.*" + feats.iloc[0]["patient_id"]):
        link(fdup, clin)
    two_rois = feats.copy()
    extra = feats[feats["modality"] == "CT"].iloc[[1]].assign(roi="GTV2")
    with pytest.raises(InputError, match=extra.iloc[0]["patient_id"] + " CT"):
        link(pd.concat([two_rois, extra]), clin, join="patient")



def test_rows_of_several_volumes_are_refused_saying_so(tables):
    """A 4-D image extracted with ``volumes: all`` has one row per volume: linking would give one
    column two values; the refusal names the rows and the volume column, not only 'duplicated'."""
    p, clin = tables
    feats = features_wide().assign(volume=0)
    ct = feats[feats["modality"] == "CT"].iloc[[0]].assign(volume=1)
    four_d = pd.concat([feats, ct], ignore_index=True)
    for join in ("series", "patient"):
        with pytest.raises(InputError, match=ct.iloc[0]["patient_id"] + r".*several volumes of 4-D images \(column 'volume'\)"):
            link(four_d, clin, join=join)
    assert len(link(feats, clin, join="series")[0]) == 6 * 3  # one volume per image: linked


def test_cli_link_writes_table_and_reports(tmp_path, capsys):
    p = write_clinical(tmp_path / "in")
    feats = write_features(tmp_path / "FEATURES")
    out = tmp_path / "out" / "analysis.parquet"
    rc = main(["link", "--features", str(feats), "--clinical", str(p["a"]), str(p["b"]), "--clinical", str(p["c"]),
               "--schema", str(p["schema"]), "--out", str(out), "--join", "patient"])
    assert rc == 0
    t = pd.read_parquet(out)
    assert len(t) == 6 and "MR_original_firstorder_Mean" in t.columns
    v = pd.read_csv(out.with_name("analysis.validation.csv"))
    assert (v["action"] == "rejected").sum() == 6
    rep = json.loads(out.with_name("analysis.report.json").read_text())
    assert rep["counts"] == {"done": 8, "skipped": 0, "failed": 6}
    assert sorted(rep["link"]["clinical_only"]) == sorted([pseudonym("STS_099"), pseudonym("STS_012")])
    stdout = capsys.readouterr().out
    assert "clinical only" in stdout and "STS_0" not in stdout
    for f in out.parent.iterdir():  # no original id in any output
        assert b"STS_0" not in f.read_bytes(), f
    # a bad schema is a clear error with exit status 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("variables: {age: {type: number}}\n")
    assert main(["link", "--features", str(feats), "--clinical", str(p["a"]), "--schema", str(bad), "--out", str(out)]) == 2
    assert "bad.yaml: variables.age.type" in capsys.readouterr().err
