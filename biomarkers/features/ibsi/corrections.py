"""The one documented place for conventions where IBSI 1 differs from pyradiomics.

Each correction is exact: the IBSI value follows from the pyradiomics value (and,
where needed, the voxel count ``n``). The framework's own IBSI computations use
the same functions, so the convention is stated once.

=====================  ==========================================  ==============================
IBSI code              pyradiomics feature                         correction
=====================  ==========================================  ==============================
stat_kurt              firstorder Kurtosis                         ``kurtosis - 3`` (excess)
morph_pca_maj_axis     shape MajorAxisLength                       ``x * sqrt(n / (n - 1))``
morph_pca_min_axis     shape MinorAxisLength                       ``x * sqrt(n / (n - 1))``
morph_pca_least_axis   shape LeastAxisLength                       ``x * sqrt(n / (n - 1))``
stat_energy            firstorder Energy                           needs ``voxelArrayShift: 0``
=====================  ==========================================  ==============================

pyradiomics normalises the covariance of the voxel positions by ``n`` (population),
IBSI by ``n - 1`` (sample); axis lengths are ``4 sqrt(eigenvalue)`` so they scale by
``sqrt(n / (n - 1))``; elongation and flatness (ratios) are unaffected.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np


def excess_kurtosis(kurtosis: float) -> float:
    """IBSI ``stat_kurt`` / ``ih_kurt`` (excess kurtosis) from the plain kurtosis m4/m2^2."""
    return kurtosis - 3.0


def sample_axis_length(axis_length: float, n: int) -> float:
    """PCA axis length with the covariance normalised by ``n - 1`` from one normalised by ``n``."""
    if n < 2:
        return float("nan")
    return axis_length * math.sqrt(n / (n - 1.0))


def covariance(points: np.ndarray) -> np.ndarray:
    """IBSI covariance of ``points`` (n, 3): normalised by ``n - 1``."""
    return np.cov(points, rowvar=False, ddof=1)


#: pyradiomics ``<class>_<feature>`` -> (IBSI code, correction(value, n_voxels)).
PYRADIOMICS_CORRECTIONS: dict[str, tuple[str, Callable[[float, int], float]]] = {
    "firstorder_Kurtosis": ("stat_kurt", lambda v, n: excess_kurtosis(v)),
    "shape_MajorAxisLength": ("morph_pca_maj_axis", sample_axis_length),
    "shape_MinorAxisLength": ("morph_pca_min_axis", sample_axis_length),
    "shape_LeastAxisLength": ("morph_pca_least_axis", sample_axis_length),
}


def correct_pyradiomics(name: str, value: float, n_voxels: int) -> float:
    """IBSI value of pyradiomics feature ``name`` (e.g. ``firstorder_Kurtosis``); unchanged if no rule."""
    rule = PYRADIOMICS_CORRECTIONS.get(name)
    return value if rule is None else rule[1](value, n_voxels)
