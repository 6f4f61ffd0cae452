"""Texture matrices and features: GLCM (cm), GLRLM (rlm), GLSZM (szm), GLDZM (dzm),
NGTDM (ngt), NGLDM (ngl), with IBSI 2D / 2.5D / 3D aggregation.

Input: ``levels`` int array (z, y, x) of grey levels 1..N_g, 0 outside the ROI,
with at least one voxel of zeros around the ROI (so array shifts never wrap).
2D means in-plane (axial slices, 8-connected); 3D 26-connected.

Aggregation codes follow the IBSI tags:

* GLCM/GLRLM: ``2D_avg`` (per slice and direction, features averaged), ``2D_comb``
  (per slice, directions merged, averaged over slices), ``2_5D_avg`` (per
  direction, slices merged, averaged over directions), ``2_5D_comb`` (all merged),
  ``3D_avg`` (per 3D direction, averaged), ``3D_comb`` (merged).
* GLSZM/GLDZM/NGTDM/NGLDM: ``2D`` (per slice, averaged), ``2_5D`` (slices merged), ``3D``.

Everything is vectorised: matrices come from array shifts and ``np.bincount`` /
``np.unique``; run lengths from sorting run starts and ends along each line;
zones from ``scipy.ndimage.label`` (one call per grey level).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

DIRS_3D = [(0, 0, 1), (0, 1, 0), (0, 1, 1), (0, 1, -1), (1, 0, 0), (1, 0, 1), (1, 0, -1),
           (1, 1, 0), (1, -1, 0), (1, 1, 1), (1, 1, -1), (1, -1, 1), (1, -1, -1)]
DIRS_2D = DIRS_3D[:4]


def _shift_pair(a: np.ndarray, d):
    """Views (src, dst) with dst[v] = a[v + d] over the overlap region; plus slice of src."""
    src, dst = [], []
    for n, o in zip(a.shape, d):
        src.append(slice(max(0, -o), n - max(0, o)))
        dst.append(slice(max(0, o), n - max(0, -o)))
    return a[tuple(src)], a[tuple(dst)], tuple(src)


def _log2(x):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(x > 0, np.log2(np.where(x > 0, x, 1.0)), 0.0)


# --------------------------------------------------------------------- GLCM

def glcm_matrices(levels: np.ndarray, n_levels: int, dirs, per_slice: bool = True) -> np.ndarray:
    """Symmetric co-occurrence counts per direction: shape (D, Z, Ng, Ng), or (D, 1, Ng, Ng)
    summed over slices when ``per_slice`` is false (3D: saves memory for many grey levels)."""
    nz = levels.shape[0] if per_slice else 1
    out = np.zeros((len(dirs), nz, n_levels, n_levels), dtype=np.float64)
    zidx = np.broadcast_to(np.arange(levels.shape[0])[:, None, None], levels.shape)
    for k, d in enumerate(dirs):
        a, b, sl = _shift_pair(levels, d)
        ok = (a > 0) & (b > 0)
        ai, bi = a[ok] - 1, b[ok] - 1
        zi = zidx[sl][ok] if per_slice else 0
        cnt = np.bincount((zi * n_levels + ai) * n_levels + bi, minlength=nz * n_levels * n_levels)
        m = cnt.reshape(nz, n_levels, n_levels).astype(np.float64)
        out[k] = m + m.transpose(0, 2, 1)
    return out


def glcm_features(P: np.ndarray, n_levels: int) -> dict:
    """IBSI GLCM features for a stack of count matrices P (K, Ng, Ng) -> arrays (K,)."""
    s = P.sum(axis=(1, 2), keepdims=True)
    p = P / s
    ng = n_levels
    i = np.arange(1, ng + 1, dtype=np.float64)
    I, J = i[:, None], i[None, :]
    pi = p.sum(axis=2)  # (K, Ng) marginal over j
    pj = p.sum(axis=1)
    mu_i = (pi * i).sum(axis=1)
    mu_j = (pj * i).sum(axis=1)
    k_diff = np.arange(ng)
    k_sum = np.arange(2, 2 * ng + 1)
    diff_idx = np.abs(np.subtract.outer(np.arange(ng), np.arange(ng)))
    sum_idx = np.add.outer(np.arange(ng), np.arange(ng))
    K = p.shape[0]
    pd = np.zeros((K, ng))
    ps = np.zeros((K, 2 * ng - 1))
    for kk in range(K):
        pd[kk] = np.bincount(diff_idx.ravel(), weights=p[kk].ravel(), minlength=ng)
        ps[kk] = np.bincount(sum_idx.ravel(), weights=p[kk].ravel(), minlength=2 * ng - 1)
    out = {}
    out["joint_max"] = p.max(axis=(1, 2))
    out["joint_avg"] = mu_i
    out["joint_var"] = (p * (I - mu_i[:, None, None]) ** 2).sum(axis=(1, 2))
    out["joint_entr"] = -(p * _log2(p)).sum(axis=(1, 2))
    out["diff_avg"] = (pd * k_diff).sum(axis=1)
    out["diff_var"] = (pd * (k_diff - out["diff_avg"][:, None]) ** 2).sum(axis=1)
    out["diff_entr"] = -(pd * _log2(pd)).sum(axis=1)
    out["sum_avg"] = (ps * k_sum).sum(axis=1)
    out["sum_var"] = (ps * (k_sum - out["sum_avg"][:, None]) ** 2).sum(axis=1)
    out["sum_entr"] = -(ps * _log2(ps)).sum(axis=1)
    out["energy"] = (p**2).sum(axis=(1, 2))
    out["contrast"] = (p * (I - J) ** 2).sum(axis=(1, 2))
    out["dissimilarity"] = (p * np.abs(I - J)).sum(axis=(1, 2))
    out["inv_diff"] = (pd / (1 + k_diff)).sum(axis=1)
    out["inv_diff_norm"] = (pd / (1 + k_diff / ng)).sum(axis=1)
    out["inv_diff_mom"] = (pd / (1 + k_diff**2)).sum(axis=1)
    out["inv_diff_mom_norm"] = (pd / (1 + (k_diff / ng) ** 2)).sum(axis=1)
    out["inv_var"] = (pd[:, 1:] / k_diff[1:] ** 2).sum(axis=1)
    var_i = (pi * (i - mu_i[:, None]) ** 2).sum(axis=1)
    var_j = (pj * (i - mu_j[:, None]) ** 2).sum(axis=1)
    cov = (p * (I - mu_i[:, None, None]) * (J - mu_j[:, None, None])).sum(axis=(1, 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        out["corr"] = np.where(var_i * var_j > 0, cov / np.sqrt(var_i * var_j), np.nan)
    out["auto_corr"] = (p * I * J).sum(axis=(1, 2))
    t = I + J - mu_i[:, None, None] - mu_j[:, None, None]
    out["clust_tend"] = (p * t**2).sum(axis=(1, 2))
    out["clust_shade"] = (p * t**3).sum(axis=(1, 2))
    out["clust_prom"] = (p * t**4).sum(axis=(1, 2))
    hxy = out["joint_entr"]
    hx = -(pi * _log2(pi)).sum(axis=1)
    hy = -(pj * _log2(pj)).sum(axis=1)
    pipj = pi[:, :, None] * pj[:, None, :]
    hxy1 = -(p * _log2(pipj)).sum(axis=(1, 2))
    hxy2 = -(pipj * _log2(pipj)).sum(axis=(1, 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        out["info_corr1"] = np.where(np.maximum(hx, hy) > 0, (hxy - hxy1) / np.maximum(hx, hy), 0.0)
    out["info_corr2"] = np.sqrt(np.clip(1 - np.exp(-2 * (hxy2 - hxy)), 0, None))
    return out


# ------------------------------------------------------------ sparse matrices
# Run/zone/dependence matrices are kept sparse: arrays (k, i, j, count) with k the
# matrix index (slice, direction, ...), i the grey level and j the run length /
# zone size / distance / dependence count.

def _group(*cols):
    """Inverse index and first-row indices of the unique rows of integer columns (fast 1D sort)."""
    key = np.zeros(cols[0].shape, np.int64)
    for c in cols:
        c = np.asarray(c, np.int64)
        key = key * (int(c.max()) + 1 if c.size else 1) + c
    uniq, first, inv = np.unique(key, return_index=True, return_inverse=True)
    return inv.ravel(), first


def _aggregate(k, i, j, w=None):
    """Sum weights ``w`` (default 1) per unique (k, i, j); dense bincount when the key range is small."""
    k = np.asarray(k, np.int64)
    i = np.asarray(i, np.int64)
    j = np.asarray(j, np.int64)
    w = np.ones(k.shape, np.float64) if w is None else np.asarray(w, np.float64)
    if k.size == 0:
        return k, i, j, w
    ni, nj = int(i.max()) + 1, int(j.max()) + 1
    span = (int(k.max()) + 1) * ni * nj
    if span <= 20_000_000:
        key = (k * ni + i) * nj + j
        cnt = np.bincount(key, weights=w, minlength=span)
        nz = np.flatnonzero(cnt)
        kk, rest = np.divmod(nz, ni * nj)
        ii, jj = np.divmod(rest, nj)
        return kk, ii, jj, cnt[nz]
    inv, first = _group(k, i, j)
    cnt = np.bincount(inv, weights=w)
    return k[first], i[first], j[first], cnt


def size_features(k, i, j, w, n_voxels: np.ndarray, names: list[str]) -> dict:
    """Features of sparse matrices (k, i, j, w) -> arrays over matrix index k.

    ``names`` gives the 16/17 IBSI short names in the canonical order:
    short/large-j emphasis, low/high grey emphasis, 4 joint emphases, glnu,
    glnu_norm, jnu, jnu_norm, percentage, gl_var, j_var, j_entr (, energy).
    ``n_voxels`` (K,) is the voxel count N_v of each (merged) matrix.
    """
    k, i, j, w = _aggregate(k, i, j, w)
    K = len(n_voxels)
    fi = i.astype(np.float64)
    fj = j.astype(np.float64)
    ns = np.bincount(k, weights=w, minlength=K)
    with np.errstate(divide="ignore", invalid="ignore"):
        def tot(x):
            return np.bincount(k, weights=w * x, minlength=K) / ns
        f = [tot(1 / fj**2), tot(fj**2), tot(1 / fi**2), tot(fi**2), tot(1 / (fi**2 * fj**2)), tot(fi**2 / fj**2),
             tot(fj**2 / fi**2), tot(fi**2 * fj**2)]
        K1, ni, nj = int(k.max()) + 1 if k.size else 1, int(i.max()) + 1 if i.size else 1, int(j.max()) + 1 if j.size else 1
        si = np.bincount(k * ni + i, weights=w, minlength=K1 * ni).reshape(K1, ni)
        glnu = np.zeros(K)
        glnu[:K1] = (si**2).sum(axis=1)
        glnu /= ns
        sj = np.bincount(k * nj + j, weights=w, minlength=K1 * nj).reshape(K1, nj)
        jnu = np.zeros(K)
        jnu[:K1] = (sj**2).sum(axis=1)
        jnu /= ns
        f += [glnu, glnu / ns, jnu, jnu / ns, ns / np.asarray(n_voxels, np.float64)]
        p = w / ns[k]
        mu_i = np.bincount(k, weights=p * fi, minlength=K)
        mu_j = np.bincount(k, weights=p * fj, minlength=K)
        f.append(np.bincount(k, weights=p * (fi - mu_i[k]) ** 2, minlength=K))
        f.append(np.bincount(k, weights=p * (fj - mu_j[k]) ** 2, minlength=K))
        f.append(-np.bincount(k, weights=p * np.log2(p), minlength=K))
        if len(names) > 16:
            f.append(np.bincount(k, weights=p**2, minlength=K))
    return dict(zip(names, f))


RLM_NAMES = ["sre", "lre", "lgre", "hgre", "srlge", "srhge", "lrlge", "lrhge", "glnu", "glnu_norm",
             "rlnu", "rlnu_norm", "r_perc", "gl_var", "rl_var", "rl_entr"]
SZM_NAMES = ["sze", "lze", "lgze", "hgze", "szlge", "szhge", "lzlge", "lzhge", "glnu", "glnu_norm",
             "zsnu", "zsnu_norm", "z_perc", "gl_var", "zs_var", "zs_entr"]
DZM_NAMES = ["sde", "lde", "lgze", "hgze", "sdlge", "sdhge", "ldlge", "ldhge", "glnu", "glnu_norm",
             "zdnu", "zdnu_norm", "z_perc", "gl_var", "zd_var", "zd_entr"]
NGL_NAMES = ["lde", "hde", "lgce", "hgce", "ldlge", "ldhge", "hdlge", "hdhge", "glnu", "glnu_norm",
             "dcnu", "dcnu_norm", "dc_perc", "gl_var", "dc_var", "dc_entr", "dc_energy"]


# --------------------------------------------------------------------- GLRLM

def runs(levels: np.ndarray, d) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All runs along direction ``d``: (grey level, length, slice index of the run start).

    Run lengths by dynamic programming over the planes perpendicular to the first
    non-zero axis of ``d`` (one vectorised 2D step per plane, walking backwards):
    ``len[v] = len[v + d] + 1`` if ``v + d`` has the same grey level, else 1.
    Requires the zero border around the ROI (the in-plane shifts wrap into it).
    """
    d = tuple(int(x) for x in d)
    ax = next(a for a in range(3) if d[a] != 0)
    sign = d[ax]
    L = np.moveaxis(levels, ax, 0)
    other = [d[a] * sign for a in range(3) if a != ax]  # step in the other axes per +1 along ax
    if sign < 0:
        L = L[::-1]
    n = L.shape[0]
    length = np.zeros(L.shape, np.int32)
    length[n - 1] = L[n - 1] > 0
    shift = (-other[0], -other[1])
    for t in range(n - 2, -1, -1):
        nxt_lev = np.roll(L[t + 1], shift, axis=(0, 1))
        nxt_len = np.roll(length[t + 1], shift, axis=(0, 1))
        cur = L[t]
        same = (cur > 0) & (nxt_lev == cur)
        length[t] = np.where(same, nxt_len + 1, cur > 0)
    if sign < 0:
        length = length[::-1]
    length = np.moveaxis(length, 0, ax)
    prev = np.zeros_like(levels)  # prev[v] = levels[v - d]
    _, b, sl = _shift_pair(levels, tuple(-x for x in d))
    prev[sl] = b
    start = (levels > 0) & (prev != levels)
    z = np.nonzero(start)[0]
    return levels[start], length[start].astype(np.int64), z


# --------------------------------------------------------------------- zones

def zones(levels: np.ndarray, two_d: bool, dist: np.ndarray | None = None):
    """Connected zones per grey level: (level, size, slice index, min distance or None)."""
    if two_d:
        struct = np.zeros((3, 3, 3), bool)
        struct[1] = True
    else:
        struct = np.ones((3, 3, 3), bool)
    zgrid = np.broadcast_to(np.arange(levels.shape[0])[:, None, None], levels.shape)
    lev_l, size_l, z_l, dist_l = [], [], [], []
    present = np.unique(levels[levels > 0])
    for g in present:
        lab, n = ndimage.label(levels == g, structure=struct)
        flat = lab.ravel()
        sel = flat > 0
        labs = flat[sel]
        size = np.bincount(labs, minlength=n + 1)[1:]
        zl = np.zeros(n + 1, np.int64)
        zl[labs] = zgrid.ravel()[sel]
        lev_l.append(np.full(n, g))
        size_l.append(size)
        z_l.append(zl[1:])
        if dist is not None:
            dmin = np.full(n + 1, np.iinfo(np.int64).max)
            np.minimum.at(dmin, labs, dist.ravel()[sel].astype(np.int64))
            dist_l.append(dmin[1:])
    cat = np.concatenate
    return cat(lev_l), cat(size_l), cat(z_l), (cat(dist_l) if dist is not None else None)


def distance_map(mask: np.ndarray, two_d: bool) -> np.ndarray:
    """Taxicab distance (in voxels) of ROI voxels to the ROI border; border voxels have 1."""
    m = np.pad(mask, 1)
    if two_d:
        struct = np.zeros((3, 3, 3), bool)
        struct[1, 1, :] = True
        struct[1, :, 1] = True
        d = ndimage.distance_transform_cdt(m, metric=struct)
    else:
        d = ndimage.distance_transform_cdt(m, metric="taxicab")
    return d[1:-1, 1:-1, 1:-1]


# --------------------------------------------------------------------- NGTDM / NGLDM

def _neighbour_kernel(two_d: bool) -> np.ndarray:
    k = np.zeros((3, 3, 3))
    if two_d:
        k[1] = 1
    else:
        k[:] = 1
    k[1, 1, 1] = 0
    return k


def ngtdm_terms(levels: np.ndarray, two_d: bool):
    """Per voxel with a valid neighbourhood: (grey level, |g - mean of neighbours|, slice)."""
    roi = levels > 0
    k = _neighbour_kernel(two_d)
    s = ndimage.correlate(levels.astype(np.float64), k, mode="constant")
    c = ndimage.correlate(roi.astype(np.float64), k, mode="constant")
    ok = roi & (c > 0)
    g = levels[ok]
    diff = np.abs(g - s[ok] / c[ok])
    z = np.nonzero(ok)[0]
    return g, diff, z


def ngtdm_features(n: np.ndarray, s: np.ndarray) -> dict:
    """IBSI NGTDM features from counts n (K, Ng) and sums s (K, Ng)."""
    K, ng = n.shape
    i = np.arange(1, ng + 1, dtype=np.float64)
    nvc = n.sum(axis=1)
    p = n / nvc[:, None]
    out = {k: np.full(K, np.nan) for k in ("coarseness", "contrast", "busyness", "complexity", "strength")}
    for kk in range(K):
        pk, sk = p[kk], s[kk]
        v = pk > 0
        pv, sv, iv = pk[v], sk[v], i[v]
        ngp = v.sum()
        ps = np.sum(pv * sv)
        out["coarseness"][kk] = 1.0 / ps if ps > 0 else 1e6
        dI = iv[:, None] - iv[None, :]
        if ngp > 1:
            out["contrast"][kk] = (np.sum(pv[:, None] * pv[None, :] * dI**2) / (ngp * (ngp - 1))) * sv.sum() / nvc[kk]
        else:
            out["contrast"][kk] = 0.0
        den = np.sum(np.abs(iv[:, None] * pv[:, None] - iv[None, :] * pv[None, :]))
        out["busyness"][kk] = ps / den if den > 0 else 0.0
        out["complexity"][kk] = np.sum(np.abs(dI) * (pv[:, None] * sv[:, None] + pv[None, :] * sv[None, :])
                                       / (pv[:, None] + pv[None, :])) / nvc[kk]
        out["strength"][kk] = (np.sum((pv[:, None] + pv[None, :]) * dI**2) / sv.sum()) if sv.sum() > 0 else 0.0
    return out


def ngldm_terms(levels: np.ndarray, two_d: bool):
    """Per ROI voxel: (grey level, dependence count 1 + #neighbours with equal level, slice)."""
    roi = levels > 0
    cnt = np.zeros(levels.shape, np.int64)
    offs = [(dz, dy, dx) for dz in (-1, 0, 1) for dy in (-1, 0, 1) for dx in (-1, 0, 1)
            if (dz, dy, dx) != (0, 0, 0) and (not two_d or dz == 0)]
    for d in offs:
        a, b, sl = _shift_pair(levels, d)
        cnt[sl] += (a == b) & (a > 0)
    g = levels[roi]
    dep = cnt[roi] + 1
    z = np.nonzero(roi)[0]
    return g, dep, z
