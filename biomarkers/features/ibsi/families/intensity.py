"""Statistics (stat_*), intensity histogram (ih_*) and intensity-volume histogram (ivh_*).

Statistics use the intensities of the intensity mask; the intensity histogram
the discretised grey levels; the IVH the IVH-discretised intensities
(:func:`biomarkers.features.ibsi.processing._ivh_values`). Variances are
population variances (IBSI). All logarithms base 2.
"""

from __future__ import annotations

import numpy as np

from ..corrections import excess_kurtosis


def _moments(x: np.ndarray, prefix: str) -> dict:
    mu = x.mean()
    d = x - mu
    d2 = d * d  # products, not float powers (several times faster on large ROIs)
    m2 = np.mean(d2)
    out = {f"{prefix}_mean": mu, f"{prefix}_var": m2}
    if m2 > 0:
        out[f"{prefix}_skew"] = np.mean(d2 * d) / m2**1.5
        out[f"{prefix}_kurt"] = excess_kurtosis(np.mean(d2 * d2) / m2**2)
    else:
        out[f"{prefix}_skew"] = 0.0
        out[f"{prefix}_kurt"] = 0.0
    p10, p25, med, p75, p90 = np.percentile(x, [10, 25, 50, 75, 90])
    out.update({
        f"{prefix}_median": med, f"{prefix}_min": x.min(), f"{prefix}_p10": p10, f"{prefix}_p90": p90,
        f"{prefix}_max": x.max(), f"{prefix}_iqr": p75 - p25, f"{prefix}_range": x.max() - x.min(),
        f"{prefix}_mad": np.mean(np.abs(d)),
        f"{prefix}_medad": np.mean(np.abs(x - med)),
        f"{prefix}_cov": np.sqrt(m2) / mu if mu != 0 else np.nan,
        f"{prefix}_qcod": (p75 - p25) / (p75 + p25) if (p75 + p25) != 0 else np.nan,
    })
    r = x[(x >= p10) & (x <= p90)]
    out[f"{prefix}_rmad"] = np.mean(np.abs(r - r.mean()))
    return out


def statistics(x: np.ndarray) -> dict:
    """IBSI intensity-based statistical features of the ROI intensities ``x``."""
    x = np.asarray(x, dtype=np.float64)
    out = _moments(x, "stat")
    x2 = x * x
    out["stat_energy"] = np.sum(x2)
    out["stat_rms"] = np.sqrt(np.mean(x2))
    return out


def intensity_histogram(levels: np.ndarray) -> dict:
    """IBSI intensity-histogram features of the discretised grey levels (1..N_g) of the ROI."""
    g = np.asarray(levels, dtype=np.int64)
    out = _moments(g.astype(np.float64), "ih")
    gmin, gmax = int(g.min()), int(g.max())
    h = np.bincount(g - gmin, minlength=gmax - gmin + 1).astype(np.float64)
    values = np.arange(gmin, gmax + 1)
    out["ih_mode"] = values[np.argmax(h)]
    p = h / h.sum()
    nz = p[p > 0]
    out["ih_entropy"] = -np.sum(nz * np.log2(nz))
    out["ih_uniformity"] = np.sum(p**2)
    if h.size > 1:
        grad = np.gradient(h)  # central differences inside, one-sided at the ends (IBSI 3.4.20)
    else:
        grad = np.zeros(1)
    out["ih_max_grad"] = grad.max()
    out["ih_max_grad_g"] = values[np.argmax(grad)]
    out["ih_min_grad"] = grad.min()
    out["ih_min_grad_g"] = values[np.argmin(grad)]
    return out


def intensity_volume_histogram(ivh: dict) -> dict:
    """IBSI IVH features; ``ivh`` from the processing step (values, grid, min, max)."""
    v = np.sort(np.asarray(ivh["values"], dtype=np.float64))
    grid = np.asarray(ivh["grid"], dtype=np.float64)
    lo, hi = ivh["min"], ivh["max"]
    n = v.size
    # fraction of voxels with intensity >= grid value
    nu = 1.0 - np.searchsorted(v, grid, side="left") / n
    gamma = (grid - lo) / (hi - lo) if hi > lo else np.zeros_like(grid)

    def v_at(x):  # volume fraction at the smallest intensity with gamma >= x
        idx = np.nonzero(gamma >= x - 1e-12)[0]
        return nu[idx[0]] if idx.size else 0.0

    def i_at(x):  # smallest intensity whose volume fraction is at most x
        idx = np.nonzero(nu <= x + 1e-12)[0]
        return grid[idx[0]] if idx.size else grid[-1] + (grid[1] - grid[0] if grid.size > 1 else 1.0)

    out = {"ivh_v10": v_at(0.10), "ivh_v90": v_at(0.90), "ivh_i10": i_at(0.10), "ivh_i90": i_at(0.90)}
    out["ivh_diff_v10_v90"] = out["ivh_v10"] - out["ivh_v90"]
    out["ivh_diff_i10_i90"] = out["ivh_i10"] - out["ivh_i90"]
    out["ivh_auc"] = float(np.trapezoid(nu, gamma)) if grid.size > 1 else 0.0
    return out
