"""Datalake parts without a pipeline run: keys, lake references, definition reports, the bundle scan,
the experiment spec's ``input.lake``, and schema evolution with exact time travel (small hand-made bundles)."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
import yaml

from biomarkers.errors import ConfigError
from biomarkers.lake import Lake, build_bundle, keygen, load_private_key, parse_lake_ref
from biomarkers.lake.bundle import BundleRefused, compare_definitions, scan_table


def test_keygen_private_key_is_owner_only_and_never_overwritten(tmp_path):
    priv, pub, fp = keygen("site-1", tmp_path / "keys")
    assert oct(priv.stat().st_mode & 0o777) == "0o600" and oct((tmp_path / "keys").stat().st_mode & 0o777) == "0o700"
    assert b"PRIVATE KEY" in priv.read_bytes() and b"PUBLIC KEY" in pub.read_bytes()
    assert fp.startswith("SHA256:") and len(fp) == 7 + 32
    with pytest.raises(ConfigError, match="already exists"):
        keygen("site-1", tmp_path / "keys")
    os.chmod(priv, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_private_key(priv)
    with pytest.raises(ConfigError, match="invalid"):
        keygen("../evil", tmp_path / "keys")


def test_lake_reference_parsing():
    assert parse_lake_ref("lake@3") == ("lake", 3)
    assert parse_lake_ref("s3://bucket/lakes/a@12") == ("s3://bucket/lakes/a", 12)
    assert parse_lake_ref("/data/lake") == ("/data/lake", None)
    with pytest.raises(ConfigError, match="whole number"):
        parse_lake_ref("lake@latest")


def test_definition_report_names_exactly_what_differs():
    lake = {"features": {"params": {"CT": {"param_hash": "a", "params": {"setting": {"binWidth": 25}}}},
                         "versions": {"pyradiomics": "v3.1.4"}}, "clinical": {"schema_version": "x"}}
    bundle = json.loads(json.dumps(lake))
    assert compare_definitions(lake, bundle) == []
    bundle["features"]["params"]["CT"]["params"]["setting"]["binWidth"] = 10
    bundle["features"]["versions"]["SimpleITK"] = "2.5.7"
    del bundle["clinical"]["schema_version"]
    assert compare_definitions(lake, bundle) == [
        "clinical.schema_version: in the lake (\"x\"), missing in the bundle",
        "features.params.CT.params.setting.binWidth: lake 25, bundle 10",
        "features.versions.SimpleITK: new in the bundle (\"2.5.7\"), not in the lake",
    ]


def test_bundle_scan_flags_identifiers_and_site_paths():
    df = pd.DataFrame({
        "patient_id": ["BM-ABCDEFGHIJKL", "C1-0003"],            # the second is an original id
        "note": ["fine", "/home/jdoe/export/C1-0003/ct.dcm"],    # a site path
        "smoking": ["never", "DOE^JOHN"],                         # a DICOM-style name
        "diagnosis_date": ["2021-03-04", "2020-01-02"],          # a (shifted) date variable of the schema
        "original_glcm_Id": [0.41, 0.52],                         # GLCM inverse difference, not an id
    })
    found = {(f.column, f.kind, f.row) for f in scan_table(df, "t.parquet", date_columns=("diagnosis_date",))}
    assert found == {("patient_id", "id", 1), ("note", "path", 1), ("smoking", "person_name", 1)}
    found = {(f.column, f.kind) for f in scan_table(df[["diagnosis_date"]], "t.parquet")}
    assert found == {("diagnosis_date", "date")}  # dates only where the schema declares them


def test_experiment_input_lake_needs_a_version_and_batches_by_site():
    from biomarkers.modeling.spec import InputSpec

    assert InputSpec(lake="lake@2").centre_column == "site"
    assert InputSpec(lake="lake@2", centre_column="centre").centre_column == "centre"
    with pytest.raises(Exception, match="LAKE@VERSION"):
        InputSpec(lake="lake")
    with pytest.raises(Exception, match="exactly one"):
        InputSpec(lake="lake@1", table="t.parquet")


# ----------------------------------------------------------------------------- small bundles
SCHEMA = {"patient_id": {"column": "patient_id", "pattern": "P[0-9]+"}, "join": "patient",
          "variables": {"age": {"type": "float"}, "outcome": {"type": "int", "allowed": [0, 1]}}}


def _site_out(out, n: int, features: list[str], seed: int) -> None:
    rng = np.random.default_rng(seed)
    ids = [f"BM-{''.join(rng.choice(list('ABCDEFGHIJKLMNOPQRSTUVWXYZ234567'), 12))}" for _ in range(n)]
    key = pd.DataFrame({"patient_id": ids, "study_uid": [f"2.25.{seed}{i}1" for i in range(n)],
                        "series_uid": [f"2.25.{seed}{i}2" for i in range(n)], "modality": "CT", "roi": "GTV"})
    vals = rng.normal(size=(n, len(features)))
    tables = {
        "features/features_wide.parquet": pd.concat([key, pd.DataFrame(vals, columns=features)], axis=1),
        "features/features_long.parquet": key.loc[key.index.repeat(len(features))].assign(
            feature=features * n, value=vals.ravel()).reset_index(drop=True),
        "dataset/manifest.parquet": key.assign(kind="image", status="converted"),
        "clinical/clinical.parquet": pd.DataFrame({"patient_id": ids, "age": rng.uniform(30, 80, n),
                                                   "outcome": rng.integers(0, 2, n)}),
    }
    for rel, df in tables.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        df.to_parquet(out / rel, index=False)
    prov = {"params": [{"modality": "CT", "name": "ct", "param_hash": "h" + str(len(features)),
                        "params": {"n_features": len(features)}}], "versions": {"pyradiomics": "v3.1.4"}}
    (out / "features/provenance.json").write_text(json.dumps(prov))


def test_schema_evolution_keeps_earlier_versions_exact(tmp_path):
    (tmp_path / "schema.yaml").write_text(yaml.safe_dump(SCHEMA))
    lake = Lake.init(tmp_path / "lake")
    bundles = {}
    for site, feats, seed in (("a", ["original_firstorder_Mean"], 1),
                              ("b", ["original_firstorder_Mean", "original_firstorder_Median"], 2)):
        priv, pub, _ = keygen(site, tmp_path / "keys")
        lake.register(site, pub.read_bytes())
        _site_out(tmp_path / site, 5, feats, seed)
        build_bundle(tmp_path / site, site, tmp_path / f"{site}.bundle", priv, schema=tmp_path / "schema.yaml")
        bundles[site] = tmp_path / f"{site}.bundle"
    assert lake.add(bundles["a"]).version == 1
    v1 = lake.read("features_wide", 1)
    with pytest.raises(BundleRefused, match="param_hash"):
        lake.add(bundles["b"])
    res = lake.add(bundles["b"], allow_schema_change=True)
    assert res.version == 2 and any("param_hash" in d for d in res.schema_change)
    now = lake.read("features_wide", 2)
    assert "original_firstorder_Median" in now.columns and now["original_firstorder_Median"].notna().sum() == 5
    # version 1 is returned as it was: without the column added later
    pd.testing.assert_frame_equal(lake.read("features_wide", 1), v1)
    assert "original_firstorder_Median" not in v1.columns
    ref = pd.read_parquet(tmp_path / "a/features/features_wide.parquet")
    pd.testing.assert_frame_equal(v1.drop(columns=["site", "bundle_id"]).sort_values("patient_id").reset_index(drop=True),
                                  ref.sort_values("patient_id").reset_index(drop=True), check_dtype=False)
    st = lake.status()
    assert st["version"] == 2 and st["patients"] == 10 and st["last_additions"][0]["schema_change"] is True
    from deltalake import DeltaTable

    for name in ("bundles", "sites", "features_wide", "clinical"):  # every version stays readable
        conf = DeltaTable(tmp_path / "lake" / name).metadata().configuration
        assert conf["delta.enableExpiredLogCleanup"] == "false", name


def test_contribute_as_the_issue_spells_it(tmp_path, monkeypatch, capsys):
    """`biomarkers contribute OUT --site SITE --out BUNDLE`: key from $BIOMARKERS_KEYS_DIR; without --schema the
    clinical definitions are the table's columns and types (and a schema'd bundle differs from it)."""
    from biomarkers.cli import main

    monkeypatch.setenv("BIOMARKERS_KEYS_DIR", str(tmp_path / "keys"))
    assert main(["lake", "keygen", "--site", "a"]) == 0
    _site_out(tmp_path / "out", 4, ["original_firstorder_Mean"], 3)
    assert main(["contribute", str(tmp_path / "out"), "--site", "a", "--out", str(tmp_path / "b")]) == 0
    m = json.loads((tmp_path / "b" / "bundle.json").read_text())
    clin = m["definitions"]["clinical"]
    assert clin["source"] == "table" and set(clin["variables"]) == {"age", "outcome"}
    assert "provenance/clinical_schema.yaml" not in {f["path"] for f in m["files"]}
    (tmp_path / "schema.yaml").write_text(yaml.safe_dump(SCHEMA))
    assert main(["contribute", str(tmp_path / "out"), "--site", "a", "--out", str(tmp_path / "b2"),
                 "--schema", str(tmp_path / "schema.yaml")]) == 0
    lake = Lake.init(tmp_path / "lake")
    lake.register("a", (tmp_path / "keys" / "a.pub").read_bytes())
    lake.add(tmp_path / "b")
    with pytest.raises(BundleRefused, match="clinical.schema_version"):
        lake.add(tmp_path / "b2")
    capsys.readouterr()


def test_a_repeated_patient_is_refused(tmp_path):
    """Rows are keyed by (site, patient): a clinical table with a patient twice is refused, even signed."""
    import base64
    import hashlib

    (tmp_path / "schema.yaml").write_text(yaml.safe_dump(SCHEMA))
    priv, pub, _ = keygen("a", tmp_path / "keys")
    _site_out(tmp_path / "out", 4, ["original_firstorder_Mean"], 5)
    build_bundle(tmp_path / "out", "a", tmp_path / "b", priv, schema=tmp_path / "schema.yaml")
    p = tmp_path / "b" / "tables" / "clinical.parquet"
    c = pd.read_parquet(p)
    pd.concat([c, c.iloc[[1]]], ignore_index=True).to_parquet(p, index=False)
    m = json.loads((tmp_path / "b" / "bundle.json").read_text())
    for f in m["files"]:
        if f["path"] == "tables/clinical.parquet":
            f["sha256"], f["size"] = hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_size
    data = json.dumps(m).encode()
    (tmp_path / "b" / "bundle.json").write_bytes(data)
    (tmp_path / "b" / "bundle.json.sig").write_text(base64.b64encode(load_private_key(priv).sign(data)).decode())
    lake = Lake.init(tmp_path / "lake")
    lake.register("a", pub.read_bytes())
    with pytest.raises(BundleRefused, match=rf"table clinical: key \(patient_id\) repeated in 2 rows \(rows 1, {len(c)}\)") as err:
        lake.add(tmp_path / "b")
    assert str(c.iloc[1]["patient_id"]) not in str(err.value)  # rows named, not the value (checked before the scan)
    assert lake.version() == 0
