"""Unit tests of the modelling building blocks (specs, column parsing, metrics, transformers).

Reference values are hand computations or independent implementations (scikit-learn's
roc_auc_score for the rank AUC), never outputs of the code under test.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from biomarkers.errors import ConfigError, InputError
from biomarkers.modeling.data import build_dataset, parse_feature
from biomarkers.modeling.pipelines import build_pipeline
from biomarkers.modeling.spec import ExperimentSpec, PipelineSpec, load_spec
from biomarkers.modeling.transformers import ComBatHarmonizer, CorrelationClusterFilter, MRMRSelector
from biomarkers.modeling.validation import auc_rank, binary_metrics, bootstrap_ci


def _spec(**kw) -> ExperimentSpec:
    base = dict(name="t", input={"table": "x.parquet"}, pipelines=[{"name": "lr"}])
    base.update(kw)
    return ExperimentSpec.model_validate(base)


@pytest.mark.parametrize(
    "col, expected",
    [
        ("CT_original_firstorder_Mean", ("CT", "original", "firstorder", "Mean")),
        ("original_glcm_Contrast", (None, "original", "glcm", "Contrast")),
        ("MR_T1_wavelet-LLH_glszm_ZoneEntropy", ("MR_T1", "wavelet-LLH", "glszm", "ZoneEntropy")),
        ("PT_log-sigma-3-0-mm-3D_firstorder_90Percentile", ("PT", "log-sigma-3-0-mm-3D", "firstorder", "90Percentile")),
        ("original_ibsiih_Mean", (None, "original", "ibsiih", "Mean")),
        ("age", None),
        ("patient_id", None),
        ("stage_original", None),
    ],
)
def test_parse_feature(col, expected):
    got = parse_feature(col)
    assert ((got.modality, got.image_type, got.feature_class, got.feature) if got else None) == expected


def test_spec_errors_name_file_and_key(tmp_path):
    p = tmp_path / "e.yaml"
    p.write_text("name: x\ninput: {table: a.parquet}\npipelines: [{name: a, modle: {}}]\n")
    with pytest.raises(ConfigError, match=r"e\.yaml: pipelines\.0\.modle: unknown key"):
        load_spec(p)
    p.write_text("name: x\ninput: {table: a.parquet}\npipelines: [{name: a}, {name: a}]\n")
    with pytest.raises(ConfigError, match="unique"):
        load_spec(p)
    p.write_text("name: x\ninput: {table: a.parquet, centre_column: null}\npipelines: [{name: a, harmonize: combat}]\n")
    with pytest.raises(ConfigError, match="centre_column"):
        load_spec(p)
    p.write_text("name: x\ninput: {table: sub/a.parquet}\npipelines: [{name: a}]\n")
    assert load_spec(p).input.table == (tmp_path / "sub" / "a.parquet").resolve()


def test_bad_grid_key_is_a_config_error():
    with pytest.raises(ConfigError, match=r"grid keys \['model__Cee'\]"):
        build_pipeline(PipelineSpec(name="a", grid={"model__Cee": [1]}), ["f1"], "centre")


def test_every_shipped_spec_validates():
    from pathlib import Path

    specs = sorted((Path(__file__).resolve().parent.parent / "experiments").glob("*.yaml"))
    assert specs, "experiments/*.yaml missing"
    for s in specs:
        spec = load_spec(s)
        for p in spec.pipelines:  # grid keys are checked against the real pipeline
            build_pipeline(p, ["CT_original_firstorder_Mean", "CT_original_glcm_Contrast"], spec.input.centre_column)


def _table():
    return pd.DataFrame({
        "patient_id": ["a", "b", "c", "d", "e", "f"],
        "centre": ["X", "X", "Y", "Y", "Z", "Z"],
        "outcome": [1, 0, 1, 0, 1, None],
        "age": [50, 60, 70, 80, 90, 40],
        "CT_original_firstorder_Mean": [1.0, 2, 3, 4, 5, 6],
        "PT_original_firstorder_Mean": [1.0, 2, 3, 4, 5, 6],
        "CT_wavelet-LLH_glcm_Contrast": [1.0, np.nan, np.nan, np.nan, np.nan, 6],
        "CT_original_shape_MeshVolume": [1.0, 2, 3, 4, 5, 6],
    })


def test_build_dataset_subsets_filters_and_target():
    df = _table()
    spec = _spec(features={"modalities": ["CT"], "feature_classes": ["first*", "glcm"], "include": ["age"]},
                 cohort=[{"column": "age", "op": ">=", "value": 60}])
    ds = build_dataset(df, spec)
    # rows: age>=60 -> b,c,d,e ; f has no target anyway
    assert ds.ids.tolist() == ["b", "c", "d", "e"]
    assert ds.y.tolist() == [0, 1, 0, 1]
    # the wavelet column is 100% missing in these rows -> dropped (max_missing_fraction 0.5)
    assert ds.feature_columns == ["age", "CT_original_firstorder_Mean"]
    assert "CT_wavelet-LLH_glcm_Contrast" in ds.dropped_features
    assert list(ds.X.columns) == ["centre", "age", "CT_original_firstorder_Mean"]
    assert ds.X["centre"].tolist() == ["X", "Y", "Y", "Z"]


def test_build_dataset_errors_name_the_problem():
    df = _table()
    with pytest.raises(InputError, match="target.column 'died'"):
        build_dataset(df, _spec(target={"column": "died"}))
    with pytest.raises(InputError, match="no feature column"):
        build_dataset(df, _spec(features={"modalities": ["MR"]}))
    with pytest.raises(InputError, match="single class"):
        build_dataset(df, _spec(cohort=[{"column": "outcome", "op": "==", "value": 1}]))
    with pytest.raises(InputError, match="one row per patient"):
        build_dataset(pd.concat([df, df.iloc[:1]]), _spec())
    with pytest.raises(InputError, match="cohort.0.column 'sex'"):
        build_dataset(df, _spec(cohort=[{"column": "sex", "op": "==", "value": "F"}]))


def test_binary_metrics_hand_computed():
    y = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.6, 0.4, 0.9])
    m = binary_metrics(y, p, threshold=0.5)
    # AUC: positive/negative pairs (0.4>0.1, 0.4<0.6, 0.9>0.1, 0.9>0.6) -> 3/4
    assert m["auc"] == pytest.approx(0.75)
    assert m["sensitivity"] == pytest.approx(0.5)  # 0.9 only
    assert m["specificity"] == pytest.approx(0.5)  # 0.1 only
    assert m["balanced_accuracy"] == pytest.approx(0.5)
    assert m["brier"] == pytest.approx((0.01 + 0.36 + 0.36 + 0.01) / 4)


def test_rank_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(3)
    for _ in range(5):
        y = rng.integers(0, 2, 57)
        p = np.round(rng.random(57), 1)  # many ties
        assert auc_rank(y, p) == pytest.approx(roc_auc_score(y, p))


def test_bootstrap_ci_brackets_and_degenerate_cases():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p = np.clip(0.5 + 0.3 * (y - 0.5) + rng.normal(0, 0.2, 200), 0, 1)
    auc = roc_auc_score(y, p)
    ci = bootstrap_ci(y, p, n=500, seed=1)
    assert ci["auc"][0] < auc < ci["auc"][1]
    assert 0.02 < ci["auc"][1] - ci["auc"][0] < 0.2
    perfect = bootstrap_ci(y, y.astype(float), n=100)
    assert perfect["auc"] == (1.0, 1.0) and perfect["brier"] == (0.0, 0.0)


def test_correlation_cluster_filter_keeps_one_per_block():
    rng = np.random.default_rng(0)
    a, b, c = rng.normal(size=(3, 100))
    X = pd.DataFrame({
        "a1": a, "a2": 2 * a + 1, "a3": a + rng.normal(0, 0.05, 100),  # one block
        "b1": b, "b2": np.exp(b),                                      # monotone: Spearman r = 1
        "c1": c, "const": np.ones(100),
    })
    kept = CorrelationClusterFilter(0.9).fit(X).get_feature_names_out().tolist()
    assert len([k for k in kept if k.startswith("a")]) == 1
    assert len([k for k in kept if k.startswith("b")]) == 1
    assert "c1" in kept and "const" not in kept
    assert len(kept) == 3


def test_mrmr_prefers_relevant_and_non_redundant():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    s1 = y + rng.normal(0, 0.5, 300)
    s2 = y + rng.normal(0, 0.6, 300)  # a bit weaker, independent noise (r(s1, s2) ~ 0.45)
    X = pd.DataFrame({"s1": s1, "s1_copy": s1 + rng.normal(0, 0.01, 300), "s2": s2,
                      "noise": rng.normal(size=300)})
    kept = MRMRSelector(k=2).fit(X, y).get_feature_names_out().tolist()
    assert kept == ["s1", "s2"]  # F(s2)/0.45 > F(copy)/1: the near-duplicate loses


def test_combat_handles_unseen_and_tiny_centres():
    rng = np.random.default_rng(0)
    n = 60
    X = pd.DataFrame(rng.normal(size=(n, 5)), columns=[f"f{i}" for i in range(5)])
    X.insert(0, "centre", np.repeat(["A", "B", "C"], 20))
    X.loc[X.centre == "B", "f0"] += 5.0
    h = ComBatHarmonizer("centre").fit(X)
    new = pd.DataFrame(rng.normal(size=(8, 5)) + 10.0, columns=[f"f{i}" for i in range(5)])
    new.insert(0, "centre", "D")  # not seen in fit: aligned to the pooled training distribution
    out = h.transform(new)
    assert list(out.columns) == [f"f{i}" for i in range(5)]
    # the +10 offset of centre D is gone: its rows now have the pooled training mean
    # (ComBat's grand mean = mean over all training rows, here (0 + 5 + 0) / 3 for f0)
    np.testing.assert_allclose(out.mean().to_numpy(), X.drop(columns="centre").mean().to_numpy(), atol=1e-6)
    # rows are harmonised independently: any subset (one centre only, mixed with an unseen
    # centre) gives the same values as transforming everything at once
    full = h.transform(X)
    np.testing.assert_allclose(h.transform(X.iloc[:3]).to_numpy(), full.iloc[:3].to_numpy(), atol=1e-9)
    np.testing.assert_allclose(h.transform(X.iloc[25:45]).to_numpy(), full.iloc[25:45].to_numpy(), atol=1e-9)
    both = h.transform(pd.concat([X.iloc[:3], new]))
    np.testing.assert_allclose(both.iloc[:3].to_numpy(), full.iloc[:3].to_numpy(), atol=1e-9)
    # the seen offset is removed too: centre B's f0 mean equals the others' after ComBat
    means = full.groupby(X["centre"].to_numpy())["f0"].mean()
    assert abs(means["B"] - means["A"]) < 0.5 and abs(means["B"] - means["C"]) < 0.5


def test_too_few_patients_for_the_folds_is_a_clear_error():
    from biomarkers.modeling.spec import ValidationSpec
    from biomarkers.modeling.validation import nested_cv

    X = pd.DataFrame({"f": np.arange(12.0)})
    y = np.array([1] * 4 + [0] * 8)
    pipe = build_pipeline(PipelineSpec(name="a"), ["f"], None)
    with pytest.raises(InputError, match="only 4 patients in the smaller class: fewer than validation.outer_folds"):
        nested_cv(pipe, {}, X, y, ValidationSpec(outer_folds=5))
    with pytest.raises(InputError, match="too few for 4 outer x 4 inner folds"):
        nested_cv(pipe, {"model__C": [1.0]}, X, y, ValidationSpec(outer_folds=4, inner_folds=4))
