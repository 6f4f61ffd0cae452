"""Each IBSI feature pyradiomics lacks, on small cases computed by hand (or by a brute-force
definition written here, independent of the vectorised implementation)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from biomarkers.features.ibsi import IbsiSettings, compute
from biomarkers.features.ibsi.families import intensity, morphology, texture
from biomarkers.features.ibsi.families.morphology import _ellipsoid_area


# ------------------------------------------------------------------ statistics

def test_medad_cov_qcod_by_hand():
    x = np.array([1.0, 2, 3, 4, 10])
    f = intensity.statistics(x)
    assert f["stat_medad"] == pytest.approx((2 + 1 + 0 + 1 + 7) / 5)  # median 3
    assert f["stat_cov"] == pytest.approx(math.sqrt(10) / 4)  # population SD / mean
    assert f["stat_qcod"] == pytest.approx((4 - 2) / (4 + 2))
    assert f["stat_kurt"] == pytest.approx(np.mean((x - 4) ** 4) / 10**2 - 3)  # excess kurtosis


# ------------------------------------------------------------ intensity histogram

def test_intensity_histogram_by_hand():
    f = intensity.intensity_histogram(np.array([1, 1, 2, 4]))
    # H over levels 1..4 = [2, 1, 0, 1]; gradient [-1, -1, 0, 1]
    assert f["ih_mode"] == 1
    assert f["ih_entropy"] == pytest.approx(1.5)
    assert f["ih_uniformity"] == pytest.approx(0.25 + 0.0625 + 0.0625)
    assert f["ih_max_grad"] == 1 and f["ih_max_grad_g"] == 4
    assert f["ih_min_grad"] == -1 and f["ih_min_grad_g"] == 1
    assert f["ih_range"] == 3 and f["ih_median"] == 1.5


# ------------------------------------------------------------ intensity-volume histogram

def test_ivh_by_hand():
    v = np.array([1.0, 2, 3, 4])
    f = intensity.intensity_volume_histogram({"values": v, "grid": np.arange(1.0, 5), "min": 1.0, "max": 4.0})
    # nu(1..4) = [1, .75, .5, .25]; gamma = [0, 1/3, 2/3, 1]
    assert f["ivh_v10"] == pytest.approx(0.75)
    assert f["ivh_v90"] == pytest.approx(0.25)
    assert f["ivh_i90"] == 2
    assert f["ivh_auc"] == pytest.approx((1 + .75) / 2 / 3 + (.75 + .5) / 2 / 3 + (.5 + .25) / 2 / 3)
    v = np.array([1.0] * 9 + [2.0])
    f = intensity.intensity_volume_histogram({"values": v, "grid": np.array([1.0, 2.0]), "min": 1.0, "max": 2.0})
    assert f["ivh_i10"] == 2 and f["ivh_v10"] == pytest.approx(0.1)
    assert f["ivh_diff_v10_v90"] == pytest.approx(0.0)


# ------------------------------------------------------------ local intensity

def test_local_and_global_peak_by_hand():
    img = np.zeros((15, 15, 15))
    img[7, 7, 7] = 100.0
    img[7, 7, 8] = 50.0
    mask = np.zeros(img.shape, bool)
    mask[6:9, 6:9, 6:9] = True
    f = morphology.local_intensity(img, mask, (2.0, 2.0, 2.0))
    # sphere radius 6.20 mm at 2 mm spacing: offsets with a^2+b^2+c^2 <= 9 -> 123 voxels
    assert f["loc_peak_loc"] == pytest.approx(150.0 / 123)
    assert f["loc_peak_glob"] == pytest.approx(150.0 / 123)


# ------------------------------------------------------------ morphology

def test_single_voxel_mesh_asphericity_and_densities():
    mask = np.zeros((3, 3, 3), bool)
    mask[1, 1, 1] = True
    img = np.where(mask, 5.0, 0.0)
    f = morphology.morphology(img, mask, mask, (1.0, 1.0, 1.0))
    # marching cubes of one voxel: octahedron with vertices at +-0.5 on each axis
    vol, area = 4 / 3 * 0.5**3, 8 * math.sqrt(3) / 4 * 0.5
    assert f["morph_volume"] == pytest.approx(vol)
    assert f["morph_area_mesh"] == pytest.approx(area)
    assert f["morph_asphericity"] == pytest.approx((area**3 / (36 * math.pi * vol**2)) ** (1 / 3) - 1)
    assert f["morph_vol_dens_aabb"] == pytest.approx(vol / 1.0)
    assert f["morph_area_dens_aabb"] == pytest.approx(area / 6.0)
    assert f["morph_vol_dens_conv_hull"] == pytest.approx(1.0)
    assert f["morph_area_dens_conv_hull"] == pytest.approx(1.0)
    assert f["morph_integ_int"] == pytest.approx(5.0 * vol)
    assert f["morph_diam"] == pytest.approx(1.0)


def test_centre_of_mass_shift_by_hand():
    mask = np.zeros((3, 3, 4), bool)
    mask[1, 1, 1:3] = True
    img = np.zeros(mask.shape)
    img[1, 1, 1], img[1, 1, 2] = 1.0, 3.0
    f = morphology.morphology(img, mask, mask, (1.0, 1.0, 2.0))
    # geometric centre x = 3 mm; intensity-weighted (2*1 + 4*3)/4 = 3.5 mm
    assert f["morph_com"] == pytest.approx(0.5)


def test_aee_densities_by_hand():
    mask = np.zeros((4, 4, 4), bool)
    mask[1:3, 1:3, 1:3] = True
    f = morphology.morphology(np.where(mask, 1.0, 0), mask, mask, (1.0, 1.0, 1.0))
    var = 8 * 0.25 / 7  # sample variance of 0/1 coordinates (n - 1 normalisation)
    r = 2 * math.sqrt(var)  # semi-axes 2 sqrt(lambda)
    assert f["morph_pca_maj_axis"] == pytest.approx(4 * math.sqrt(var))
    assert f["morph_vol_dens_aee"] == pytest.approx(f["morph_volume"] / (4 / 3 * math.pi * r**3))
    assert f["morph_area_dens_aee"] == pytest.approx(f["morph_area_mesh"] / (4 * math.pi * r**2))


def test_ellipsoid_area_is_the_ibsi_series():
    """IBSI defines the AEE area by a Legendre series (20 terms); for a = 2, b = c = 1 the
    argument of P_nu is 1 (P_nu(1) = 1) and alpha*beta = 3/4. (The series is IBSI's definition,
    not the exact spheroid area; the reference values follow it.)"""
    series = sum(0.75**nu / (1 - 4 * nu**2) for nu in range(21))
    assert _ellipsoid_area(2.0, 1.0, 1.0) == pytest.approx(4 * math.pi * 2.0 * 1.0 * series)
    assert _ellipsoid_area(1.5, 1.5, 1.5) == pytest.approx(4 * math.pi * 1.5**2)  # sphere


def _brute_moran_geary(img, mask, spacing):
    pts = np.argwhere(mask) * np.asarray(spacing)
    x = img[mask]
    z = x - x.mean()
    n = len(x)
    num_i = num_c = w_sum = 0.0
    for a, b in itertools.permutations(range(n), 2):
        w = 1.0 / np.linalg.norm(pts[a] - pts[b])
        w_sum += w
        num_i += w * z[a] * z[b]
        num_c += w * (x[a] - x[b]) ** 2
    moran = n / w_sum * num_i / np.sum(z**2)
    geary = (n - 1) * num_c / (2 * w_sum * np.sum(z**2))
    return moran, geary


def test_moran_geary_two_voxels_by_hand():
    mask = np.zeros((3, 3, 4), bool)
    mask[1, 1, 1:3] = True
    img = np.where(mask, 0.0, 0.0)
    img[1, 1, 1], img[1, 1, 2] = 1.0, 3.0
    m, c = morphology._moran_geary(img, mask, (1.0, 1.0, 1.0))
    assert m == pytest.approx(-1.0)  # two values: perfectly dispersed
    assert c == pytest.approx(1.0)


def test_moran_geary_match_pairwise_definition():
    rng = np.random.default_rng(3)
    mask = rng.random((5, 6, 7)) > 0.4
    img = rng.normal(size=mask.shape) + np.arange(7)[None, None, :]
    m, c = morphology._moran_geary(img, mask, (3.0, 1.0, 0.5))
    mb, cb = _brute_moran_geary(img, mask, (3.0, 1.0, 0.5))
    # single-precision FFTs: agreement to ~1e-7 relative
    assert m == pytest.approx(mb, rel=1e-5)
    assert c == pytest.approx(cb, rel=1e-5)


# ------------------------------------------------------------ texture: GLDZM, NGLDM, aggregation

def _levels(slices):
    a = np.array(slices, dtype=np.int32)
    return np.pad(a, 1)


def _run(levels, families, aggregation):
    image = levels.astype(float)
    s = IbsiSettings(discretisation="none", bin_width=None, aggregation=aggregation, families=families)
    return compute(image, levels > 0, (1.0, 1.0, 1.0), s)


def test_gldzm_by_hand():
    lv = _levels([[[1, 1, 1], [1, 2, 1], [1, 1, 1]]])
    f = _run(lv, ("dzm",), ("2D",))
    # zones: level 1 ring (8 voxels) at distance 1; level 2 centre at distance 2
    assert f["dzm_sde_2D"] == pytest.approx((1 + 1 / 4) / 2)
    assert f["dzm_lde_2D"] == pytest.approx((1 + 4) / 2)
    assert f["dzm_zd_entr_2D"] == pytest.approx(1.0)
    assert f["dzm_z_perc_2D"] == pytest.approx(2 / 9)
    assert f["dzm_ldhge_2D"] == pytest.approx((1 * 1 + 4 * 4) / 2)


def test_ngldm_by_hand():
    lv = _levels([[[1, 1, 2]]])
    f = _run(lv, ("ngl",), ("3D",))
    # dependence counts: 2, 2, 1 -> P(1, 2) = 2, P(2, 1) = 1
    assert f["ngl_lde_3D"] == pytest.approx((2 / 4 + 1) / 3)
    assert f["ngl_hde_3D"] == pytest.approx((2 * 4 + 1) / 3)
    assert f["ngl_dc_energy_3D"] == pytest.approx(4 / 9 + 1 / 9)
    assert f["ngl_dcnu_3D"] == pytest.approx(5 / 3)
    assert f["ngl_dc_perc_3D"] == pytest.approx(1.0)
    assert f["ngl_hdhge_3D"] == pytest.approx((2 * 4 * 1 + 1 * 1 * 4) / 3)


def test_2d_25d_3d_aggregation_of_zone_sizes():
    lv = _levels([[[1, 1], [1, 1]], [[1, 2], [2, 1]]])
    f = _run(lv, ("szm",), ("2D", "2.5D", "3D"))
    # slice 0: one zone of 4; slice 1 (8-connected): two zones of 2
    assert f["szm_sze_2D"] == pytest.approx((1 / 16 + 1 / 4) / 2)
    assert f["szm_sze_2_5D"] == pytest.approx((1 / 16 + 1 / 4 + 1 / 4) / 3)
    # 3D (26-connected): level 1 zone of 6, level 2 zone of 2
    assert f["szm_sze_3D"] == pytest.approx((1 / 36 + 1 / 4) / 2)


def test_glcm_2d_averaged_vs_slice_merged():
    lv = _levels([[[1, 2]], [[1, 1]]])
    f = _run(lv, ("cm",), ("2D", "2.5D"))
    # only the x direction has pairs. slice 0: {(1,2),(2,1)}, slice 1: {(1,1),(1,1)}
    assert f["cm_contrast_2D_avg"] == pytest.approx((1 + 0) / 2)
    assert f["cm_contrast_2D_comb"] == pytest.approx((1 + 0) / 2)
    assert f["cm_contrast_2_5D_comb"] == pytest.approx(0.5)  # merged: half the pairs differ by 1
    assert f["cm_joint_max_2_5D_comb"] == pytest.approx(0.5)


def test_run_lengths_in_all_13_directions():
    lv = _levels([[[3, 3, 3]]])
    runs = {d: texture.runs(lv, d) for d in texture.DIRS_3D}
    assert sorted(runs[(0, 0, 1)][1].tolist()) == [3]
    assert sorted(runs[(1, 1, -1)][1].tolist()) == [1, 1, 1]
    assert sum(r[1].sum() for r in runs.values()) == 13 * 3  # every voxel in one run per direction


def test_ivh_without_discretisation_on_non_integer_data():
    from biomarkers.features.ibsi.processing import IbsiSettings, _ivh_values

    img = np.array([0.5, 1.25, 1.25, 2.0])[None, None, :]
    ivh = _ivh_values(img, np.ones(img.shape, bool), IbsiSettings(ivh_discretisation="none"))
    assert ivh["grid"].tolist() == [0.5, 1.25, 2.0]
    f = intensity.intensity_volume_histogram(ivh)
    # nu = [1, .75, .25] at gamma = [0, .5, 1]
    assert f["ivh_v10"] == pytest.approx(0.75) and f["ivh_v90"] == pytest.approx(0.25)
    assert f["ivh_i90"] == pytest.approx(1.25)
