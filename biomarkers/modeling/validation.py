"""Nested cross-validation, metrics with bootstrap CIs, permutation test, held-out centre.

The estimate comes from the outer loop (repeated stratified k-fold); hyperparameters are
chosen by an inner search on the outer training fold only (``GridSearchCV`` or
``RandomizedSearchCV``). Every outer test fold is predicted by a pipeline that never saw
it, so the out-of-fold (OOF) probabilities are honest. Metrics are computed on each
patient's OOF probability averaged over repeats; 95% CIs by the percentile bootstrap over
patients.
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.metrics import brier_score_loss, roc_auc_score
from sklearn.model_selection import GridSearchCV, RandomizedSearchCV, RepeatedStratifiedKFold, StratifiedKFold
from sklearn.pipeline import Pipeline

from .pipelines import selected_features
from .spec import ValidationSpec

METRICS = ("auc", "balanced_accuracy", "sensitivity", "specificity", "brier")


def binary_metrics(y: np.ndarray, p: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """AUC, balanced accuracy, sensitivity, specificity (at ``threshold``) and Brier score."""
    y = np.asarray(y).astype(int)
    p = np.asarray(p, dtype=float)
    pred = p >= threshold
    pos, neg = y == 1, y == 0
    sens = float(pred[pos].mean()) if pos.any() else float("nan")
    spec = float((~pred[neg]).mean()) if neg.any() else float("nan")
    auc = float(roc_auc_score(y, p)) if pos.any() and neg.any() else float("nan")
    return {
        "auc": auc,
        "balanced_accuracy": (sens + spec) / 2.0,
        "sensitivity": sens,
        "specificity": spec,
        "brier": float(brier_score_loss(y, p)),
    }


def auc_rank(y: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney U statistic (ties count 1/2); NaN if one class is absent."""
    from scipy.stats import rankdata

    y = np.asarray(y).astype(bool)
    n1 = int(y.sum())
    n0 = len(y) - n1
    if n1 == 0 or n0 == 0:
        return float("nan")
    r = rankdata(p)
    return float((r[y].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def bootstrap_ci(
    y: np.ndarray, p: np.ndarray, n: int = 1000, confidence: float = 0.95, threshold: float = 0.5, seed: int = 0
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap CIs (resampling patients with replacement) for every metric.

    Resamples with a single class are skipped (AUC, sensitivity or specificity undefined).
    """
    y = np.asarray(y).astype(int)
    p = np.asarray(p, dtype=float)
    nan2 = (float("nan"), float("nan"))
    if n <= 0:
        return {m: nan2 for m in METRICS}
    rng = np.random.default_rng(seed)
    N = len(y)
    idx = rng.integers(0, N, size=(n, N))
    yy, pp = y[idx], p[idx]
    npos = yy.sum(axis=1)
    ok = (npos > 0) & (npos < N)
    yy, pp, npos = yy[ok], pp[ok], npos[ok]
    if not len(yy):
        return {m: nan2 for m in METRICS}
    pred = pp >= threshold
    sens = (pred & (yy == 1)).sum(axis=1) / npos
    spec = (~pred & (yy == 0)).sum(axis=1) / (N - npos)
    auc = np.array([auc_rank(a, b) for a, b in zip(yy, pp)])
    draws = {"auc": auc, "balanced_accuracy": (sens + spec) / 2, "sensitivity": sens, "specificity": spec,
             "brier": ((pp - yy) ** 2).mean(axis=1)}
    a = (1.0 - confidence) / 2.0
    return {m: (float(np.quantile(v, a)), float(np.quantile(v, 1 - a))) for m, v in draws.items()}


def is_survival(y) -> bool:
    """True for a structured (event, time) survival array."""
    return bool(getattr(np.asarray(y).dtype, "names", None))


def strata(y) -> np.ndarray:
    """What folds are stratified on: the 0/1 outcome, or the event indicator for survival."""
    return np.asarray(y["event"]).astype(int) if is_survival(y) else np.asarray(y).astype(int)


def c_index(y, risk: np.ndarray) -> float:
    """Harrell's concordance index (scikit-survival) of risk scores (higher = earlier event)."""
    from sksurv.metrics import concordance_index_censored

    return float(concordance_index_censored(y["event"].astype(bool), y["time"], np.asarray(risk, float))[0])


def evaluate(y, p: np.ndarray, val: ValidationSpec) -> tuple[dict[str, float], dict[str, tuple[float, float]]]:
    """Point metrics and bootstrap CIs: AUC & co. (binary) or the C-index (survival)."""
    if not is_survival(y):
        return (binary_metrics(y, p, val.threshold),
                bootstrap_ci(y, p, val.bootstrap, val.confidence, val.threshold, val.seed))
    m = {"c_index": c_index(y, p)}
    draws = []
    rng = np.random.default_rng(val.seed)
    for _ in range(val.bootstrap):
        idx = rng.integers(0, len(p), len(p))
        if y["event"][idx].any():
            draws.append(c_index(y[idx], p[idx]))
    a = (1.0 - val.confidence) / 2.0
    ci = (float(np.quantile(draws, a)), float(np.quantile(draws, 1 - a))) if draws else (float("nan"),) * 2
    return m, {"c_index": ci}


def primary_metric(y) -> str:
    return "c_index" if is_survival(y) else "auc"


def _score(y, p) -> float:
    if is_survival(y):
        return c_index(y, p) if np.asarray(y["event"]).any() else float("nan")
    return float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else float("nan")


def predict_score(model, X) -> np.ndarray:
    """P(positive) for classifiers, the risk score for survival models."""
    if hasattr(model, "predict_proba") and not hasattr(model[-1] if isinstance(model, Pipeline) else model,
                                                         "predict_survival_function"):
        return model.predict_proba(X)[:, 1]
    return np.asarray(model.predict(X), dtype=float)


def _search(pipe: Pipeline, grid: dict, val: ValidationSpec, seed: int, X, y):
    if not grid:
        return clone(pipe)
    inner = list(StratifiedKFold(val.inner_folds, shuffle=True, random_state=seed).split(X, strata(y)))
    scoring = None if is_survival(y) else (val.scoring or "roc_auc")
    if val.search == "random":
        return RandomizedSearchCV(clone(pipe), grid, n_iter=val.n_iter, cv=inner, scoring=scoring,
                                  n_jobs=val.n_jobs, random_state=seed, error_score="raise")
    return GridSearchCV(clone(pipe), grid, cv=inner, scoring=scoring, n_jobs=val.n_jobs, error_score="raise")


def fit_with_search(pipe: Pipeline, grid: dict, X: pd.DataFrame, y: np.ndarray, val: ValidationSpec, seed: int = 0):
    """Fit the inner search (or the pipeline if the grid is empty); return (best pipeline, best params).

    Inner folds are stratified on the outcome (or event); the search criterion is
    ``validation.scoring`` (default AUC) or, for survival, the model's C-index.
    """
    est = _search(pipe, grid, val, seed, X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)
        warnings.simplefilter("ignore", category=RuntimeWarning)
        est.fit(X, y)
    if isinstance(est, (GridSearchCV, RandomizedSearchCV)):
        return est.best_estimator_, dict(est.best_params_)
    return est, {}


@dataclass
class CVResult:
    """Outcome of nested CV for one pipeline (``oof``: probabilities, or risk scores for survival)."""

    oof: np.ndarray  # (repeats, n) out-of-fold predictions
    y: np.ndarray
    metrics: dict[str, float]
    ci: dict[str, tuple[float, float]]
    fold_scores: list[float]  # AUC (or C-index) of each outer test fold
    feature_counts: Counter
    n_folds: int
    best_params: list[dict] = field(default_factory=list)
    permutation_p: float | None = None
    permutation_scores: list[float] = field(default_factory=list)

    @property
    def primary(self) -> str:
        return primary_metric(self.y)

    @property
    def oof_mean(self) -> np.ndarray:
        return np.nanmean(self.oof, axis=0)

    def feature_frequency(self) -> pd.DataFrame:
        rows = [(f, c, c / self.n_folds) for f, c in self.feature_counts.items()]
        df = pd.DataFrame(rows, columns=["feature", "n_folds", "frequency"])
        return df.sort_values(["frequency", "feature"], ascending=[False, True]).reset_index(drop=True)


def check_folds(y: np.ndarray, val: ValidationSpec, inner: bool = True) -> None:
    """Each class (or events/censored) needs at least outer_folds patients, and enough for the inner folds."""
    from ..errors import InputError

    s = strata(y)
    n_min = int(min(np.sum(s == 0), np.sum(s == 1)))
    what = "events or censored patients" if is_survival(y) else "patients in the smaller class"
    if n_min < val.outer_folds:
        raise InputError(f"only {n_min} {what}: fewer than validation.outer_folds "
                         f"({val.outer_folds}); lower outer_folds or add patients")
    if inner and n_min * (val.outer_folds - 1) // val.outer_folds < val.inner_folds:
        raise InputError(f"only {n_min} {what}: too few for {val.outer_folds} outer x "
                         f"{val.inner_folds} inner folds; lower inner_folds")


def _oof(pipe, grid, X, y, val, seed, keep_details=True):
    outer = RepeatedStratifiedKFold(n_splits=val.outer_folds, n_repeats=val.outer_repeats, random_state=seed)
    oof = np.full((val.outer_repeats, len(y)), np.nan)
    counts: Counter = Counter()
    scores, params = [], []
    for i, (tr, te) in enumerate(outer.split(X, strata(y))):
        best, bp = fit_with_search(pipe, grid, X.iloc[tr], y[tr], val, seed + i)
        p = predict_score(best, X.iloc[te])
        oof[i // val.outer_folds, te] = p
        if keep_details:
            counts.update(selected_features(best))
            params.append(bp)
            scores.append(_score(y[te], p))
    return oof, counts, scores, params


def nested_cv(pipe: Pipeline, grid: dict, X: pd.DataFrame, y: np.ndarray, val: ValidationSpec,
              permutations: int | None = None) -> CVResult:
    """Nested CV of ``pipe`` with inner search over ``grid``; optional label-permutation p-value.

    ``y``: 0/1 outcome, or a structured survival array. Metrics are computed on each
    patient's out-of-fold prediction averaged over repeats. The permutation test repeats the
    whole nested CV with the outcomes (or (event, time) pairs) shuffled across patients
    ``permutations`` times; p = (1 + #{score_perm >= score}) / (1 + permutations).
    """
    y = np.asarray(y) if is_survival(y) else np.asarray(y).astype(int)
    check_folds(y, val, inner=bool(grid))
    oof, counts, scores, params = _oof(pipe, grid, X, y, val, val.seed)
    p = np.nanmean(oof, axis=0)
    metrics, ci = evaluate(y, p, val)
    res = CVResult(oof, y, metrics, ci, scores, counts, val.outer_folds * val.outer_repeats, params)
    n_perm = val.permutations if permutations is None else permutations
    if n_perm:
        rng = np.random.default_rng(val.seed + 7919)
        perm = []
        for _ in range(n_perm):
            yp = y[rng.permutation(len(y))]
            o, *_ = _oof(pipe, grid, X, yp, val, val.seed, keep_details=False)
            perm.append(_score(yp, np.nanmean(o, axis=0)))
        res.permutation_scores = perm
        res.permutation_p = (1 + sum(a >= metrics[res.primary] for a in perm)) / (1 + n_perm)
    return res


@dataclass
class HeldOutResult:
    centre: str
    n_train: int
    n_test: int
    p: np.ndarray
    y: np.ndarray
    metrics: dict[str, float]
    ci: dict[str, tuple[float, float]]


def heldout_centre(pipe: Pipeline, grid: dict, X: pd.DataFrame, y: np.ndarray, centres: pd.Series,
                   centre: str, val: ValidationSpec) -> HeldOutResult:
    """Train (with inner search) on all other centres, test on ``centre``."""
    test = (centres.astype(str) == str(centre)).to_numpy()
    if not test.any():
        from ..errors import ConfigError

        raise ConfigError(f"validation.heldout_centre {centre!r} has no patients "
                          f"(centres: {sorted(centres.astype(str).unique())})")
    best, _ = fit_with_search(pipe, grid, X.loc[~test], y[~test], val, val.seed)
    p = predict_score(best, X.loc[test])
    yt = y[test]
    m, ci = evaluate(yt, p, val)
    return HeldOutResult(str(centre), int((~test).sum()), int(test.sum()), p, yt, m, ci)
