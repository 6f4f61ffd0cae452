"""IBSI 2 filters on small cases computed by hand (expected values from the definitions, not the code).

Also: settings validation, the ROI window (identical to the whole-image response for the spatial
filters), 2D filters staying inside their slice, and rotation invariance on a rotated phantom.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from biomarkers.errors import ConfigError
from biomarkers.features.filters import filter_entries, filter_spec, response_map


def _impulse(shape=(11, 11, 11), value=27.0):
    x = np.zeros(shape)
    c = tuple(n // 2 for n in shape)
    x[c] = value
    return x, c


def test_mean_filter_of_an_impulse_is_a_cube_of_value_over_m3():
    x, (z, y, xx) = _impulse()
    r = response_map(x, (2.0, 2.0, 2.0), filter_spec("mean", {"support": 3, "boundary": "constant"}))
    expected = np.zeros_like(x)
    expected[z - 1:z + 2, y - 1:y + 2, xx - 1:xx + 2] = 27.0 / 27.0  # every voxel of the 3^3 cube: 27 / 27
    np.testing.assert_allclose(r, expected, atol=1e-12)


def test_mean_filter_2d_stays_in_the_impulse_slice():
    x, (z, y, xx) = _impulse(value=9.0)
    r = response_map(x, (1, 1, 1), filter_spec("mean", {"support": 3, "boundary": "constant", "dimensions": "2D"}))
    expected = np.zeros_like(x)
    expected[z, y - 1:y + 2, xx - 1:xx + 2] = 1.0  # 9 / 3^2, only in slice z
    np.testing.assert_allclose(r, expected, atol=1e-12)


def test_mean_filter_boundaries_on_a_ramp():
    # 1D ramp 0..4 along x, support 3: hand values at the first voxel for each boundary
    x = np.tile(np.arange(5.0), (1, 1, 1)).reshape(1, 1, 5)
    x = np.repeat(np.repeat(x, 3, axis=0), 3, axis=1)
    first = {"constant": (0 + 0 + 1) / 3, "nearest": (0 + 0 + 1) / 3, "periodic": (4 + 0 + 1) / 3,
             "mirror": (0 + 0 + 1) / 3}
    last = {"constant": (3 + 4 + 0) / 3, "nearest": (3 + 4 + 4) / 3, "periodic": (3 + 4 + 0) / 3,
            "mirror": (3 + 4 + 4) / 3}
    for b in first:
        r = response_map(x, (1, 1, 1), filter_spec("mean", {"support": 3, "boundary": b, "dimensions": "2D"}))
        # 2D in (y, x): y is constant (3 rows of the same ramp), so only x matters
        assert r[1, 1, 0] == pytest.approx(first[b]), b
        assert r[1, 1, 4] == pytest.approx(last[b]), b


def test_log_of_a_gaussian_blob_is_the_laplacian_of_the_wider_gaussian():
    # blob exp(-r^2 / 2 s^2) convolved with LoG(sigma) = A (2 pi s^2)^(3/2) * Laplacian of the normalised
    # Gaussian of variance tau^2 = s^2 + sigma^2: (r^2 / tau^4 - 3 / tau^2) (2 pi tau^2)^(-3/2) exp(-r^2 / 2 tau^2)
    n, s, sigma = 41, 2.5, 2.0
    k = np.arange(n) - n // 2
    zz, yy, xx = np.meshgrid(k, k, k, indexing="ij")
    r2 = zz**2 + yy**2 + xx**2
    blob = np.exp(-r2 / (2 * s * s))
    r = response_map(blob, (1.0, 1.0, 1.0), filter_spec("log", {"sigma_mm": sigma, "truncation": 6.0,
                                                                "boundary": "constant"}))
    tau2 = s * s + sigma * sigma
    expected = (2 * math.pi * s * s) ** 1.5 * (r2 / tau2**2 - 3 / tau2) * (2 * math.pi * tau2) ** -1.5 \
        * np.exp(-r2 / (2 * tau2))
    c = n // 2
    assert r[c, c, c] == pytest.approx(-3 * (s * s / tau2) ** 1.5 / tau2, rel=2e-3)
    inner = np.s_[c - 8:c + 9, c - 8:c + 9, c - 8:c + 9]
    np.testing.assert_allclose(r[inner], expected[inner], atol=2e-3 * abs(expected[c, c, c]))


def test_log_sigma_is_in_mm():
    x, c = _impulse((1, 41, 41))
    a = response_map(x, (1.0, 1.0, 1.0), filter_spec("log", {"sigma_mm": 2.0, "dimensions": "2D",
                                                             "boundary": "constant"}))
    b = response_map(x, (1.0, 2.0, 2.0), filter_spec("log", {"sigma_mm": 4.0, "dimensions": "2D",
                                                             "boundary": "constant"}))
    np.testing.assert_allclose(a, b, atol=1e-12)  # 2 mm at 1 mm spacing = 4 mm at 2 mm spacing


def test_laws_kernel_is_the_outer_product_of_its_1d_kernels():
    x, (z, y, xx) = _impulse((1, 9, 9), value=1.0)
    r = response_map(x, (1, 1, 1), filter_spec("laws", {"kernel": "L5E5", "dimensions": "2D",
                                                        "boundary": "constant"}))
    l5 = np.array([1, 4, 6, 4, 1]) / math.sqrt(70)  # along x (first letter)
    e5 = np.array([-1, -2, 0, 2, 1]) / math.sqrt(10)  # along y
    # a convolution maps the impulse to the kernel itself: response(y0 + j, x0 + i) = E5[j] L5[i]
    expected = np.zeros((9, 9))
    expected[y - 2:y + 3, xx - 2:xx + 3] = np.outer(e5, l5)
    np.testing.assert_allclose(r[0], expected, atol=1e-12)


def test_laws_energy_is_the_local_mean_of_the_absolute_response():
    x, (z, y, xx) = _impulse((1, 21, 21), value=1.0)
    spec = {"kernel": "L3E3", "dimensions": "2D", "boundary": "constant"}
    plain = response_map(x, (1, 1, 1), filter_spec("laws", spec))
    energy = response_map(x, (1, 1, 1), filter_spec("laws", {**spec, "energy": True, "delta": 2}))
    # at the impulse the 5x5 window holds the whole 3x3 |kernel|: sum(|L3| outer |E3|) / 25
    l3, e3 = np.array([1, 2, 1]) / math.sqrt(6), np.array([1, 0, 1]) / math.sqrt(2)
    assert energy[0, y, xx] == pytest.approx(np.outer(e3, l3).sum() / 25)
    assert np.abs(plain).sum() == pytest.approx(np.outer(e3, l3).sum())


@pytest.mark.parametrize("wavelet", ["haar", "db2", "db3", "coif1"])
def test_undecimated_wavelet_reconstructs_the_image(wavelet):
    """Orthogonal filters satisfy |L|^2 + |H|^2 = 2: correlating each of the 8 sub-bands with its
    analysis filters and summing gives 2^3 times the image (periodic boundary)."""
    import itertools

    import pywt
    from scipy import ndimage

    x = np.random.default_rng(1).normal(size=(9, 10, 12))
    w = pywt.Wavelet(wavelet)
    taps = {"L": np.asarray(w.dec_lo), "H": np.asarray(w.dec_hi)}
    total = np.zeros_like(x)
    for sb in map("".join, itertools.product("LH", repeat=3)):
        r = response_map(x, (1, 1, 1), filter_spec("wavelet", {"wavelet": wavelet, "subband": sb,
                                                               "boundary": "periodic"}))
        for letter, axis in zip(sb, (2, 1, 0)):  # x, y, z
            r = ndimage.correlate1d(r, taps[letter], axis=axis, mode="wrap")
        total += r
    np.testing.assert_allclose(total / 8, x, atol=1e-10)


def test_haar_subbands_sum_to_the_scaled_image():
    x = np.random.default_rng(2).normal(size=(6, 7, 8))
    total = sum(response_map(x, (1, 1, 1), filter_spec("wavelet", {"wavelet": "haar", "subband": sb,
                                                                   "boundary": "mirror"}))
                for sb in ("LLL", "LLH", "LHL", "LHH", "HLL", "HLH", "HHL", "HHH"))
    # Haar: low + high = [0, sqrt 2] per axis, so the 8 sub-bands add up to 2^(3/2) x
    np.testing.assert_allclose(total, 2**1.5 * x, atol=1e-12)


def test_simoncelli_bands_are_zero_mean():
    x = np.random.default_rng(3).normal(size=(16, 16, 16)) + 100.0
    r = response_map(x, (1, 1, 1), filter_spec("simoncelli", {"level": 1, "boundary": "periodic"}))
    assert abs(r.mean()) < 1e-6  # a band-pass filter removes the constant 100 (single-precision FFT)
    assert r.std() > 0.1


@pytest.fixture(scope="module")
def noise(shared_data):
    from biomarkers.features.filters.check import phantom

    img, _sp = phantom("noise", shared_data)
    return img[:20, 5:21, 30:42].copy()  # IBSI 2 noise phantom: small, asymmetric, not cubic (20 x 16 x 12)


ROT_INVARIANT = [
    ("laws", {"kernel": "E5L5S5", "rotation_invariant": True, "pooling": "max", "boundary": "mirror"}),
    ("laws", {"kernel": "E3W5R5", "rotation_invariant": True, "pooling": "max", "energy": True, "delta": 2,
              "boundary": "nearest"}),
    ("wavelet", {"wavelet": "db2", "subband": "LHH", "rotation_invariant": True, "boundary": "constant"}),
    ("wavelet", {"wavelet": "haar", "subband": "HHL", "level": 2, "rotation_invariant": True,
                 "boundary": "mirror"}),
    ("gabor", {"sigma_mm": 2.0, "lambda_mm": 3.0, "gamma": 0.7, "rotation_invariant": True,
               "theta_step_deg": 45.0, "boundary": "mirror"}),
    ("log", {"sigma_mm": 1.5, "boundary": "mirror"}),
    ("mean", {"support": 3, "boundary": "periodic"}),
]


@pytest.mark.parametrize("filt,settings", ROT_INVARIANT, ids=[f"{f}-{i}" for i, (f, _) in enumerate(ROT_INVARIANT)])
def test_rotation_invariant_filters_commute_with_rotating_the_phantom(noise, filt, settings):
    spec = filter_spec(filt, settings)
    rel = 1e-5 if filt == "gabor" else 1e-9  # Gabor: single-precision FFT
    for axes in ((1, 2), (0, 2), (0, 1)):
        rot = np.rot90(noise, 1, axes=axes)
        a = np.rot90(response_map(noise, (1, 1, 1), spec), 1, axes=axes)
        b = response_map(np.ascontiguousarray(rot), (1, 1, 1), spec)
        np.testing.assert_allclose(a, b, atol=rel * max(1.0, np.abs(a).max()), err_msg=str(axes))


def test_a_directional_filter_is_not_rotation_invariant(noise):
    """The same check fails without pooling (so the test above can fail)."""
    spec = filter_spec("laws", {"kernel": "E5L5S5", "boundary": "mirror"})
    rot = np.rot90(noise, 1, axes=(1, 2))
    a = np.rot90(response_map(noise, (1, 1, 1), spec), 1, axes=(1, 2))
    b = response_map(np.ascontiguousarray(rot), (1, 1, 1), spec)
    assert np.abs(a - b).max() > 1.0


@pytest.mark.parametrize("filt,settings", [
    ("laws", {"kernel": "L5E5E5", "rotation_invariant": True, "energy": True, "delta": 3}),
    ("wavelet", {"wavelet": "db3", "subband": "HHH", "level": 2, "rotation_invariant": True}),
    ("gabor", {"sigma_mm": 3.0, "lambda_mm": 2.0, "gamma": 1.5, "rotation_invariant": True, "theta_step_deg": 45}),
    *[("gabor", {"sigma_mm": 2.0, "lambda_mm": 3.0, "gamma": 0.7, "theta_deg": 30, "boundary": b,
                 "response": r}) for b, r in (("constant", "modulus"), ("nearest", "real"), ("periodic", "imaginary"))],
    ("wavelet", {"wavelet": "coif1", "subband": "LLH", "rotation_invariant": True, "boundary": "constant"}),
    ("laws", {"kernel": "E5L5S5", "rotation_invariant": True, "pooling": "mean", "boundary": "periodic"}),
    ("log", {"sigma_mm": 2.0, "dimensions": "2D"}),
    ("mean", {"support": 5, "boundary": "nearest"}),
    ("simoncelli", {"level": 2, "boundary": "periodic"}),  # whole image; only the ROI's box inverted
    ("simoncelli", {"level": 1, "boundary": "periodic", "dimensions": "2D"}),
])
def test_roi_window_equals_the_whole_image_response(filt, settings):
    rng = np.random.default_rng(4)
    img = rng.normal(size=(30, 40, 36))
    roi = np.zeros(img.shape, bool)
    roi[2:9, 15:25, 28:36] = True  # touches the x border: the boundary rule applies there
    spec = filter_spec(filt, settings)
    whole = response_map(img, (1.5, 1.0, 1.0), spec)
    vals, sl = response_map(img, (1.5, 1.0, 1.0), spec, roi=roi)
    np.testing.assert_allclose(vals, whole[sl], atol=1e-5 if filt in ("gabor", "simoncelli") else 1e-10)


def test_shared_spectra_give_the_same_fourier_responses():
    """Simoncelli levels 1 and 2 reuse one FFT of the image when the caller passes a spectra dict."""
    img = np.random.default_rng(5).normal(size=(21, 24, 19))
    roi = np.zeros(img.shape, bool)
    roi[5:12, 3:20, 4:9] = True
    spectra: dict = {}
    for level in (1, 2):
        spec = filter_spec("simoncelli", {"level": level, "boundary": "periodic"})
        alone, sl = response_map(img, (1, 1, 1), spec, roi=roi)
        shared, sl2 = response_map(img, (1, 1, 1), spec, roi=roi, spectra=spectra)
        assert sl == sl2
        np.testing.assert_array_equal(shared, alone)
    assert len(spectra) == 1  # one image, one spectrum


@pytest.mark.parametrize("filt,settings,msg", [
    ("mean", {"support": 4}, "odd"),
    ("laws", {"kernel": "L5X5E5"}, "Laws"),
    ("laws", {"kernel": "L5E5"}, "3D needs 3"),
    ("wavelet", {"wavelet": "nope", "subband": "LLH"}, "PyWavelets"),
    ("wavelet", {"wavelet": "db2", "subband": "LL"}, "3 letters"),
    ("gabor", {"sigma_mm": 1, "lambda_mm": 1, "gamma": 1, "rotation_invariant": True}, "theta_step_deg"),
    ("log", {"sigma_mm": 1, "boundary": "reflect"}, "boundary"),
    ("log", {"sigma_mm": 1, "sigma": 2}, "sigma"),
    ("unknown", {}, "unknown filter"),
])
def test_bad_settings_are_refused_naming_the_key(filt, settings, msg):
    with pytest.raises(ConfigError, match=msg):
        filter_spec(filt, settings, source="params.yaml: ibsi.filters[0]")


def test_filter_entries_refuse_duplicate_ids_and_bad_families():
    ok = {"id": "log1", "filter": "log", "settings": {"sigma_mm": 1.0}}
    assert filter_entries([ok])[0].spec.sigma_mm == 1.0
    with pytest.raises(ConfigError, match="duplicate"):
        filter_entries([ok, ok])
    with pytest.raises(ConfigError, match="not defined on a response map"):
        filter_entries([{**ok, "families": ["morph"]}])
    with pytest.raises(ConfigError, match="id"):
        filter_entries([{**ok, "id": "has_underscore"}])
    with pytest.raises(ConfigError, match="sigma_mm"):
        filter_entries([{**ok, "settings": {}}])


@pytest.mark.parametrize("order,mode", [(3, "nearest"), (1, "nearest"), (1, "constant"), (0, "nearest")])
def test_separable_grid_sampling_equals_map_coordinates(order, mode):
    """The IBSI processing's one-axis-at-a-time B-spline evaluation (used to resample before
    filtering) gives scipy's map_coordinates values, also outside and at the image border."""
    from scipy import ndimage

    from biomarkers.features.ibsi.processing import sample_grid

    img = np.random.default_rng(5).normal(size=(7, 9, 8)) * 100
    axes = [np.linspace(-0.6, 6.7, 11), np.linspace(-0.2, 8.3, 5), np.array([-0.5, 0.0, 3.25, 7.0, 7.4])]
    ref = ndimage.map_coordinates(img, np.meshgrid(*axes, indexing="ij"), order=order, mode=mode, cval=0.0,
                                  prefilter=order > 1)
    np.testing.assert_allclose(sample_grid(img, axes, order, mode), ref, atol=1e-9)


@pytest.mark.parametrize("order,mode", [(3, "nearest"), (1, "constant")])
def test_separable_grid_sampling_of_long_axes_equals_map_coordinates(order, mode):
    """Axes of more output samples than one block of the banded products (48 rows), on every axis,
    with whole blocks outside the image (mode constant: zero rows)."""
    from scipy import ndimage

    from biomarkers.features.ibsi.processing import sample_grid

    img = np.random.default_rng(9).normal(size=(30, 26, 40)) * 100
    axes = [np.linspace(-60.0, 35.0, 150), np.linspace(-0.4, 25.2, 97), np.linspace(3.1, 39.6, 61)]
    ref = ndimage.map_coordinates(img, np.meshgrid(*axes, indexing="ij"), order=order, mode=mode, cval=0.0,
                                  prefilter=order > 1)
    np.testing.assert_allclose(sample_grid(img, axes, order, mode), ref, atol=1e-9)


def test_texture_families_of_a_response_map_are_the_ibsi1_families_of_that_map():
    """``families:`` beyond stat run the IBSI 1 code on the response map (grey levels by the entry's
    discretisation, the ROI's own intensity range): for the unfiltered image they equal IBSI 1 mode."""
    from biomarkers.features.filters.features import filter_values
    from biomarkers.features.ibsi import compute
    from biomarkers.features.ibsi.processing import IbsiSettings

    rng = np.random.default_rng(6)
    img = np.round(rng.normal(size=(12, 20, 20)) * 40 + 100)
    roi = np.zeros(img.shape, bool)
    roi[3:9, 5:14, 4:15] = True
    fams = ["stat", "ih", "cm", "szm", "ngt"]
    entries = filter_entries([{"id": "none", "filter": "none", "families": fams,
                               "discretisation": {"method": "fbn", "bin_count": 16}}])
    got = filter_values(img, roi, (2.0, 1.0, 1.0), IbsiSettings(), entries)["none"]
    ref = compute(img, roi, (2.0, 1.0, 1.0), IbsiSettings(discretisation="fbn", bin_width=None, bin_count=16,
                                                          families=tuple(fams)))
    assert set(got) == set(ref) and len(ref) > 100
    for tag, v in ref.items():
        assert got[tag] == pytest.approx(v, rel=1e-9, abs=1e-12), tag


@pytest.mark.parametrize("spacing,interpolation", [((1.0, 1.0, 1.0), "linear"), ((1.0, 1.0, 1.0), "cubic"),
                                                   (None, "linear")])
def test_the_processed_window_gives_the_whole_image_values(spacing, interpolation):
    """filter_values resamples and filters only a window around the ROI; the values must be those
    of resampling the whole image and filtering it (the definition): a window too small by a few
    mm changes them (the resampled ROI grows, the kernels read farther than the ROI's box)."""
    from biomarkers.features.filters.features import filter_values, process, response_values
    from biomarkers.features.ibsi.processing import IbsiSettings

    rng = np.random.default_rng(8)
    img = np.round(rng.normal(size=(30, 70, 80)) * 50 + 40)
    roi = np.zeros(img.shape, bool)
    roi[12:17, 30:38, 66:80] = True  # touches the x border
    roi[14, 29, 65] = True
    entries = filter_entries([
        {"id": "log", "filter": "log", "settings": {"sigma_mm": 1.0, "truncation": 3, "boundary": "mirror"}},
        {"id": "mean", "filter": "mean", "settings": {"support": 3, "boundary": "nearest"}},
        {"id": "wav", "filter": "wavelet", "settings": {"wavelet": "haar", "subband": "HLH", "boundary": "constant"}},
    ])
    settings = IbsiSettings(spacing=spacing, interpolation=interpolation, round_intensities=True)
    sp = (2.2, 0.75, 0.8)
    got = filter_values(img, roi, sp, settings, entries)
    whole = process(img, roi, sp, settings, None)
    for e in entries:
        want = response_values(whole, e, settings)
        assert set(got[e.id]) == set(want)
        for tag, v in want.items():
            assert got[e.id][tag] == pytest.approx(v, rel=1e-9, abs=1e-9), (e.id, tag)
