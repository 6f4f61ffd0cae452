"""Feature naming and table layout have one owner (biomarkers.features.naming) that every stage uses."""

from __future__ import annotations

import pandas as pd
import pytest

from biomarkers.errors import InputError
from biomarkers.features import naming
from biomarkers.features.naming import KEY_COLUMNS, FeatureName


@pytest.mark.parametrize(
    "column, parts",
    [
        ("original_glcm_Contrast", ("original", "glcm", "Contrast", None)),
        ("wavelet-HLL_firstorder_90Percentile", ("wavelet-HLL", "firstorder", "90Percentile", None)),
        ("original_shape2D_Perimeter", ("original", "shape2D", "Perimeter", None)),
        ("original_ibsicm_joint_max_3D_avg", ("original", "ibsicm", "joint_max_3D_avg", None)),
        ("CT_lbp-3D-m1_gldm_DependenceEntropy", ("lbp-3D-m1", "gldm", "DependenceEntropy", "CT")),
        ("MR_T2_square_ngtdm_Busyness", ("square", "ngtdm", "Busyness", "MR_T2")),
        # an image type the project does not know yet (e.g. an IBSI 2 filter) still parses
        ("mean-5mm_ibsistat_mean", ("mean-5mm", "ibsistat", "mean", None)),
    ],
)
def test_parse_and_format_round_trip(column, parts):
    name = FeatureName.parse(column)
    assert (name.image_type, name.feature_class, name.feature, name.modality) == parts
    assert name.format() == column


@pytest.mark.parametrize("column", ["age", "patient_id", "centre", "stage_original", "original_foo_Bar", "glcm_Contrast"])
def test_non_feature_columns_are_not_parsed(column):
    assert FeatureName.parse(column) is None


def test_prefix_refused_where_columns_carry_none():
    assert FeatureName.parse("CT_original_glcm_Contrast", prefixed=False) is None
    assert FeatureName.parse("original_glcm_Contrast", prefixed=False).modality is None


def test_feature_classes_are_pyradiomics_own():
    from radiomics import getFeatureClasses

    assert sorted(naming.PYRADIOMICS_CLASSES) == sorted(getFeatureClasses())


def test_every_pyradiomics_feature_name_parses():
    """Every feature pyradiomics can compute (all classes, every image type it names) parses back."""
    from radiomics import getFeatureClasses, getImageTypes

    for image_type in [t.lower() for t in getImageTypes()] + ["wavelet-LHL", "log-sigma-1-0-mm-3D", "lbp-3D-k"]:
        for fc, cls in getFeatureClasses().items():
            for feature in cls.getFeatureNames():
                col = f"{image_type}_{fc}_{feature}"
                name = FeatureName.parse(col, prefixed=False)
                assert name is not None and (name.image_type, name.feature_class, name.feature) == (
                    image_type, fc, feature), col


def test_downstream_modules_use_the_one_owner():
    from biomarkers.clinical import link
    from biomarkers.features import extract
    from biomarkers.modeling import data

    assert link.KEY_COLUMNS is KEY_COLUMNS and link.read_features is naming.read_wide
    assert link.FEATURES_FILE == extract.WIDE_TABLE == naming.WIDE_TABLE == "features_wide.parquet"
    assert extract.LONG_TABLE == naming.LONG_TABLE == "features_long.parquet"
    assert data.parse_feature("CT_original_glcm_Contrast") == FeatureName("original", "glcm", "Contrast", "CT")


def test_wide_names_match_format():
    long = pd.DataFrame({"image_type": ["original", "wavelet-LLH"], "feature_class": ["glcm", "firstorder"],
                         "feature": ["Contrast", "Mean"]})
    assert list(naming.wide_names(long)) == ["original_glcm_Contrast", "wavelet-LLH_firstorder_Mean"]


def test_read_wide_names_missing_table_and_keys(tmp_path):
    with pytest.raises(InputError, match="no features_wide.parquet found"):
        naming.read_wide(tmp_path)
    pd.DataFrame({"patient_id": ["a"], "original_glcm_Contrast": [1.0]}).to_parquet(tmp_path / naming.WIDE_TABLE)
    with pytest.raises(InputError, match=r"key column\(s\) \['study_uid'"):
        naming.read_wide(tmp_path)
    ok = pd.DataFrame({**{k: ["x"] for k in KEY_COLUMNS}, "original_glcm_Contrast": [1.0]})
    ok.to_parquet(tmp_path / naming.WIDE_TABLE)
    assert naming.feature_columns(naming.read_wide(tmp_path)) == ["original_glcm_Contrast"]
