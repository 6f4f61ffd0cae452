"""No leakage, planted signal found, ComBat removes a centre effect but keeps the signal.

About the data. The honest test of leakage is on a real radiomics feature table with the
labels shuffled. The only real images available to the test suite are the six STS reference
patients (pyradiomics features of six rows): far too few for nested cross-validation, let
alone bootstrap confidence intervals. So these tests use a realistic *synthetic* feature
table instead (:func:`biomarkers.modeling.simulate.synthetic_table`): 120 patients x 200
features named like pyradiomics features, generated from 12 latent factors so features come
in strongly correlated blocks as radiomics features do, spanning five orders of magnitude,
with per-centre additive and multiplicative offsets ("scanner effects") in 3 centres. On a
real cohort the same check is ``biomarkers experiment SPEC --table TABLE`` after shuffling
the target column (or ``--permutations N``): every pipeline's AUC CI must contain 0.5.

Leakage would show up as an AUC CI above 0.5 on shuffled labels: with 200 features and 120
patients, selecting features (or fitting ComBat/scaling) on all patients before CV makes
noise look predictive. :func:`test_the_check_detects_leakage` demonstrates that the check
is sensitive: doing the univariate selection outside the CV does push the CI above 0.5.

CV is kept small (3 outer x 3 inner folds, 1 repeat, small grids) so this file runs in
well under a minute on an idle machine.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.feature_selection import SelectKBest, f_classif
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from biomarkers.modeling.data import build_dataset
from biomarkers.modeling.pipelines import build_pipeline
from biomarkers.modeling.simulate import synthetic_table
from biomarkers.modeling.spec import ExperimentSpec
from biomarkers.modeling.transformers import ComBatHarmonizer
from biomarkers.modeling.validation import bootstrap_ci, nested_cv

PIPELINES = [
    {"name": "lr_combat_univariate", "harmonize": "combat", "redundancy": 0.9,
     "select": {"method": "univariate", "k": 10}, "model": {"type": "logistic"}, "grid": {"model__C": [0.1, 1.0]}},
    {"name": "svm_combat_l1", "harmonize": "combat", "redundancy": 0.9,
     "select": {"method": "l1", "k": 10}, "model": {"type": "svm"}},
    {"name": "rf_mrmr", "harmonize": "none", "redundancy": 0.9,
     "select": {"method": "mrmr", "k": 10}, "model": {"type": "random_forest", "params": {"n_estimators": 100}}},
    {"name": "gb_combat_univariate", "harmonize": "combat", "redundancy": 0.9,
     "select": {"method": "univariate", "k": 10}, "model": {"type": "gradient_boosting", "params": {"n_estimators": 50}}},
]
VALIDATION = {"outer_folds": 3, "outer_repeats": 1, "inner_folds": 3, "bootstrap": 1000, "seed": 0}


def _spec() -> ExperimentSpec:
    return ExperimentSpec.model_validate(
        {"name": "leak", "input": {"table": "unused.parquet"}, "pipelines": PIPELINES, "validation": VALIDATION}
    )


@pytest.fixture(scope="module")
def signal_table() -> pd.DataFrame:
    return synthetic_table(120, 200, n_centres=3, signal=1.2, n_signal=3, centre_shift=1.0, seed=11)


@pytest.fixture(scope="module")
def null_table(signal_table) -> pd.DataFrame:
    df = signal_table.copy()
    df["outcome"] = np.random.default_rng(2024).permutation(df["outcome"].to_numpy())
    return df


def _run_all(df: pd.DataFrame) -> dict[str, object]:
    spec = _spec()
    ds = build_dataset(df, spec)
    out = {}
    for p in spec.pipelines:
        pipe = build_pipeline(p, ds.feature_columns, ds.centre_column, seed=0)
        out[p.name] = nested_cv(pipe, p.grid, ds.X, ds.y, spec.validation)
    return out


@pytest.mark.slow
def test_shuffled_labels_auc_ci_contains_chance(null_table):
    results = _run_all(null_table)
    for name, r in results.items():
        lo, hi = r.ci["auc"]
        assert lo <= 0.5 <= hi, f"{name}: AUC {r.metrics['auc']:.3f} CI [{lo:.3f}, {hi:.3f}] excludes 0.5 on shuffled labels"


@pytest.mark.slow
def test_planted_signal_is_found_by_every_pipeline(signal_table):
    results = _run_all(signal_table)
    planted = set(signal_table.attrs["signal_features"])
    for name, r in results.items():
        lo, hi = r.ci["auc"]
        assert lo > 0.5, f"{name}: AUC {r.metrics['auc']:.3f} CI [{lo:.3f}, {hi:.3f}] does not exclude 0.5"
        freq = r.feature_frequency().set_index("feature")["frequency"]
        # the planted features (or a near-copy from the same correlated block) are selected in most folds
        assert freq.reindex(sorted(planted)).fillna(0).max() >= 2 / 3, (name, freq.head(8).to_dict())


def test_the_check_detects_leakage(null_table):
    """Selecting features on all patients before CV (the classic leak) beats chance on shuffled labels."""
    ds = build_dataset(null_table, _spec())
    X = ds.X.drop(columns="centre").to_numpy()
    y = ds.y
    leaked = SelectKBest(f_classif, k=10).fit(X, y).transform(X)  # sees the test folds' labels
    cv = StratifiedKFold(3, shuffle=True, random_state=0)
    p = cross_val_predict(make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000)), leaked, y,
                          cv=cv, method="predict_proba")[:, 1]
    lo, hi = bootstrap_ci(y, p, n=1000)["auc"]
    assert lo > 0.5, f"leaky selection should look predictive on noise, got CI [{lo:.3f}, {hi:.3f}]"


def _centre_accuracy(X: pd.DataFrame, centres: np.ndarray, harmonise: bool, eb: bool = False) -> np.ndarray:
    """Out-of-fold predictions of the centre from the features (ComBat fitted on training folds only)."""
    steps = [ComBatHarmonizer("centre", eb=eb)] if harmonise else []
    Xin = X if harmonise else X.drop(columns="centre")
    model = make_pipeline(*steps, StandardScaler(), LogisticRegression(C=1.0, max_iter=5000))
    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    return cross_val_predict(model, Xin, centres, cv=cv) == centres


def test_combat_removes_centre_effect_but_keeps_signal(signal_table):
    ds = build_dataset(signal_table, _spec())
    centres = ds.centres.to_numpy()
    chance = 1 / 3

    raw_ok = _centre_accuracy(ds.X, centres, harmonise=False)
    harm_ok = _centre_accuracy(ds.X, centres, harmonise=True)
    n = len(centres)
    # binomial 95% CI (normal approximation) of the accuracy
    half = lambda acc: 1.96 * np.sqrt(acc * (1 - acc) / n)  # noqa: E731
    assert raw_ok.mean() > 0.9, f"simulated centre offsets should make the centre predictable ({raw_ok.mean():.2f})"
    acc = harm_ok.mean()
    assert acc - half(max(acc, chance)) <= chance, f"centre still predictable after ComBat: accuracy {acc:.2f}"
    # documented limitation (why harmonize: combat is location/scale without empirical Bayes):
    # EB shrinkage leaves a residual centre signal that 200 features add up to
    eb_acc = _centre_accuracy(ds.X, centres, harmonise=True, eb=True).mean()
    assert raw_ok.mean() > eb_acc > acc

    # the planted biomarker survives harmonisation: its univariate AUC is essentially unchanged
    from sklearn.metrics import roc_auc_score

    harm = ComBatHarmonizer("centre").fit_transform(ds.X)
    for f in signal_table.attrs["signal_features"]:
        before = roc_auc_score(ds.y, ds.X[f])
        after = roc_auc_score(ds.y, harm[f])
        assert after > 0.7 and after >= before - 0.05, (f, before, after)
