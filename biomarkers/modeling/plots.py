"""ROC and calibration figures (matplotlib, Agg backend; figures are returned, not shown)."""

from __future__ import annotations

import numpy as np


def _figure():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(4.5, 4.5), dpi=100)


def roc_figure(y: np.ndarray, p: np.ndarray, title: str, auc_text: str = ""):
    from sklearn.metrics import roc_curve

    fig, ax = _figure()
    fpr, tpr, _ = roc_curve(y, p)
    ax.plot(fpr, tpr, lw=2, label=f"out-of-fold {auc_text}".strip())
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1, label="chance")
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title=title, xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def calibration_figure(y: np.ndarray, p: np.ndarray, title: str, n_bins: int = 5):
    from sklearn.calibration import calibration_curve

    fig, ax = _figure()
    frac, mean = calibration_curve(y, p, n_bins=n_bins, strategy="quantile")
    ax.plot(mean, frac, "o-", lw=2, label="out-of-fold")
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1, label="perfect calibration")
    ax.set(xlabel="predicted probability", ylabel="observed frequency", title=title, xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


def km_figure(y, risk: np.ndarray, title: str, text: str = ""):
    """Kaplan-Meier curves of the patients above / below the median out-of-fold risk score."""
    from sksurv.nonparametric import kaplan_meier_estimator

    fig, ax = _figure()
    high = np.asarray(risk) >= np.median(risk)
    for mask, lab in ((~high, "low risk"), (high, "high risk")):
        if mask.sum() == 0:
            continue
        t, s = kaplan_meier_estimator(y["event"][mask].astype(bool), y["time"][mask])
        ax.step(t, s, where="post", lw=2, label=f"{lab} (n={int(mask.sum())})")
    ax.set(xlabel="time", ylabel="event-free probability", title=f"{title}\n{text}".strip(), ylim=(0, 1.02))
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    return fig
