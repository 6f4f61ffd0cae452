"""IBSI image processing steps on hand-computed cases, the settings model, the comparison
function and the extraction hook."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from biomarkers.errors import ConfigError, InputError
from biomarkers.features.ibsi import extract_ibsi, settings_from_params
from biomarkers.features.ibsi.corrections import correct_pyradiomics, excess_kurtosis, sample_axis_length
from biomarkers.features.ibsi.processing import (
    IbsiSettings, discretise, grid_positions, prepare, resample, resegment)
from biomarkers.features.ibsi.reference import compare, summarise


def test_grid_is_centre_aligned():
    pos = grid_positions(4, 1.0, 2.0)  # 4 voxels of 1 mm -> 2 voxels of 2 mm
    assert pos.tolist() == [0.5, 2.5]
    pos = grid_positions(5, 1.0, 2.0)  # ceil(2.5) = 3 voxels, centre stays at index 2
    assert pos.tolist() == [0.0, 2.0, 4.0]
    pos = grid_positions(60, 3.0, 2.0)
    assert len(pos) == 90 and pos.mean() == pytest.approx(29.5)


def test_resample_linear_and_mask_threshold():
    img = np.arange(4.0)[None, None, :].repeat(2, 0).repeat(2, 1)
    mask = np.zeros(img.shape)
    mask[..., 2:] = 1
    out, m, sp = resample(img, mask, (1.0, 1.0, 1.0), (1.0, 1.0, 2.0), "linear", round_intensities=False)
    assert out[0, 0].tolist() == [0.5, 2.5]
    assert m[0, 0].tolist() == [False, True]  # mask values 0 and 1 at positions 0.5, 2.5
    assert sp == (1.0, 1.0, 2.0)
    # half-way voxels (interpolated value exactly 0.5) are inside
    mask2 = np.zeros(img.shape)
    mask2[..., 1] = 1
    _, m2, _ = resample(img, mask2, (1.0, 1.0, 1.0), (1.0, 1.0, 2.0))
    assert m2[0, 0].tolist() == [True, False]


def test_resegmentation_range_then_outliers():
    img = np.array([-1200.0, -100, 0, 10, 20, 30, 500])[None, None, :]
    mask = np.ones(img.shape, bool)
    assert resegment(img, mask, (-1000, 400)).sum() == 5
    vals = img[0, 0, 1:6]
    mu, sd = vals.mean(), vals.std()
    keep = resegment(img, mask, (-1000, 400), outlier_sd=1.0)[0, 0]
    assert keep.tolist() == [False] + [bool(abs(v - mu) <= sd) for v in vals] + [False]


def test_fixed_bin_size_starts_at_lower_bound():
    img = np.array([-500.0, -476, -475, 0, 399])[None, None, :]
    m = np.ones(img.shape, bool)
    lv, ng = discretise(img, m, "fbs", bin_width=25, low=-500)
    assert lv[0, 0].tolist() == [1, 1, 2, 21, 36]
    lv, ng = discretise(img + 30, m, "fbs", bin_width=25)  # no range: ROI minimum
    assert lv[0, 0].tolist()[0] == 1


def test_fixed_bin_number():
    img = np.array([0.0, 4.9, 5.0, 10.0])[None, None, :]
    lv, ng = discretise(img, np.ones(img.shape, bool), "fbn", bin_count=2)
    assert lv[0, 0].tolist() == [1, 1, 2, 2] and ng == 2


def test_masks_kept_apart():
    img = np.zeros((5, 5, 5))
    img[2, 2, 2] = 1000.0
    mask = np.zeros(img.shape, bool)
    mask[1:4, 1:4, 1:4] = True
    s = IbsiSettings(reseg_range=(-500, 400), bin_width=25)
    p = prepare(img, mask, (1.0, 1.0, 1.0), s)
    assert p.morph_mask.sum() == 27 and p.int_mask.sum() == 26


def test_empty_masks_are_clear_errors():
    img = np.zeros((4, 4, 4))
    with pytest.raises(InputError, match="empty"):
        prepare(img, np.zeros(img.shape, bool), (1.0, 1.0, 1.0), IbsiSettings())
    mask = np.ones(img.shape, bool)
    with pytest.raises(InputError, match="resegmentation"):
        prepare(img, mask, (1.0, 1.0, 1.0), IbsiSettings(reseg_range=(10, 20)))


def test_settings_validation_names_key():
    with pytest.raises(ConfigError, match="binwidth"):
        settings_from_params({"ibsi": {"binwidth": 25}})
    with pytest.raises(ConfigError, match="bin_count"):
        settings_from_params({"ibsi": {"discretisation": "fbn"}})


def test_corrections():
    assert excess_kurtosis(3.0) == 0.0
    assert sample_axis_length(4.0, 5) == pytest.approx(4.0 * (5 / 4) ** 0.5)
    assert correct_pyradiomics("firstorder_Kurtosis", 5.0, 10) == 2.0
    assert correct_pyradiomics("firstorder_Mean", 5.0, 10) == 5.0


def test_compare_statuses(tmp_path):
    ref = pd.DataFrame({"dataset": ["x"] * 4, "family": ["F"] * 4, "feature": list("abcd"), "consensus": [""] * 4,
                        "reference value": [1.0, 2.0, 0.0397, None], "tolerance": [0.1, 0.1, 0.0, None],
                        "your result": [None] * 4, "difference": [None] * 4, "check": [None] * 4,
                        "tag": ["t_a", "t_b", "t_c", "t_d"]})
    ref.to_csv(tmp_path / "ibsi_1_reference_values_config_A.csv", index=False)
    df = compare({"t_a": 1.05, "t_b": 2.5, "t_d": 1.0}, "config_A", reference_dir=tmp_path)
    assert df.status.tolist() == ["pass", "fail", "missing", "no reference"]
    # tolerance 0: agreement to the 3 printed significant digits
    df = compare({"t_c": 0.03974}, "config_A", reference_dir=tmp_path)
    assert df.set_index("tag").loc["t_c", "status"] == "pass"
    df = compare({"t_c": 0.03976}, "config_A", reference_dir=tmp_path)
    assert df.set_index("tag").loc["t_c", "status"] == "fail"
    assert summarise(df).loc["total", "missing"] == 2


def test_extract_ibsi_hook_rows(shared_data):
    d = shared_data / "ibsi1_digital_phantom"
    image = sitk.ReadImage(str(d / "image.nii.gz"))
    mask = sitk.ReadImage(str(d / "mask.nii.gz"))
    params = {"setting": {"label": 1},
              "ibsi": {"discretisation": "none", "bin_width": None, "aggregation": ["3D"],
                       "families": ["morph", "stat", "ngl"]}}
    rows = extract_ibsi(image, mask, params)
    by = {r["ibsi_code"]: r for r in rows}
    assert set(rows[0]) == {"image_type", "feature_class", "feature", "ibsi_code", "value"}
    assert by["stat_kurt"]["feature_class"] == "ibsistat" and by["stat_kurt"]["feature"] == "kurt"
    assert by["stat_kurt"]["value"] == pytest.approx(-0.355, abs=5e-4)  # IBSI reference
    assert by["morph_vol_approx"]["value"] == pytest.approx(592.0)
    assert by["ngl_dc_energy_3D"]["value"] == pytest.approx(0.0533, abs=5e-5)
    assert not any(r["ibsi_code"].startswith("cm_") for r in rows)


def test_prepare_sitk_geometry_matches_simpleitk_resampling(shared_data):
    """The prepared image sits where SimpleITK's own (linear) resampling puts the original."""
    from biomarkers.features.ibsi import prepare_sitk

    d = shared_data / "ibsi1_ct_phantom" / "nifti"
    image = sitk.ReadImage(str(d / "image" / "phantom.nii.gz"))
    mask = sitk.ReadImage(str(d / "mask" / "mask.nii.gz"))
    params = {"ibsi": {"spacing": [2.0, 2.0, 2.0], "interpolation": "linear", "round_intensities": True}}
    img, int_mask, morph_mask = prepare_sitk(image, mask, params)
    assert img.GetSpacing() == (2.0, 2.0, 2.0)
    ref = sitk.GetArrayFromImage(sitk.Resample(image, img, sitk.Transform(), sitk.sitkLinear, -2000.0))
    roi = sitk.GetArrayFromImage(morph_mask) > 0
    assert roi.sum() == 45985  # IBSI configuration C-E reference morphological voxel count
    assert np.abs(ref[roi] - sitk.GetArrayFromImage(img)[roi]).max() <= 0.5 + 1e-6  # rounding only


@pytest.mark.parametrize("new_spacing", [(1.0, 1.0, 1.0), (3.0, 0.6, 1.7)])
@pytest.mark.parametrize("where", ["interior", "corner", "slab"])
def test_resampled_mask_equals_interpolating_the_whole_mask(new_spacing, where):
    """resample() interpolates the mask around its bounding box only; the mask must be scipy's
    linear map_coordinates (mode constant) of the whole mask on the whole grid, voxel by voxel
    (also where the mask touches the image border and at partial-volume values near the threshold)."""
    from scipy import ndimage

    rng = np.random.default_rng(11)
    shape, spacing = (13, 17, 19), (2.0, 0.8, 1.1)
    mask = np.zeros(shape)
    box = {"interior": np.s_[4:8, 5:11, 6:13], "corner": np.s_[:3, 12:, :4], "slab": np.s_[6:9, :, :]}[where]
    mask[box] = rng.random(mask[box].shape) < 0.7
    img = rng.normal(size=shape)
    axes = [grid_positions(n, s, sn) for n, s, sn in zip(shape, spacing, new_spacing)]
    want = ndimage.map_coordinates(mask, np.meshgrid(*axes, indexing="ij"), order=1, mode="constant", cval=0.0)
    for threshold in (0.5, 0.2, 0.9):
        _, got, _ = resample(img, mask, spacing, new_spacing, "linear", mask_threshold=threshold)
        assert got.shape == want.shape
        np.testing.assert_array_equal(got, want >= threshold - 1e-6, err_msg=f"threshold {threshold}")
