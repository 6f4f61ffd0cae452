"""Issue 14 item 5: identifier detection knows the feature columns; ``privacy.age_variable`` is optional."""

from __future__ import annotations

import pandas as pd

from biomarkers.deid.scan import find_identifying_values
from biomarkers.features.naming import value_columns
from biomarkers.release.privacy import find_identifying


def _features():
    return pd.DataFrame({
        "patient_id": ["BM-AAAAAAAAAAAA", "BM-BBBBBBBBBBBB"],
        "modality": ["CT", "CT"],
        "original_glcm_Id": [0.41, 0.52],             # GLCM inverse difference
        "CT_original_glcm_Idn": [0.91, 0.93],
        "wavelet-LLH_glszm_ZoneEntropy": [3.1, 2.9],
        "XX_original_glcm_Id": [1234567, 7654321],    # prefix of no parameter file of the extraction
        "case_id": [17, 18],                          # a real id column
    })


def test_value_columns_from_names_and_provenance():
    df = _features()
    prov = {"params": [{"modality": "CT", "name": "ct"}]}
    assert value_columns(df, prov) == {"original_glcm_Id", "CT_original_glcm_Idn", "wavelet-LLH_glszm_ZoneEntropy"}
    assert "XX_original_glcm_Id" in value_columns(df)  # without provenance any modality prefix is accepted
    # text in a feature-named column is no radiomics value
    assert value_columns(pd.DataFrame({"original_glcm_Id": ["12345"]})) == set()


def test_release_scan_never_flags_feature_columns_but_still_flags_ids():
    df = _features()
    prov = {"params": [{"modality": "CT", "name": "ct"}]}
    before = {f.column for f in find_identifying_values(df)}
    assert "original_glcm_Id" in before  # the rule alone takes GLCM's "Id" for an identifier
    lines = find_identifying(df, "features.parquet", value_columns=value_columns(df, prov))
    cols = {ln.split("column ")[1].split(" row")[0].strip("'") for ln in lines}
    assert cols == {"XX_original_glcm_Id", "case_id"}


def test_bundle_scan_uses_the_same_rule():
    from biomarkers.lake.bundle import scan_table

    found = {f.column for f in scan_table(_features(), "features_wide.parquet")}
    assert "original_glcm_Id" not in found and "case_id" in found


def test_release_of_a_default_sts_feature_table_builds(shared_data, tmp_path):
    """pyradiomics' defaults (every feature class, so ``original_glcm_Id``/``Idn``/``Idm``/``Idmn``) on the
    shared STS images (CT, MR, PT of six patients) released with configs/release.yaml, whose
    ``privacy.age_variable: age`` the cohort does not have: the release builds, keeps the GLCM "Id"
    features, and has no ``age_band``."""
    import yaml

    from biomarkers.features import run_extract
    from biomarkers.features.naming import PYRADIOMICS_CLASSES
    from biomarkers.release import build_release
    from conftest import REPO, STS_PATIENTS
    from test_features_extract import MODS, make_dataset

    pids = {p: f"BM-{'ABCDEF'[i]}" + "A" * 11 for i, p in enumerate(STS_PATIENTS)}
    cases = [(pids[p], MODS[m], shared_data / "sts/nifti" / p / f"{m}_image.nii.gz",
              shared_data / "sts/nifti" / p / f"{m}_mask.nii.gz") for p in STS_PATIENTS for m in MODS]
    ds = make_dataset(tmp_path / "dataset", cases)
    m = pd.read_parquet(ds / "manifest.parquet")  # UIDs as ingest writes them (pseudonymised under 2.25)
    uids = {u: f"2.25.{1000 + i}" for i, u in enumerate(sorted(set(m[["study_uid", "series_uid", "source_series_uid"]]
                                                                    .to_numpy().ravel()) - {""}))}
    for c in ("study_uid", "series_uid", "source_series_uid"):
        m[c] = m[c].map(lambda u: uids.get(u, u))
    m.to_parquet(ds / "manifest.parquet", index=False)
    (tmp_path / "default.yaml").write_text(yaml.safe_dump({"setting": {}}))  # pyradiomics' defaults
    rep = run_extract(ds, [str(tmp_path / "default.yaml")], tmp_path / "features", executor="local:2")
    assert rep.counts()["failed"] == 0
    wide = pd.read_parquet(tmp_path / "features" / "features_wide.parquet")
    classes = {c.split("_")[1] for c in wide.columns if c.startswith("original_")}
    assert classes == set(PYRADIOMICS_CLASSES) - {"shape2D"}  # every default class (shape2D needs force2D)
    clinical = pd.DataFrame({"patient_id": list(pids.values()), "centre": "A", "sex": "female", "grade": 2,
                             "histology": "liposarcoma", "metastasis": False, "followup_months": 24.0})
    cfg = yaml.safe_load((REPO / "configs" / "release.yaml").read_text())
    cfg["clinical_schema"] = str(REPO / "configs" / "clinical_schema.yaml")
    cfg["privacy"]["k"] = 5
    (tmp_path / "release.yaml").write_text(yaml.safe_dump(cfg))
    res = build_release(tmp_path / "features", clinical, tmp_path / "release.yaml", tmp_path / "releases",
                        tracking_uri=False)
    released = pd.read_parquet(res.path / "features.parquet")
    assert {"original_glcm_Id", "original_glcm_Idn", "original_glcm_Idm", "original_glcm_Idmn"} <= set(released.columns)
    assert len(released) == 18
    assert "age_band" not in pd.read_parquet(res.path / "clinical.parquet").columns
