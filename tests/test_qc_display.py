"""Display windows per modality and the scale bar, against hand computation and the file's geometry."""

from __future__ import annotations

import json

import nibabel as nib
import pytest
import numpy as np
from PIL import Image

from biomarkers.qc import display
from biomarkers.qc.render import render_item


def test_ct_windows_are_level_width_in_hu():
    vol = np.zeros((4, 4, 4), np.int16)
    soft = display.window(vol, "CT")  # level 40, width 400: -160 .. 240 HU
    assert (soft.low, soft.high) == (-160.0, 240.0)
    g = soft.apply(np.array([-1000, -160, 40, 240, 3000]), 240)
    assert g.tolist() == [0, 0, 120, 239, 239]  # 40 HU: (40 + 160) / 400 * 239 = 119.5 -> 120
    assert (display.window(vol, "CT", "lung").low, display.window(vol, "CT", "lung").high) == (-1350.0, 150.0)
    custom = display.window(vol, "CT", (50, 100))
    assert (custom.low, custom.high) == (0.0, 100.0)


def test_pet_window_starts_at_suv_0():
    rng = np.random.default_rng(0)
    vol = rng.uniform(0, 10, (20, 20, 20)).astype(np.float32)
    w = display.window(vol, "PT")
    assert w.low == 0.0 and abs(w.high - np.percentile(vol[vol > 0], 99.5)) < 0.05
    assert display.window(vol, "PT", pet_max=6.0).high == 6.0


def test_mr_window_between_foreground_percentiles():
    vol = np.zeros((30, 30, 30), np.float32)
    vol[5:25, 5:25, 5:25] = np.linspace(100, 200, 20)[None, None, :]  # background 0 excluded
    w = display.window(vol, "MR", mr_percentiles=(0, 100))
    assert (w.low, w.high) == (100.0, 200.0)


def test_scale_bar_length_matches_the_geometry(shared_data, tmp_path):
    image = shared_data / "sts" / "nifti" / "STS_001" / "CT_image.nii.gz"
    img = nib.load(str(image))
    shape, zooms = img.shape, img.header.get_zooms()
    res = render_item({"image": str(image), "modality": "CT", "thumbs": str(tmp_path), "settings": {"size": 192},
                       "image_key": "img", "masks": []})
    info = json.loads((tmp_path / "img.json").read_text())
    assert info == json.loads(json.dumps(res["img"]))
    rgb = np.asarray(Image.open(tmp_path / "img_axial.png").convert("RGB")).astype(int)
    h, w = rgb.shape[:2]
    yellow = (rgb[..., 0] > 200) & (rgb[..., 1] > 180) & (rgb[..., 2] < 80)
    bottom = yellow[h - 10:]  # the bar is drawn just above the bottom edge
    bar_px = bottom.sum(axis=1).max()
    fov_x_mm = shape[0] * zooms[0]  # axial columns run along the stored i axis here (x, LPS)
    bar_mm = info["views"]["axial"]["scale_bar_mm"]
    assert bar_mm in (10, 20, 50, 100)
    assert abs(bar_px * fov_x_mm / w - bar_mm) <= 1.5 * fov_x_mm / w  # within about one pixel


def test_centre_effect_kruskal_wallis_equals_scipy():
    from scipy.stats import kruskal

    from biomarkers.qc.report import kruskal_columns

    rng = np.random.default_rng(1)
    X = rng.normal(size=(61, 6))
    X[:, 1] = np.round(X[:, 1])  # many ties
    X[:20, 2] += 1.0  # a centre effect
    X[:, 3] = 3.0  # constant: no test
    X[:, 5] = rng.integers(0, 3, 61)  # heavy ties
    g = np.array([0] * 20 + [1] * 21 + [2] * 20)
    got = kruskal_columns(X, g)
    for c in range(X.shape[1]):
        if c == 3:
            assert np.isnan(got[c])
            continue
        assert got[c] == pytest.approx(kruskal(*[X[g == k, c] for k in range(3)]).pvalue, rel=1e-9)
    assert got[2] < 0.01
