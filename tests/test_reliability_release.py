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
