"""Rotation pooling in closed form equals pooling every rotated kernel (the definition).

IBSI 2 rotation invariance pools a separable filter's responses over the 24 right-angle rotations
(3D) or the 4 in the axial plane (2D). :func:`~biomarkers.features.filters._ops.rotation_pool`
computes the mean from the mirrored passes' symmetric / antisymmetric parts (at most 2 n! separable
terms) and max / min from the rotations that differ in sign only. The expected maps here are the
definition computed the long way: every rotated chain applied to the image, then pooled voxel by
voxel. Every boundary mode, wavelets of odd and even length, multi-level chains, Laws kernels.
"""

from __future__ import annotations

import numpy as np
import pytest

from biomarkers.features.filters._ops import SeparableBank, pool, rotate_steps, rotation_pool, rotations
from biomarkers.features.filters.compute import laws_kernel, wavelet_filters

MODES = ["constant", "nearest", "wrap", "reflect"]  # scipy names of zero, nearest, periodic, mirror


def _wavelet_chain(name: str, subband: str, level: int):
    axes = (2, 1, 0)[: len(subband)]
    chain = []
    for lv in range(1, level + 1):
        f = wavelet_filters(name, lv)
        letters = subband if lv == level else "L" * len(subband)
        chain += [(a, f[c], False) for a, c in zip(axes, letters)]
    return chain


def _laws_chain(kernel: str):
    names = [kernel[i:i + 2] for i in range(0, len(kernel), 2)]
    return [(a, laws_kernel(k), False) for a, k in zip((2, 1, 0), names)]


CHAINS = {
    "db3 LLH": (_wavelet_chain("db3", "LLH", 1), 3),
    "db3 HHH level 2": (_wavelet_chain("db3", "HHH", 2), 3),
    "haar HLL level 2": (_wavelet_chain("haar", "HLL", 2), 3),
    "coif1 LHH": (_wavelet_chain("coif1", "LHH", 1), 3),
    "db2 LH (2D)": (_wavelet_chain("db2", "LH", 1), 2),
    "Laws L5E5E5": (_laws_chain("L5E5E5"), 3),
    "Laws E5L5S5": (_laws_chain("E5L5S5"), 3),
    "Laws W5R5S5": (_laws_chain("W5R5S5"), 3),
    "Laws L3E3 (2D)": (_laws_chain("L3E3"), 2),
}


def _by_definition(x, mode, chain, ndim, how):
    bank = SeparableBank(x, mode)
    return pool((bank.apply(rotate_steps(chain, r)) for r in rotations(ndim)), how)


@pytest.mark.parametrize("name", list(CHAINS))
@pytest.mark.parametrize("mode", MODES)
def test_rotation_pooling_equals_pooling_every_rotation(name, mode):
    chain, ndim = CHAINS[name]
    x = np.random.default_rng(7).normal(size=(11, 14, 13))
    assert len(rotations(ndim)) == (24 if ndim == 3 else 4)
    for how in ("mean", "max", "min"):
        want = _by_definition(x, mode, chain, ndim, how)
        got = rotation_pool(x, mode, [chain], ndim, how)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * max(1.0, np.abs(want).max()), err_msg=how)


def test_the_mean_of_an_odd_kernel_over_rotations_vanishes():
    """E3 is antisymmetric: every rotation has a mirrored partner of opposite sign, the mean is 0."""
    x = np.random.default_rng(1).normal(size=(9, 10, 11))
    assert np.abs(rotation_pool(x, "reflect", [_laws_chain("E3E3E3")], 3, "mean")).max() == 0.0
    assert np.abs(_by_definition(x, "reflect", _laws_chain("E3E3E3"), 3, "mean")).max() < 1e-14
