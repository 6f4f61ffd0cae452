"""Building blocks of the IBSI 2 filters: boundary extension, separable passes, rotations, FFT.

Arrays are (z, y, x) numpy arrays; "filter axes" are array axes. IBSI names axes x, y, z:
x = array axis 2, y = axis 1, z = axis 0. Everything is vectorised (scipy.ndimage 1D passes,
numpy/scipy FFTs); there is no per-voxel Python loop.
"""

from __future__ import annotations

import itertools
from functools import lru_cache
from typing import Callable, Iterable, Sequence

import numpy as np
from scipy import fft as sfft
from scipy import ndimage

#: IBSI boundary name -> scipy.ndimage mode
NDIMAGE_MODE = {"constant": "constant", "nearest": "nearest", "periodic": "wrap", "mirror": "reflect"}
#: IBSI axis letter order (x, y, z) -> array axis
XYZ_AXES = (2, 1, 0)


def filter_axes(ndim: int) -> tuple[int, ...]:
    """Array axes a filter acts on, in IBSI letter order: (x, y, z) in 3D, (x, y) in 2D."""
    return XYZ_AXES[:ndim]


def extend_index(idx: np.ndarray, n: int, boundary: str) -> tuple[np.ndarray, np.ndarray]:
    """Map indices (possibly outside [0, n)) into the image by the IBSI boundary rule.

    Returns (source index, valid) where ``valid`` is False where ``constant`` padding gives zero.
    mirror = symmetric (d c b a | a b c d), periodic = wrap, nearest = edge value.
    """
    valid = np.ones(idx.shape, bool)
    if boundary == "nearest":
        src = np.clip(idx, 0, n - 1)
    elif boundary == "periodic":
        src = np.mod(idx, n)
    elif boundary == "mirror":
        j = np.mod(idx, 2 * n)
        src = np.where(j < n, j, 2 * n - 1 - j)
    else:  # constant
        valid = (idx >= 0) & (idx < n)
        src = np.clip(idx, 0, n - 1)
    return src, valid


def extended_box(image: np.ndarray, box: Sequence[tuple[int, int]], boundary: str) -> np.ndarray:
    """``image[lo:hi]`` per axis where the box may extend beyond the image (filled by ``boundary``)."""
    if all(lo >= 0 and hi <= n for (lo, hi), n in zip(box, image.shape)):
        return image[tuple(slice(lo, hi) for lo, hi in box)]
    srcs, valids = [], []
    for (lo, hi), n in zip(box, image.shape):
        s, v = extend_index(np.arange(lo, hi), n, boundary)
        srcs.append(s)
        valids.append(v)
    out = image[np.ix_(*srcs)]
    if boundary == "constant" and not all(v.all() for v in valids):
        keep = np.ones((1,) * out.ndim, bool)
        for ax, v in enumerate(valids):
            sh = [1] * out.ndim
            sh[ax] = v.size
            keep = keep & v.reshape(sh)
        out = out * keep
    return out


# -- separable passes ---------------------------------------------------------------------

#: one 1D pass: (array axis, kernel taps, flipped). A flipped pass convolves the axis-reversed data,
#: which is how a kernel of any length (also even) is mirrored exactly.
Step = tuple[int, tuple[float, ...], bool]


def canonical(step: Step) -> tuple[Step, float]:
    """(step, sign) with a flip of a symmetric / antisymmetric odd kernel folded into the sign."""
    axis, k, flipped = step
    if flipped and len(k) % 2 == 1:
        a = np.asarray(k)
        if np.array_equal(a[::-1], a):
            return (axis, k, False), 1.0
        if np.array_equal(a[::-1], -a):
            return (axis, k, False), -1.0
    return step, 1.0


class SeparableBank:
    """Applies chains of 1D passes to one image, sharing common prefixes.

    Passes along different axes commute exactly (also at the border), so each chain is
    stable-sorted by axis (passes along one axis keep their order); chains that start alike
    reuse the partial results. :meth:`apply_all` walks the chains in sorted order, keeping only
    the current chain's partial results (memory of one chain, not of all).
    """

    def __init__(self, image: np.ndarray, mode: str):
        self.image = np.asarray(image, dtype=np.float64)
        self.mode = mode

    def _pass(self, x: np.ndarray, step: Step) -> np.ndarray:
        axis, k, flipped = step
        if flipped:
            x = np.flip(x, axis)
        y = ndimage.convolve1d(x, np.asarray(k, dtype=np.float64), axis=axis, mode=self.mode)
        return np.flip(y, axis) if flipped else y

    @staticmethod
    def _canonical(steps: Iterable[Step]) -> tuple[tuple[Step, ...], float]:
        sign = 1.0
        canon = []
        for s in steps:
            c, sg = canonical(s)
            canon.append(c)
            sign *= sg
        canon.sort(key=lambda s: s[0])  # stable
        return tuple(canon), sign

    def apply(self, steps: Iterable[Step]) -> np.ndarray:
        """Response of one chain."""
        return next(iter(self.apply_all([steps])))

    def apply_all(self, chains: Sequence[Iterable[Step]]):
        """Responses of the chains (as an iterator, in an order that shares prefixes)."""
        canon = [self._canonical(c) for c in chains]
        order = sorted(range(len(canon)), key=lambda i: repr(canon[i][0]))
        stack: list[tuple[Step, np.ndarray]] = []  # current path: (step, result after it)
        for i in order:
            steps, sign = canon[i]
            n = 0
            while n < len(stack) and n < len(steps) and stack[n][0] == steps[n]:
                n += 1
            del stack[n:]
            x = stack[-1][1] if stack else self.image
            for s in steps[n:]:
                x = self._pass(x, s)
                stack.append((s, x))
            yield -x if sign < 0 else x


# -- rotations ------------------------------------------------------------------------------

Rotation = tuple[tuple[int, int, int], tuple[bool, bool, bool]]


def rotations(ndim: int) -> list[Rotation]:
    """Right-angle rotations: the 24 of the cube (3D) or the 4 in the axial plane (2D).

    A rotation is (perm, flips) of the array axes: rotated = flip(transpose(x, perm), flips);
    proper rotations only (determinant +1). The identity comes first.
    """
    out = []
    axes = (0, 1, 2) if ndim == 3 else (1, 2)
    for p in itertools.permutations(axes):
        perm = (0,) + p if ndim == 2 else p
        det_p = np.linalg.det(np.eye(3)[list(perm)])
        for fl in itertools.product((False, True), repeat=len(axes)):
            flips = (False,) + fl if ndim == 2 else fl
            if det_p * (-1) ** sum(flips) > 0:
                out.append((tuple(perm), tuple(flips)))
    out.sort(key=lambda r: (r[0] != (0, 1, 2), sum(r[1])))
    return out


def rotate_steps(steps: Sequence[Step], rot: Rotation) -> list[Step]:
    """Passes that give R^-1 F R x for the passes F defined on the rotated image R x."""
    perm, flips = rot
    return [(perm[a], k, f != flips[a]) for a, k, f in steps]


def pool(maps: Iterable[np.ndarray], how: str) -> np.ndarray:
    """Voxel-wise max / mean / min of response maps (streamed)."""
    return pool_weighted(((m, 1) for m in maps), how)


def pool_weighted(maps: Iterable[tuple[np.ndarray, int]], how: str) -> np.ndarray:
    """:func:`pool` of maps given once with their multiplicity (the mean counts a map ``n`` times)."""
    acc, total = None, 0
    for m, n in maps:
        total += n
        if acc is None:
            acc = np.array(m, dtype=np.float64, copy=True)
            if how == "mean" and n != 1:
                acc *= n
        elif how == "max":
            np.maximum(acc, m, out=acc)
        elif how == "min":
            np.minimum(acc, m, out=acc)
        else:  # in-place adds (no float64 temporary of a single-precision map)
            for _ in range(n):
                np.add(acc, m, out=acc)
    if how == "mean":
        acc /= total
    return acc


def _flipped_seq(seq: tuple[tuple[tuple[float, ...], bool], ...]) -> tuple:
    return tuple((k, not f) for k, f in seq)


def _axis_op(axis: int, seq: tuple, kind: str) -> tuple[tuple[float, tuple[Step, ...]], ...]:
    """Branches (coefficient, passes along ``axis``) of ``(O +- O~) / 2``: S (``+``) or D (``-``).

    ``O`` = the passes ``seq`` ((taps, flipped) in order) along ``axis``, ``O~`` the same passes
    mirrored. Branches equal up to sign (symmetric / antisymmetric odd kernels) are merged, so an
    operator that is (anti)symmetric under the mirror has one branch or none (zero).
    """
    branches: dict[tuple[Step, ...], float] = {}
    for coef, sq in ((0.5, seq), (0.5 if kind == "S" else -0.5, _flipped_seq(seq))):
        sign, steps = 1.0, []
        for k, f in sq:
            c, sg = canonical((axis, k, f))
            steps.append(c)
            sign *= sg
        key = tuple(steps)
        branches[key] = branches.get(key, 0.0) + coef * sign
    out = tuple((c, st) for st, c in sorted(branches.items(), key=lambda kv: repr(kv[0])) if c != 0.0)
    if len(seq) == 1 and len(out) == 2:  # one pass: both branches are one kernel on the same extended line
        (c1, (s1,)), (c2, (s2,)) = out
        return ((1.0, ((axis, _merged_taps(c1, s1[1:], c2, s2[1:]), False),)),)
    return out


@lru_cache(maxsize=256)
def _merged_taps(c1: float, p1: tuple, c2: float, p2: tuple) -> tuple[float, ...]:
    """Taps (odd length, centred) of ``c1 * pass1 + c2 * pass2`` for single 1D passes ``(taps, flipped)``.

    Every boundary mode extends a line the same way whatever the kernel, so a linear combination
    of two passes is one convolution of the extended line: its taps are the impulse response.
    """
    r = max(len(p1[0]), len(p2[0])) // 2 + 1
    x = np.zeros(4 * r + 1)
    x[2 * r] = 1.0
    bank = SeparableBank(x, "constant")
    h = c1 * bank._pass(x, (0, p1[0], p1[1])) + c2 * bank._pass(x, (0, p2[0], p2[1]))
    return tuple(float(v) for v in h[r: 3 * r + 1])


def rotation_mean(image: np.ndarray, mode: str, chain: Sequence[Step], ndim: int) -> np.ndarray:
    """Mean of the responses of the separable ``chain`` over the right-angle rotations, in closed form.

    The mean of linear filters is the filter of the mean kernel. For a rotation (perm, flips), axis
    ``a``'s passes ``O_a`` act on array axis ``perm[a]``, mirrored where ``flips[a]``; for one
    permutation the proper rotations are the flips of parity ``det(perm)``, and summing the
    products over them gives ``2^(n-1) (prod_a S_a + det(perm) prod_a D_a)`` with
    ``S = (O + O~) / 2``, ``D = (O - O~) / 2``. Hence the mean over the n! 2^(n-1) rotations is
    ``1/n! sum_perm (prod S_a + det(perm) prod D_a)``: at most 2 n! separable terms instead of 24
    (3D) / 4 (2D) chains, fewer when kernels repeat (terms merge) or are (anti)symmetric (S or D
    vanish). Passes along different axes commute, also at the border (every boundary mode extends
    each line on its own), so the result equals :func:`pool` of the 24 / 4 rotated chains to rounding.
    """
    axes = (0, 1, 2) if ndim == 3 else (1, 2)
    seqs = {a: tuple((k, f) for ax, k, f in chain if ax == a) for a in axes}
    if any(ax not in axes for ax, _k, _f in chain):
        raise ValueError("chain has passes outside the rotation axes")
    perms = sorted({r[0] for r in rotations(ndim)})
    terms: dict[tuple, float] = {}
    for perm in perms:
        det = float(round(np.linalg.det(np.eye(3)[list(perm)])))
        for kind, coef in (("S", 1.0), ("D", det)):
            ops = []
            for a in axes:
                if not seqs[a]:
                    if kind == "D":
                        break  # the identity is symmetric: D = 0
                    continue
                op = _axis_op(perm[a], seqs[a], kind)
                if not op:
                    break  # a vanishing factor
                ops.append((perm[a], op))
            else:
                key = tuple(sorted(ops, key=lambda t: t[0]))
                terms[key] = terms.get(key, 0.0) + coef / len(perms)
    image = np.asarray(image, dtype=np.float64)
    acc = np.zeros(image.shape)
    bank = SeparableBank(image, mode)
    stack: list[tuple[tuple, np.ndarray]] = []  # shared prefixes of the (axis-sorted) terms
    for key in sorted(terms, key=repr):
        coef = terms[key]
        if coef == 0.0:
            continue
        n = 0
        while n < len(stack) and n < len(key) and stack[n][0] == key[n]:
            n += 1
        del stack[n:]
        x = stack[-1][1] if stack else image
        for op in key[n:]:
            y = None
            for c, steps in op[1]:
                z = x
                for st in steps:
                    z = bank._pass(z, st)
                y = c * z if y is None else y + c * z
            x = y
            stack.append((op, x))
        acc += coef * x
    return acc


def rotation_pool(image: np.ndarray, mode: str, chains: Sequence[Sequence[Step]], ndim: int, how: str) -> np.ndarray:
    """``how`` (max / mean / min) of the responses of ``chains`` over the right-angle rotations.

    ``mean``: :func:`rotation_mean` of each chain. ``max`` / ``min``: rotated chains equal up to
    sign (odd symmetric or antisymmetric kernels mirrored) are computed once; where both signs
    occur the pooled value is ``|r|`` (max) or ``-|r|`` (min) -- the same as pooling all rotations.
    """
    if how == "mean":
        return pool((rotation_mean(image, mode, c, ndim) for c in chains), "mean")
    bank = SeparableBank(image, mode)
    signs: dict[tuple[Step, ...], set[float]] = {}
    for c in chains:
        for r in rotations(ndim):
            steps, sign = bank._canonical(rotate_steps(c, r))
            signs.setdefault(steps, set()).add(sign)
    keys = sorted(signs, key=repr)

    def maps():
        for k, x in zip(keys, bank.apply_all(list(keys))):
            sg = signs[k]
            if len(sg) == 2:
                yield np.abs(x) if how == "max" else -np.abs(x)
            else:
                yield -x if sg == {-1.0} else x

    return pool(maps(), how)


# -- Fourier domain -------------------------------------------------------------------------

def _quadrant_grid(n: int, negate: bool) -> np.ndarray:
    """Frequency of FFT index q (or of -q) on the centred grid, in the FFT's quadrant order.

    The grid of the IBSI 2 reference implementation of the Fourier-domain filters: centred sample i
    of an axis of n samples has the normalised frequency (i - (n-1)/2) / ((n-1)/2) (1 = Nyquist; for
    even n the grid straddles zero); FFT index q holds centred sample (q + n // 2) mod n.
    """
    c = (n - 1) / 2.0
    q = np.arange(n)
    if negate:
        q = (n - q) % n
    i = (q + n // 2) % n
    return (i - c) / c if n > 1 else np.zeros(1)


def fourier_filter(image: np.ndarray, axes: Sequence[int],
                   transfer: Callable[[list[np.ndarray]], np.ndarray],
                   out: Sequence[slice] | None = None, spectra: dict | None = None) -> np.ndarray:
    """Real part of the response of the real ``image`` to a filter given by its centred transfer function.

    ``transfer`` receives the frequency grids of ``axes`` (:func:`_quadrant_grid`, in that order, each
    of size 1 on the other array axes) and returns the transfer function T (real or complex).
    Periodic (FFT) convolution over ``axes``. ``Re(ifft(F T)) = ifft(F T_h)`` with the Hermitian
    part ``T_h(k) = (T(k) + conj(T(-k))) / 2`` (F of a real image is Hermitian), so real FFTs give
    exactly the real part; T is evaluated on the half spectrum only.

    ``out``: slices (one per array axis) of the response to return (default: all of it); the
    inverse FFT runs one axis at a time and keeps only those rows before the next axis' pass
    (the same values as the whole inverse, cropped). ``spectra``: a dict owned by the caller for
    one ``image`` (never shared between images): the image's FFT is computed once for all
    transfer functions applied to it.
    """
    order = list(axes)
    fft_axes = tuple(sorted(order))
    last = fft_axes[-1]

    def grids(negate: bool) -> list[np.ndarray]:
        out_g = []
        for a in order:
            g = _quadrant_grid(image.shape[a], negate)
            if a == last:
                g = g[: image.shape[a] // 2 + 1]
            sh = [1] * image.ndim
            sh[a] = g.size
            out_g.append(g.reshape(sh))
        return out_g

    herm = (transfer(grids(False)) + np.conj(transfer(grids(True)))) / 2
    if np.iscomplexobj(herm) and not np.any(herm.imag):
        herm = herm.real
    key = ("rfftn", image.shape, fft_axes)
    spec0 = spectra.get(key) if spectra is not None else None
    if spec0 is None:
        # single precision: the FFT's rounding (~1e-7 relative) is far below the IBSI 2 tolerances
        spec0 = sfft.rfftn(np.asarray(image, np.float32), axes=fft_axes, workers=-1)
        if spectra is not None:
            spectra[key] = spec0
    x = spec0 * herm.astype(np.complex64 if np.iscomplexobj(herm) else np.float32)
    sl = list(out) if out is not None else [slice(None)] * image.ndim
    for a in fft_axes[:-1]:
        x = sfft.ifft(x, axis=a, workers=-1, overwrite_x=True)
        idx = [slice(None)] * image.ndim
        idx[a] = sl[a]
        x = x[tuple(idx)]
    r = sfft.irfft(x, n=image.shape[last], axis=last, workers=-1)
    idx = [slice(None)] * image.ndim
    for a in range(image.ndim):
        if a == last or a not in fft_axes:
            idx[a] = sl[a]
    return r[tuple(idx)].astype(np.float64)
