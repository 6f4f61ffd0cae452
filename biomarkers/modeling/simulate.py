"""Synthetic analysis tables for testing the modelling layer (no real patients).

Features are drawn from a latent-factor model so that they come in correlated blocks like
radiomics features do (shape/intensity/texture families), then each centre adds its own
offset and scale ("scanner effect"), and optionally a few features carry a planted
outcome signal. Column names follow ``<MODALITY>_<image_type>_<feature_class>_<feature>``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..features.naming import FeatureName

_CLASSES = {
    "shape": ["MeshVolume", "SurfaceArea", "Sphericity", "Elongation", "Flatness", "MajorAxisLength"],
    "firstorder": ["Mean", "Median", "Energy", "Entropy", "Kurtosis", "Skewness", "Variance", "Range",
                   "RootMeanSquared", "InterquartileRange"],
    "glcm": ["Contrast", "Correlation", "JointEnergy", "JointEntropy", "Idm", "Imc1", "Imc2", "ClusterShade",
             "Autocorrelation", "DifferenceEntropy"],
    "glrlm": ["RunLengthNonUniformity", "ShortRunEmphasis", "LongRunEmphasis", "GrayLevelNonUniformity",
              "RunEntropy", "RunVariance"],
    "glszm": ["ZoneEntropy", "SmallAreaEmphasis", "LargeAreaEmphasis", "ZonePercentage", "SizeZoneNonUniformity"],
    "gldm": ["DependenceEntropy", "DependenceNonUniformity", "SmallDependenceEmphasis", "LargeDependenceEmphasis"],
}
_IMAGE_TYPES = ["original", "wavelet-LLH", "wavelet-HLL", "log-sigma-2-0-mm-3D", "square", "gradient"]


def feature_names(n: int, modality: str = "CT") -> list[str]:
    """``n`` distinct radiomics-style column names (shape only for ``original``)."""
    names = [FeatureName(it, cls, f, modality).format() for it in _IMAGE_TYPES for cls, feats in _CLASSES.items()
             if cls != "shape" or it == "original" for f in feats]
    if n > len(names):
        raise ValueError(f"at most {len(names)} synthetic feature names")
    return names[:n]


def synthetic_table(
    n_patients: int = 120,
    n_features: int = 200,
    n_centres: int = 3,
    n_factors: int = 12,
    signal: float = 0.0,
    n_signal: int = 3,
    centre_shift: float = 1.0,
    centre_scale: float = 0.3,
    prevalence: float = 0.5,
    missing: float = 0.0,
    seed: int = 0,
    modality: str = "CT",
) -> pd.DataFrame:
    """An analysis table: ``patient_id``, ``centre``, ``outcome`` (0/1) and feature columns.

    ``signal`` is the effect size (in within-class SD units) added to ``n_signal`` features
    (the first of distinct correlation blocks, listed in ``df.attrs["signal_features"]``) for
    ``outcome == 1``. ``centre_shift``/``centre_scale``: SD of per-centre, per-feature
    additive offsets / log-scale factors. Outcome is balanced across centres (no confounding).
    """
    rng = np.random.default_rng(seed)
    names = feature_names(n_features, modality)
    centres = np.array([f"C{(i % n_centres) + 1}" for i in range(n_patients)])
    y = np.zeros(n_patients, dtype=int)
    for c in np.unique(centres):
        idx = np.flatnonzero(centres == c)
        k = int(round(prevalence * len(idx)))
        y[rng.choice(idx, size=k, replace=False)] = 1
    # latent factors -> correlated blocks
    block = rng.integers(0, n_factors, n_features)
    loadings = rng.uniform(0.6, 0.95, n_features)
    F = rng.normal(size=(n_patients, n_factors))
    X = F[:, block] * loadings + rng.normal(size=(n_patients, n_features)) * np.sqrt(1 - loadings**2)
    sig: list[str] = []
    if signal:
        chosen, seen = [], set()
        for j in range(n_features):
            if block[j] not in seen:
                seen.add(block[j])
                chosen.append(j)
            if len(chosen) == n_signal:
                break
        X[:, chosen] += signal * y[:, None]
        sig = [names[j] for j in chosen]
    # centre effects (additive + multiplicative), then realistic positive scales
    for c in np.unique(centres):
        rows = centres == c
        X[rows] = X[rows] * np.exp(rng.normal(0, centre_scale, n_features)) + rng.normal(0, centre_shift, n_features)
    scale = 10 ** rng.uniform(-1, 3, n_features)
    X = X * scale + 5 * scale
    if missing:
        X[rng.random(X.shape) < missing] = np.nan
    df = pd.DataFrame(X, columns=names)
    df.insert(0, "outcome", y)
    df.insert(0, "centre", centres)
    df.insert(0, "patient_id", [f"P{seed:03d}{i:04d}" for i in range(n_patients)])
    df.attrs["signal_features"] = sig
    return df


def synthetic_survival_table(
    n_patients: int = 120,
    n_features: int = 60,
    n_centres: int = 3,
    signal: float = 0.0,
    n_signal: int = 2,
    censoring: float = 0.3,
    seed: int = 0,
) -> pd.DataFrame:
    """Like :func:`synthetic_table` but with a time-to-event target.

    ``time_days`` follows an exponential law whose log-hazard is ``signal`` x the mean of
    the (standardised) planted features; about ``censoring`` of patients are censored
    (``event`` 0) at a uniform time before their event. Columns: patient_id, centre,
    event, time_days, features (``df.attrs["signal_features"]`` lists the planted ones).
    """
    df = synthetic_table(n_patients, n_features, n_centres, signal=0.0, seed=seed)
    rng = np.random.default_rng(seed + 1)
    feats = [c for c in df.columns if c not in ("patient_id", "centre", "outcome")]
    chosen = feats[:: max(1, len(feats) // n_signal)][:n_signal]
    z = df[chosen].to_numpy(dtype=float)
    z = (z - z.mean(axis=0)) / z.std(axis=0)
    hazard = np.exp(signal * z.mean(axis=1)) / 365.0
    t_event = rng.exponential(1.0 / hazard)
    censored = rng.random(n_patients) < censoring
    t_cens = t_event * rng.uniform(0.05, 1.0, n_patients)
    df = df.drop(columns="outcome")
    df.insert(2, "time_days", np.where(censored, t_cens, t_event) + 1.0)
    df.insert(2, "event", (~censored).astype(int))
    df.attrs["signal_features"] = chosen
    return df
