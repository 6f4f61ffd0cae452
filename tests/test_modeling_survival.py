"""Time-to-event targets: Cox score selection, C-index, nested CV without leakage, MLflow round trip.

References are independent: the log-rank statistic of scikit-survival's ``compare_survival``
(equal to the Cox score test for a binary covariate without tied times) and a hand-counted
Harrell C-index. Data: synthetic survival table (exponential event times whose log-hazard
depends on two planted features, ~30% censoring, 3 centres with scanner offsets).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml
from sksurv.compare import compare_survival
from sksurv.util import Surv

from biomarkers.errors import ConfigError
from biomarkers.modeling.data import build_dataset
from biomarkers.modeling.pipelines import build_pipeline
from biomarkers.modeling.simulate import synthetic_survival_table
from biomarkers.modeling.spec import ExperimentSpec
from biomarkers.modeling.transformers import cox_score
from biomarkers.modeling.validation import c_index, nested_cv

TARGET = {"kind": "survival", "column": "event", "time": "time_days", "positive": 1}
PIPELINES = [
    {"name": "cox_combat", "harmonize": "combat", "redundancy": 0.9, "select": {"method": "univariate", "k": 5},
     "model": {"type": "cox"}, "grid": {"model__alpha": [0.1, 10.0]}},
    {"name": "rsf_mrmr", "harmonize": "combat", "redundancy": 0.9, "select": {"method": "mrmr", "k": 5},
     "model": {"type": "random_survival_forest", "params": {"n_estimators": 50}}},
]
VALIDATION = {"outer_folds": 3, "inner_folds": 3, "bootstrap": 300, "seed": 0}


def _spec(**kw) -> ExperimentSpec:
    d = {"name": "surv", "input": {"table": "x.parquet"}, "target": TARGET, "pipelines": PIPELINES,
         "validation": VALIDATION}
    d.update(kw)
    return ExperimentSpec.model_validate(d)


def test_cox_score_is_the_logrank_statistic_for_a_binary_feature():
    rng = np.random.default_rng(0)
    n = 80
    g = rng.integers(0, 2, n)
    t = rng.exponential(1 / (1 + g)) + 0.1  # continuous: no tied times
    e = rng.random(n) < 0.7
    y = Surv.from_arrays(e, t)
    stat, p = cox_score(np.c_[g, 3 * g - 2], y)
    chisq, pval = compare_survival(y, g)[:2]
    assert stat[0] == pytest.approx(chisq, rel=1e-9) and p[0] == pytest.approx(pval, rel=1e-9)
    assert stat[1] == pytest.approx(stat[0], rel=1e-9)  # invariant to affine rescaling


def test_c_index_hand_counted():
    y = Surv.from_arrays([True, False, True, True], [2.0, 4.0, 6.0, 8.0])
    # comparable pairs (earlier event vs later time): (0,1) (0,2) (0,3) (2,3)
    assert c_index(y, np.array([0.9, 0.5, 0.7, 0.1])) == pytest.approx(1.0)
    assert c_index(y, np.array([0.9, 0.5, 0.05, 0.1])) == pytest.approx(3 / 4)  # (2,3) discordant
    assert c_index(y, np.array([0.1, 0.5, 0.7, 0.9])) == pytest.approx(0.0)


def test_survival_spec_checks():
    with pytest.raises(Exception, match="target.time"):
        _spec(target={"kind": "survival", "column": "event"})
    with pytest.raises(Exception, match="not usable for a survival target"):
        _spec(pipelines=[{"name": "lr", "model": {"type": "logistic"}}])
    with pytest.raises(Exception, match="not usable for a binary target"):
        _spec(target={"column": "event"}, pipelines=[{"name": "c", "model": {"type": "cox"}}])
    df = synthetic_survival_table(30, 10, seed=1)
    df.loc[3, "time_days"] = -1.0
    from biomarkers.errors import InputError

    with pytest.raises(InputError, match=r"time_days' must be a positive number \(rows \['P0010003'\]\)"):
        build_dataset(df, _spec())


@pytest.fixture(scope="module")
def surv_table() -> pd.DataFrame:
    return synthetic_survival_table(120, 60, n_centres=3, signal=1.5, n_signal=2, seed=3)


@pytest.mark.slow
def test_survival_signal_found_and_shuffled_pairs_at_chance(surv_table):
    spec = _spec()
    perm = np.random.default_rng(1).permutation(len(surv_table))
    null = surv_table.copy()
    null[["event", "time_days"]] = surv_table[["event", "time_days"]].to_numpy()[perm]
    for label, df in (("planted", surv_table), ("shuffled", null)):
        ds = build_dataset(df, spec)
        for p in spec.pipelines:
            r = nested_cv(build_pipeline(p, ds.feature_columns, "centre"), p.grid, ds.X, ds.y, spec.validation)
            lo, hi = r.ci["c_index"]
            if label == "planted":
                assert lo > 0.5, (p.name, r.metrics, (lo, hi))
            else:
                assert lo <= 0.5 <= hi, (p.name, r.metrics, (lo, hi))


def test_survival_experiment_round_trip(tmp_path):
    import mlflow.pyfunc
    from mlflow import MlflowClient

    from biomarkers import tracking
    from biomarkers.modeling.experiment import leaderboard, predict_table, run_experiment

    df = synthetic_survival_table(60, 20, n_centres=2, signal=2.0, seed=7)
    df.to_parquet(tmp_path / "t.parquet", index=False)
    spec = {"name": "surv-rt", "input": {"table": "t.parquet"}, "target": TARGET,
            "pipelines": [dict(PIPELINES[0], grid={}), PIPELINES[1]],
            "validation": {"outer_folds": 3, "inner_folds": 2, "bootstrap": 50}, "registered_model": "surv-rt"}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    res = run_experiment(tmp_path / "s.yaml", tracking_uri=uri)
    c = MlflowClient(uri)
    lb = leaderboard("surv-rt", uri).set_index("pipeline")
    for pr in res.pipelines:
        m = c.get_run(pr.run_id).data.metrics
        assert m["c_index"] == pytest.approx(pr.metrics["c_index"]) == pytest.approx(lb.loc[pr.name, "c_index"])
        assert m["c_index_ci_low"] <= m["c_index"] <= m["c_index_ci_high"]
        arts = {a.path for a in c.list_artifacts(pr.run_id, "plots")}
        assert arts == {"plots/km_risk_groups.png"}
        with tracking.using_tracking(uri):
            model = mlflow.pyfunc.load_model(pr.model_uri)
        X = df[model.metadata.get_input_schema().input_names()]
        np.testing.assert_allclose(np.asarray(model.predict(X), float), pr.final_model.predict(X), atol=1e-9)
    pred = predict_table("models:/surv-rt/1", tmp_path / "t.parquet", tracking_uri=uri)
    assert list(pred.columns) == ["patient_id", "risk_score"]
    best = next(p for p in res.pipelines if p.name == res.best)
    np.testing.assert_allclose(pred["risk_score"], best.final_model.predict(df), atol=1e-9)


def test_l1_selection_rejected_for_survival():
    with pytest.raises(Exception, match="l1 is for binary targets"):
        _spec(pipelines=[{"name": "c", "select": {"method": "l1"}, "model": {"type": "cox"}}])
    assert ConfigError  # imported for symmetry with other tests
