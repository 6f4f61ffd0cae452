"""Build scikit-learn Pipelines from :class:`PipelineSpec`.

Steps (names are the keys of ``grid``): ``impute`` -> ``harmonize`` -> ``scale`` ->
``redundancy`` -> ``select`` -> ``model``. Every data-dependent step is fitted by
``Pipeline.fit``, so inside cross-validation it sees the training fold only.
"""

from __future__ import annotations

import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.feature_selection import SelectFromModel, SelectKBest, f_classif
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import RobustScaler, StandardScaler
from sklearn.svm import SVC
from sklearn.utils import ClassifierTags

from ..errors import ConfigError
from .spec import ModelSpec, PipelineSpec
from .transformers import ComBatHarmonizer, CorrelationClusterFilter, DropColumns, MRMRSelector, f_score

STEPS = ("impute", "harmonize", "scale", "redundancy", "select", "model")


def make_model(spec: ModelSpec, seed: int = 0):
    """The final estimator (all with predict_proba; balanced class weights by default)."""
    p = dict(spec.params)
    if spec.type == "logistic":
        kw = dict(C=1.0, max_iter=5000, class_weight="balanced", random_state=seed)
    elif spec.type == "random_forest":
        kw = dict(n_estimators=200, min_samples_leaf=2, class_weight="balanced", random_state=seed, n_jobs=1)
    elif spec.type == "svm":
        # Platt-scaled SVC (grid keys: model__estimator__C, model__estimator__gamma)
        svc = dict(C=1.0, kernel="rbf", class_weight="balanced", random_state=seed)
        svc.update(p)
        try:
            return CalibratedClassifierCV(SVC(**svc), method="sigmoid", cv=3, ensemble=False)
        except TypeError as err:
            raise ConfigError(f"model.params for svm: {err}") from None
    elif spec.type == "gradient_boosting":
        kw = dict(n_estimators=100, max_depth=2, learning_rate=0.1, subsample=0.8, random_state=seed)
    elif spec.type == "cox":
        from sksurv.linear_model import CoxPHSurvivalAnalysis

        kw = dict(alpha=1.0, ties="breslow")
        kw.update(p)
        try:
            return CoxPHSurvivalAnalysis(**kw)
        except TypeError as err:
            raise ConfigError(f"model.params for cox: {err}") from None
    elif spec.type == "random_survival_forest":
        from sksurv.ensemble import RandomSurvivalForest

        kw = dict(n_estimators=200, min_samples_leaf=5, max_features="sqrt", random_state=seed, n_jobs=1)
        kw.update(p)
        try:
            return RandomSurvivalForest(**kw)
        except TypeError as err:
            raise ConfigError(f"model.params for random_survival_forest: {err}") from None
    else:  # pragma: no cover - pydantic prevents this
        raise ConfigError(f"unknown model type {spec.type!r}")
    kw.update(p)
    cls = {"logistic": LogisticRegression, "random_forest": RandomForestClassifier, "svm": SVC,
           "gradient_boosting": GradientBoostingClassifier}[spec.type]
    try:
        return cls(**kw)
    except TypeError as err:
        raise ConfigError(f"model.params for {spec.type}: {err}") from None


def make_selector(method: str, k: int, seed: int = 0):
    if method == "none":
        return "passthrough"
    if method == "univariate":
        return KBestSelector(f_score, k=k)
    if method == "l1":
        lr = LogisticRegression(l1_ratio=1.0, solver="liblinear", C=0.5, class_weight="balanced", random_state=seed)
        return L1Selector(lr, threshold=-np.inf, max_features=k)
    if method == "mrmr":
        return MRMRSelector(k=k)
    raise ConfigError(f"unknown selection method {method!r}")  # pragma: no cover


class KBestSelector(SelectKBest):
    """SelectKBest keeping every feature, silently, when ``k`` exceeds the features left by the previous steps.

    Score: ANOVA F (binary target) or the univariate Cox score test (survival target).
    Fitted ``k_``: the number of features kept.
    """

    def _check_params(self, X, y):  # called by fit on validated X; SelectKBest would warn
        self.k_ = X.shape[1] if self.k == "all" else min(self.k, X.shape[1])


class L1Selector(SelectFromModel):
    """The ``max_features`` largest |coefficients| of an L1 logistic regression.

    Fitted ``max_features_``: ``max_features`` capped at the input width. Binary targets only
    (liblinear's L1 path; the project's targets are binary): tagged so for scikit-learn's checks.
    """

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags = ClassifierTags(multi_class=False)
        return tags

    def _check_max_features(self, X):  # called by fit before validation (SelectFromModel's own refuses k > width)
        shape = getattr(X, "shape", ())
        cap = self.max_features is not None and len(shape) == 2
        self.max_features_ = min(self.max_features, shape[1]) if cap else self.max_features


def build_pipeline(spec: PipelineSpec, feature_columns: list[str], centre_column: str | None, seed: int = 0) -> Pipeline:
    """The scikit-learn Pipeline of one candidate (pandas output throughout)."""
    imputer = ColumnTransformer(
        [("impute", SimpleImputer(strategy=spec.impute, keep_empty_features=True), list(feature_columns))],
        remainder="passthrough",
        verbose_feature_names_out=False,
    )
    if spec.harmonize in ("combat", "combat_eb"):
        if not centre_column:
            raise ConfigError(f"pipeline {spec.name}: harmonize: {spec.harmonize} needs input.centre_column")
        harm = ComBatHarmonizer(site_column=centre_column, eb=spec.harmonize == "combat_eb")
    else:
        harm = DropColumns(columns=(centre_column,) if centre_column else ())
    scaler = {"none": "passthrough", "standard": StandardScaler(), "robust": RobustScaler()}[spec.scale]
    redundancy = CorrelationClusterFilter(spec.redundancy) if spec.redundancy is not None else "passthrough"
    select = make_selector(spec.select.method, spec.select.k, seed)
    pipe = Pipeline(
        [("impute", imputer), ("harmonize", harm), ("scale", scaler), ("redundancy", redundancy),
         ("select", select), ("model", make_model(spec.model, seed))]
    )
    pipe.set_output(transform="pandas")
    params = pipe.get_params()
    bad = [k for k in spec.grid if k not in params]
    if bad:
        raise ConfigError(
            f"pipeline {spec.name}: grid keys {bad} are not parameters of the pipeline "
            f"(use step__param with steps {', '.join(STEPS)}, e.g. model__C)"
        )
    return pipe


def selected_features(fitted: Pipeline) -> list[str]:
    """Names of the features reaching the model of a fitted pipeline."""
    return [str(c) for c in fitted[:-1].get_feature_names_out()]
