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


def _search(pipe: Pipeline, grid: dict, val: ValidationSpec, seed: int):
    if not grid:
        return clone(pipe)
    inner = StratifiedKFold(val.inner_folds, shuffle=True, random_state=seed)
    if val.search == "random":
        return RandomizedSearchCV(clone(pipe), grid, n_iter=val.n_iter, cv=inner, scoring=val.scoring,
                                  n_jobs=val.n_jobs, random_state=seed, error_score="raise")
    return GridSearchCV(clone(pipe), grid, cv=inner, scoring=val.scoring, n_jobs=val.n_jobs, error_score="raise")


def fit_with_search(pipe: Pipeline, grid: dict, X: pd.DataFrame, y: np.ndarray, val: ValidationSpec, seed: int = 0):
    """Fit the inner search (or the pipeline if the grid is empty); return (best pipeline, best params)."""
    est = _search(pipe, grid, val, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)
        warnings.simplefilter("ignore", category=RuntimeWarning)
        est.fit(X, y)
    if isinstance(est, (GridSearchCV, RandomizedSearchCV)):
        return est.best_estimator_, dict(est.best_params_)
    return est, {}


@dataclass
class CVResult:
    """Outcome of nested CV for one pipeline."""

    oof: np.ndarray  # (repeats, n) out-of-fold probabilities
    y: np.ndarray
    metrics: dict[str, float]
    ci: dict[str, tuple[float, float]]
    fold_auc: list[float]
    feature_counts: Counter
    n_folds: int
    best_params: list[dict] = field(default_factory=list)
    permutation_p: float | None = None
    permutation_aucs: list[float] = field(default_factory=list)

    @property
    def oof_mean(self) -> np.ndarray:
        return np.nanmean(self.oof, axis=0)

    def feature_frequency(self) -> pd.DataFrame:
        rows = [(f, c, c / self.n_folds) for f, c in self.feature_counts.items()]
        df = pd.DataFrame(rows, columns=["feature", "n_folds", "frequency"])
        return df.sort_values(["frequency", "feature"], ascending=[False, True]).reset_index(drop=True)


def check_folds(y: np.ndarray, val: ValidationSpec, inner: bool = True) -> None:
    """Each class needs at least outer_folds patients (stratification) and enough for the inner folds."""
    from ..errors import InputError

    n_min = int(min(np.sum(y == 0), np.sum(y == 1)))
    if n_min < val.outer_folds:
        raise InputError(f"the smaller class has {n_min} patients: fewer than validation.outer_folds "
                         f"({val.outer_folds}); lower outer_folds or add patients")
    if inner and n_min * (val.outer_folds - 1) // val.outer_folds < val.inner_folds:
        raise InputError(f"the smaller class has {n_min} patients: too few for {val.outer_folds} outer x "
                         f"{val.inner_folds} inner folds; lower inner_folds")


def _oof(pipe, grid, X, y, val, seed, keep_details=True):
    outer = RepeatedStratifiedKFold(n_splits=val.outer_folds, n_repeats=val.outer_repeats, random_state=seed)
    oof = np.full((val.outer_repeats, len(y)), np.nan)
    counts: Counter = Counter()
    fold_auc, params = [], []
    for i, (tr, te) in enumerate(outer.split(X, y)):
        best, bp = fit_with_search(pipe, grid, X.iloc[tr], y[tr], val, seed + i)
        p = best.predict_proba(X.iloc[te])[:, 1]
        oof[i // val.outer_folds, te] = p
        if keep_details:
            counts.update(selected_features(best))
            params.append(bp)
            fold_auc.append(float(roc_auc_score(y[te], p)) if len(np.unique(y[te])) == 2 else float("nan"))
    return oof, counts, fold_auc, params


def nested_cv(pipe: Pipeline, grid: dict, X: pd.DataFrame, y: np.ndarray, val: ValidationSpec,
              permutations: int | None = None) -> CVResult:
    """Nested CV of ``pipe`` with inner search over ``grid``; optional label-permutation p-value.

    The permutation test repeats the whole nested CV with shuffled labels ``permutations``
    times; p = (1 + #{AUC_perm >= AUC}) / (1 + permutations).
    """
    y = np.asarray(y).astype(int)
    check_folds(y, val, inner=bool(grid))
    oof, counts, fold_auc, params = _oof(pipe, grid, X, y, val, val.seed)
    p = np.nanmean(oof, axis=0)
    metrics = binary_metrics(y, p, val.threshold)
    ci = bootstrap_ci(y, p, val.bootstrap, val.confidence, val.threshold, val.seed)
    res = CVResult(oof, y, metrics, ci, fold_auc, counts, val.outer_folds * val.outer_repeats, params)
    n_perm = val.permutations if permutations is None else permutations
    if n_perm:
        rng = np.random.default_rng(val.seed + 7919)
        aucs = []
        for _ in range(n_perm):
            yp = rng.permutation(y)
            o, *_ = _oof(pipe, grid, X, yp, val, val.seed, keep_details=False)
            aucs.append(float(roc_auc_score(yp, np.nanmean(o, axis=0))))
        res.permutation_aucs = aucs
        res.permutation_p = (1 + sum(a >= metrics["auc"] for a in aucs)) / (1 + n_perm)
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
    p = best.predict_proba(X.loc[test])[:, 1]
    yt = y[test]
    return HeldOutResult(str(centre), int((~test).sum()), int(test.sum()), p, yt,
                         binary_metrics(yt, p, val.threshold),
                         bootstrap_ci(yt, p, val.bootstrap, val.confidence, val.threshold, val.seed))
