"""Response maps of the IBSI 2 filters (pure functions of numpy arrays).

``response(image, spacing, spec)``: ``image`` (z, y, x), ``spacing`` (dz, dy, dx) in mm,
``spec`` one of :mod:`biomarkers.features.filters.settings` -> float64 response map of the
same shape. Definitions follow the IBSI 2 reference manual (arXiv:2006.05470) and are checked
voxel by voxel against the 33 IBSI 2 reference response maps
(:mod:`biomarkers.features.filters.check`):

* mean: box of ``support`` voxels per filter axis;
* LoG: ``sum_a g''(k_a) prod_{b != a} g(k_b)`` with the sampled 1D Gaussian
  ``g(k) = exp(-k^2 / 2 s^2) / (sqrt(2 pi) s)`` and ``g''(k) = (k^2/s^4 - 1/s^2) g(k)``, in voxel
  units per axis (``s = sigma_mm / spacing``), radius ``ceil(truncation * s)``;
* Laws: the 1D kernels (unit L2 norm) convolved along x, y, z; rotation invariance pools over the
  24 (3D) / 4 (2D) right-angle rotations; energy: mean of ``|response|`` over ``2 delta + 1`` voxels;
* Gabor: ``exp(-(a^2 + gamma^2 b^2) / 2 sigma^2) exp(2 pi i a / lambda)`` with
  ``a = x cos(theta) + y sin(theta)``, ``b = -x sin(theta) + y cos(theta)`` (mm), not normalised,
  convolved in the plane by FFT on the boundary-extended image;
* separable wavelets: undecimated (a trous) PyWavelets decomposition filters, level ``l`` filters
  upsampled by ``2^(l-1)`` (zeros after each tap), lower levels low-pass;
* Simoncelli: ``cos(pi/2 log2(2 |nu| / nu_max))`` for ``nu_max/4 <= |nu| <= nu_max``,
  ``nu_max = 2^(1-level)`` (1 = Nyquist), on the centred frequency grid; periodic by construction,
  other boundaries by extending the image by half its size before the FFT;
* Riesz (optional, no IBSI consensus): ``(-i)^L sqrt(L!/prod l_a!) prod nu_a^l_a / |nu|^L`` applied to
  the LoG or Simoncelli response in the Fourier domain.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from scipy import ndimage
from scipy import fft as sfft

from . import settings as S
from ._ops import (NDIMAGE_MODE, SeparableBank, Step, extended_box, filter_axes, fourier_filter, pool,
                   pool_weighted, rotate_steps, rotation_pool, rotations)


# -- kernels ------------------------------------------------------------------------------

@lru_cache(maxsize=None)
def laws_kernel(name: str) -> tuple[float, ...]:
    """IBSI 1D Laws kernel ``name`` (e.g. ``E5``) with unit L2 norm."""
    k = np.asarray(S.LAWS_1D[name], dtype=np.float64)
    return tuple(k / np.linalg.norm(k))


def _gauss_1d(s: float, truncation: float) -> tuple[tuple[float, ...], tuple[float, ...]]:
    r = int(math.ceil(truncation * s - 1e-9))
    k = np.arange(-r, r + 1, dtype=np.float64)
    g0 = np.exp(-(k**2) / (2 * s * s)) / (math.sqrt(2 * math.pi) * s)
    g2 = (k**2 / s**4 - 1.0 / s**2) * g0
    return tuple(g0), tuple(g2)


@lru_cache(maxsize=None)
def wavelet_filters(name: str, level: int) -> dict[str, tuple[float, ...]]:
    """Decomposition low/high-pass filters of ``name`` upsampled for ``level`` (a trous)."""
    import pywt

    w = pywt.Wavelet(name)
    f = 2 ** (level - 1)
    out = {}
    for letter, taps in (("L", w.dec_lo), ("H", w.dec_hi)):
        k = np.zeros(len(taps) * f)
        k[::f] = taps
        out[letter] = tuple(k)
    return out


def gabor_kernel(spacing2: tuple[float, float], sigma: float, lam: float, gamma: float, theta: float,
                 truncation: float) -> np.ndarray:
    """Complex 2D Gabor kernel on a plane with ``spacing2`` = (row axis, column axis) in mm.

    Columns are the plane's first axis (x of the axial plane), rows the second (y); ``theta``
    in radians. The kernel extends to ``truncation * sigma * max(1, 1/gamma)`` mm.
    """
    radius_mm = truncation * sigma * max(1.0, 1.0 / gamma)  # = gabor_radius_mm of the settings
    rr = int(math.ceil(radius_mm / spacing2[0] - 1e-9))
    rc = int(math.ceil(radius_mm / spacing2[1] - 1e-9))
    y = np.arange(-rr, rr + 1, dtype=np.float64)[:, None] * spacing2[0]
    x = np.arange(-rc, rc + 1, dtype=np.float64)[None, :] * spacing2[1]
    a = x * math.cos(theta) + y * math.sin(theta)
    b = -x * math.sin(theta) + y * math.cos(theta)
    return np.exp(-(a**2 + gamma**2 * b**2) / (2 * sigma**2)) * np.exp(2j * math.pi * a / lam)


# -- margins (voxels a response at a voxel depends on, per array axis) ----------------------

def margin(spec, spacing, shape) -> tuple[int, int, int]:
    """Half-width (voxels, per array axis) of the region a response voxel depends on.

    For the Fourier-domain filters (Simoncelli, Riesz) this is the extension used before the
    FFT: half the image size for the whole image, or ``fourier_margin`` around an ROI.
    """
    axes = filter_axes(spec.ndim)
    m = [0, 0, 0]
    f = spec.filter
    for a in axes:
        if f == "mean":
            m[a] = spec.support // 2
        elif f == "log":
            m[a] = len(_gauss_1d(spec.sigma_mm / spacing[a], spec.truncation)[0]) // 2
        elif f == "laws":
            m[a] = max(len(laws_kernel(k)) for k in spec.kernels_1d) // 2 + (spec.delta if spec.energy else 0)
        elif f == "wavelet":  # one pass reaches len/2 voxels each side (+1 when mirrored: even lengths)
            m[a] = sum(len(wavelet_filters(spec.wavelet, lv)["L"]) // 2 + 1 for lv in range(1, spec.level + 1))
        elif f == "gabor":
            m[a] = int(math.ceil(gabor_radius_mm(spec) / spacing[a] - 1e-9))
    if f == "gabor" and spec.planes3d:
        m[0] = int(math.ceil(gabor_radius_mm(spec) / spacing[0] - 1e-9))
    if _fourier(spec):  # ROI regions: the decay length of the Fourier-domain filter
        scale = 2 ** (spec.level - 1) if spec.filter == "simoncelli" else 1
        for a in axes:
            m[a] += 16 * scale
    return tuple(m)


def _fourier(spec) -> bool:
    return spec.filter == "simoncelli" or getattr(spec, "riesz", None) is not None


def fourier_margin(spec, n: int) -> int:
    """Boundary extension (voxels) before a Fourier-domain filter on an axis of ``n`` voxels.

    Periodic boundaries need none (the FFT is periodic); otherwise half the axis (the IBSI 2
    Riesz reference maps need it to within 0.1%).
    """
    return 0 if spec.boundary == "periodic" else n // 2


# -- filters -------------------------------------------------------------------------------

def _bank_pool(image, spec, chains: list[list[Step]], invariant: bool, how: str) -> np.ndarray:
    bank = SeparableBank(image, NDIMAGE_MODE[spec.boundary])
    if not invariant:
        return pool((bank.apply(c) for c in chains), "mean")
    return rotation_pool(image, NDIMAGE_MODE[spec.boundary], chains, spec.ndim, how)


def mean_filter(image, spacing, spec: S.MeanFilter) -> np.ndarray:
    size = [1, 1, 1]
    for a in filter_axes(spec.ndim):
        size[a] = spec.support
    return ndimage.uniform_filter(np.asarray(image, np.float64), size, mode=NDIMAGE_MODE[spec.boundary])


def log_filter(image, spacing, spec: S.LoGFilter) -> np.ndarray:
    axes = filter_axes(spec.ndim)
    g = {a: _gauss_1d(spec.sigma_mm / spacing[a], spec.truncation) for a in axes}
    bank = SeparableBank(image, NDIMAGE_MODE[spec.boundary])
    chains = [[(b, g[b][1] if b == a else g[b][0], False) for b in axes] for a in axes]
    return pool(bank.apply_all(chains), "mean") * len(axes)  # the sum of the second derivatives


def laws_filter(image, spacing, spec: S.LawsFilter) -> np.ndarray:
    axes = filter_axes(spec.ndim)
    chain = [(a, laws_kernel(k), False) for a, k in zip(axes, spec.kernels_1d)]
    out = _bank_pool(image, spec, [chain], spec.rotation_invariant, spec.pooling)
    if spec.energy:
        size = [1, 1, 1]
        for a in axes:
            size[a] = 2 * spec.delta + 1
        out = ndimage.uniform_filter(np.abs(out), size, mode=NDIMAGE_MODE[spec.boundary])
    return out


def wavelet_filter(image, spacing, spec: S.WaveletFilter) -> np.ndarray:
    axes = filter_axes(spec.ndim)
    chain: list[Step] = []
    for lv in range(1, spec.level + 1):
        f = wavelet_filters(spec.wavelet, lv)
        letters = spec.subband.upper() if lv == spec.level else "L" * spec.ndim
        chain += [(a, f[c], False) for a, c in zip(axes, letters)]
    return _bank_pool(image, spec, [chain], spec.rotation_invariant, spec.pooling)


def gabor_planes(spec) -> list[tuple[int, int]]:
    """(row axis, column axis) of each plane the 2D Gabor kernel is applied in."""
    if spec.planes3d:
        return [(1, 2), (0, 2), (0, 1)]  # axial (y, x), coronal (z, x), sagittal (z, y)
    return [(1, 2)]


def gabor_filter(image, spacing, spec: S.GaborFilter, bb=None) -> np.ndarray:
    """Gabor response of ``image``; ``bb`` ((lo, hi) per array axis): only on that box (default: all)."""
    image = np.asarray(image, np.float64)
    return pool((gabor_plane(image, spacing, spec, rows, cols, bb) for rows, cols in gabor_planes(spec)), spec.pooling)


def gabor_radius_mm(spec: S.GaborFilter) -> float:
    return spec.truncation * spec.sigma_mm * max(1.0, 1.0 / spec.gamma)


def gabor_plane(image, spacing, spec: S.GaborFilter, rows: int, cols: int, bb=None) -> np.ndarray:
    """Gabor response in the plane (``rows``, ``cols``), pooled over the orientations, on the box ``bb``."""
    if spec.rotation_invariant:
        thetas = np.arange(0.0, 360.0 - 1e-9, spec.theta_step_deg)
    else:
        thetas = np.array([spec.theta_deg])
    image = np.asarray(image, np.float64)
    bb = [(0, n) for n in image.shape] if bb is None else [(int(a), int(b)) for a, b in bb]
    return _gabor_plane(image, spacing, spec, rows, cols, thetas, bb)


def _gabor_plane(image, spacing, spec, rows: int, cols: int, thetas, bb) -> np.ndarray:
    """The response on the box ``bb`` of ``image`` from the window ``bb`` +- the kernel radius in the plane.

    The window is read from the image, and beyond its border extended by the boundary rule (as
    for the whole image), up to a fast FFT length; the circular convolution's wrap-around only
    reaches window voxels farther than the kernel radius from the box, so the box's values are
    those of the linear convolution of the boundary-extended image.
    """
    sp2 = (float(spacing[rows]), float(spacing[cols]))
    k0 = gabor_kernel(sp2, spec.sigma_mm, spec.lambda_mm, spec.gamma, 0.0, spec.truncation)
    pr, pc = k0.shape[0] // 2, k0.shape[1] // 2
    out_shape = [hi - lo for lo, hi in bb]
    box = list(bb)
    nr = sfft.next_fast_len(out_shape[rows] + 2 * pr)
    nc = sfft.next_fast_len(out_shape[cols] + 2 * pc)
    box[rows] = (bb[rows][0] - pr, bb[rows][0] - pr + nr)
    box[cols] = (bb[cols][0] - pc, bb[cols][0] - pc + nc)
    ext = extended_box(image, box, spec.boundary)
    axes = (rows, cols)
    shape2 = (nr, nc)
    full = [1, 1, 1]
    full[rows], full[cols] = shape2
    # single precision: the FFT's rounding (~1e-7 relative) is far below the IBSI 2 tolerances
    spec_img = sfft.fftn(ext.astype(np.complex64), axes=axes, workers=-1)
    buf = np.empty_like(spec_img)
    # theta and theta + 180 deg give conjugate kernels, hence conjugate responses: same modulus and
    # real part, opposite imaginary part; each distinct response is computed once
    groups: dict[float, list[bool]] = {}
    for t in thetas:
        groups.setdefault(round(float(t) % 180.0, 9), []).append((float(t) % 360.0) >= 180.0 - 1e-9)

    def responses():
        for key, conjs in groups.items():
            k = gabor_kernel(sp2, spec.sigma_mm, spec.lambda_mm, spec.gamma, math.radians(key), spec.truncation)
            kk = np.zeros(shape2, dtype=np.complex128)
            kk[: k.shape[0], : k.shape[1]] = k
            kk = np.roll(kk, (-(k.shape[0] // 2), -(k.shape[1] // 2)), axis=(0, 1))
            tf = sfft.fftn(kk, workers=-1).astype(np.complex64).reshape(full)
            np.multiply(spec_img, tf, out=buf)
            # the 2D inverse FFT one axis at a time, keeping only the image's rows before the columns'
            # pass (the same values as ifftn and cropping)
            r = sfft.ifft(buf, axis=rows, workers=-1, overwrite_x=True)
            sl = [slice(None)] * 3
            sl[rows] = slice(pr, pr + out_shape[rows])
            r = sfft.ifft(r[tuple(sl)], axis=cols, workers=-1, overwrite_x=True)
            sl = [slice(None)] * 3
            sl[cols] = slice(pc, pc + out_shape[cols])
            r = r[tuple(sl)]
            if spec.response == "modulus":
                yield np.abs(r), len(conjs)
            elif spec.response == "real":
                yield r.real, len(conjs)
            else:
                for conj in conjs:
                    yield (-r.imag if conj else r.imag), 1

    return pool_weighted(responses(), spec.pooling)


def _simoncelli_tf(level: int):
    nu_max = 2.0 ** (1 - level)

    def tf(grids):
        # single precision (the spectrum is multiplied in single precision); the function is
        # continuous (0 at both band edges), so float32 rounding of |nu| moves it by ~1e-7 only
        d = np.sqrt(sum((g * g).astype(np.float32) for g in grids))
        with np.errstate(all="ignore"):  # log2(0) outside the band
            v = np.cos(np.float32(np.pi / 2) * np.log2(d * np.float32(2 / nu_max)))
        return np.where((d >= nu_max / 4) & (d <= nu_max), v, np.float32(0))

    return tf


def _riesz_tf(order_by_axis: list[int]):
    L = sum(order_by_axis)
    pre = (-1j) ** L * math.sqrt(math.factorial(L) / np.prod([math.factorial(o) for o in order_by_axis]))

    def tf(grids):
        d = np.sqrt(sum(g * g for g in grids))
        num = 1.0
        for g, o in zip(grids, order_by_axis):
            if o:
                num = num * g**o
        with np.errstate(divide="ignore", invalid="ignore"):
            out = pre * num / d**L
        return np.where(d > 0, out, 0.0)

    return tf


def _fourier_response(image, spacing, spec, spatial=None, out=None, spectra=None) -> np.ndarray:
    """Simoncelli and/or Riesz in the Fourier domain, on the image extended by the boundary.

    ``out``: slices of the response to return (default all); ``spectra``: see :func:`~._ops.fourier_filter`
    (used only without a ``spatial`` pre-filter: the spectrum is then the image's own).
    """
    axes = filter_axes(spec.ndim)
    ext_m = [0, 0, 0]
    for a in axes:
        ext_m[a] = fourier_margin(spec, image.shape[a])
    box = [(-m, n + m) for m, n in zip(ext_m, image.shape)]
    x = extended_box(np.asarray(image, np.float64), box, spec.boundary)
    if spatial is not None:  # LoG before its Riesz transform (on the extended image)
        x = spatial(x)
    tfs = []
    if spec.filter == "simoncelli":
        tfs.append(_simoncelli_tf(spec.level))
    if spec.riesz is not None:  # orders (x, y, z) follow ``axes`` = array axes (2, 1, 0)
        tfs.append(_riesz_tf([spec.riesz[i] for i in range(len(axes))]))

    def transfer(grids):
        out_t = 1.0
        for t in tfs:
            out_t = out_t * t(grids)
        return out_t

    if spectra is not None and spatial is None:
        spectra = spectra.setdefault(("extended", tuple(box), spec.boundary), {})
    else:
        spectra = None
    sl = [slice(m, m + n) for m, n in zip(ext_m, image.shape)]
    if out is not None:  # slices of the image -> slices of the extended image
        sl = [slice(m + (o.start or 0), m + (n if o.stop is None else o.stop)) for m, n, o in zip(ext_m, image.shape, out)]
    return fourier_filter(x, axes, transfer, out=sl, spectra=spectra)


def response(image: np.ndarray, spacing, spec, out=None, spectra: dict | None = None) -> np.ndarray:
    """Response map (float64) of ``image`` (z, y, x), ``spacing`` (dz, dy, dx) mm.

    ``out``: slices (start/stop, step 1) of the map to return (default: the whole map, same shape as
    ``image``); the Fourier-domain filters then invert only that part. ``spectra``: a dict the caller
    keeps for this one ``image`` (Fourier spectra computed once for several filters).
    """
    image = np.asarray(image, dtype=np.float64)
    spacing = tuple(float(s) for s in spacing)
    f = spec.filter
    if f == "simoncelli":
        return _fourier_response(image, spacing, spec, out=out, spectra=spectra)
    if f == "log" and spec.riesz is not None:
        plain = spec.model_copy(update={"riesz": None, "boundary": "constant"})
        return _fourier_response(image, spacing, spec, spatial=lambda x: log_filter(x, spacing, plain), out=out)
    r = _spatial_response(image, spacing, spec)
    return r if out is None else r[tuple(out)]


def _spatial_response(image, spacing, spec) -> np.ndarray:
    f = spec.filter
    if f == "none":
        return image.copy()
    if f == "mean":
        return mean_filter(image, spacing, spec)
    if f == "laws":
        return laws_filter(image, spacing, spec)
    if f == "wavelet":
        return wavelet_filter(image, spacing, spec)
    if f == "gabor":
        return gabor_filter(image, spacing, spec)
    if f == "log":
        return log_filter(image, spacing, spec)
    raise ValueError(f"unknown filter {f!r}")
