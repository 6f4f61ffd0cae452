"""scikit-learn's own estimator checks on the project's transformers and selectors.

The selectors are built by the project's own factory (``make_selector``), as the pipelines use them.
``expected_failed_checks`` lists, with the reason, each check that cannot apply.
"""

from __future__ import annotations

from sklearn.utils.estimator_checks import parametrize_with_checks

from biomarkers.modeling.pipelines import L1Selector, make_selector
from biomarkers.modeling.transformers import ComBatHarmonizer, CorrelationClusterFilter, DropColumns

ESTIMATORS = [
    DropColumns(columns=("x1",)),
    ComBatHarmonizer(site_column="x0"),  # the checks' arrays get columns x0, x1, ...: x0 is the site
    CorrelationClusterFilter(threshold=0.9),
    make_selector("mrmr", 2),
    make_selector("univariate", 2),
    make_selector("l1", 2),
]


def _expected_failed(estimator) -> dict[str, str]:
    if isinstance(estimator, L1Selector):
        return {"check_fit2d_1sample": "the one-class error comes from LogisticRegression(solver='liblinear') itself, "
                                       "worded as 'multiclass' rather than 'one class'"}
    return {}


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=_expected_failed)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_fitted_caps_leave_parameters_unchanged():
    """k / max_features larger than the input width are capped in the fitted ``*_`` values only."""
    import numpy as np

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(40, 3)), np.repeat([0, 1], 20)
    for method, attr in (("univariate", "k"), ("l1", "max_features")):
        sel = make_selector(method, 10).fit(X, y)
        assert getattr(sel, attr) == 10 and getattr(sel, f"{attr}_") == 3
        assert sel.transform(X).shape == (40, 3)
