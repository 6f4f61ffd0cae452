"""Every IBSI 1 feature family of a prepared image, with the texture aggregations (2D, 2.5D, 3D).

Input: a :class:`~biomarkers.features.ibsi.processing.Prepared` (arrays (z, y, x), spacing
(dz, dy, dx) mm). Output: ``{IBSI tag: value}``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .families import intensity, morphology, texture
from .processing import IbsiSettings, Prepared, prepare

def _nanmean(x) -> float:
    """Mean over the matrices of an aggregation, ignoring undefined (NaN) values; NaN if none."""
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else float("nan")


def _mean(x: np.ndarray, valid: np.ndarray) -> float:
    return _nanmean(np.asarray(x, dtype=np.float64)[valid])


def _cm(prep: Prepared, aggs) -> dict:
    out: dict = {}
    ng = prep.n_levels
    need3 = "3D" in aggs
    need2 = "2D" in aggs or "2.5D" in aggs
    if not (need2 or need3):
        return out

    def emit(P, suffix):
        valid = P.sum(axis=(1, 2)) > 0
        f = texture.glcm_features(P[valid], ng)
        for name, v in f.items():
            out[f"cm_{name}_{suffix}"] = _nanmean(v)

    if need3:
        per_dir = texture.glcm_matrices(prep.levels, ng, texture.DIRS_3D, per_slice=False)[:, 0]
        emit(per_dir, "3D_avg")
        emit(per_dir.sum(axis=0, keepdims=True), "3D_comb")
    if need2:
        M2 = texture.glcm_matrices(prep.levels, ng, texture.DIRS_2D, per_slice=True)
        if "2D" in aggs:
            emit(M2.reshape(-1, ng, ng), "2D_avg")
            emit(M2.sum(axis=0), "2D_comb")
        if "2.5D" in aggs:
            emit(M2.sum(axis=1), "2_5D_avg")
            emit(M2.sum(axis=(0, 1))[None], "2_5D_comb")
    return out


def _emit_sparse(out, prefix, names, k, i, j, nvox, suffix):
    nvox = np.asarray(nvox, dtype=np.float64)
    f = texture.size_features(k, i, j, None, nvox, names)
    counts = np.bincount(np.asarray(k, np.int64), minlength=len(nvox))
    valid = counts > 0
    for name, v in f.items():
        out[f"{prefix}_{name}_{suffix}"] = _mean(v, valid)


def _rlm(prep: Prepared, aggs) -> dict:
    out: dict = {}
    L = prep.levels
    nz = L.shape[0]
    n = float((L > 0).sum())
    nslice = (L > 0).sum(axis=(1, 2)).astype(np.float64)
    if "3D" in aggs:
        parts = [texture.runs(L, d) for d in texture.DIRS_3D]
        lev = np.concatenate([p[0] for p in parts])
        ln = np.concatenate([p[1] for p in parts])
        kd = np.concatenate([np.full(p[0].size, t) for t, p in enumerate(parts)])
        _emit_sparse(out, "rlm", texture.RLM_NAMES, kd, lev, ln, np.full(13, n), "3D_avg")
        _emit_sparse(out, "rlm", texture.RLM_NAMES, np.zeros_like(kd), lev, ln, [13 * n], "3D_comb")
    if "2D" in aggs or "2.5D" in aggs:
        parts = [texture.runs(L, d) for d in texture.DIRS_2D]
        lev = np.concatenate([p[0] for p in parts])
        ln = np.concatenate([p[1] for p in parts])
        z = np.concatenate([p[2] for p in parts])
        kd = np.concatenate([np.full(p[0].size, t) for t, p in enumerate(parts)])
        if "2D" in aggs:
            _emit_sparse(out, "rlm", texture.RLM_NAMES, kd * nz + z, lev, ln, np.tile(nslice, 4), "2D_avg")
            _emit_sparse(out, "rlm", texture.RLM_NAMES, z, lev, ln, 4 * nslice, "2D_comb")
        if "2.5D" in aggs:
            _emit_sparse(out, "rlm", texture.RLM_NAMES, kd, lev, ln, np.full(4, n), "2_5D_avg")
            _emit_sparse(out, "rlm", texture.RLM_NAMES, np.zeros_like(kd), lev, ln, [4 * n], "2_5D_comb")
    return out


def _zones(prep: Prepared, aggs, families, distance_mask: str = "morphological") -> dict:
    out: dict = {}
    L = prep.levels
    n = float((L > 0).sum())
    nslice = (L > 0).sum(axis=(1, 2)).astype(np.float64)
    # IBSI: distances to the border of the morphological mask (holes left by resegmentation
    # are not borders); the CT phantom configurations confirm it
    dmask = prep.morph_mask if distance_mask == "morphological" else prep.int_mask
    want_dzm = "dzm" in families
    if "3D" in aggs:
        dist = texture.distance_map(dmask, two_d=False) if want_dzm else None
        lev, size, z, dmin = texture.zones(L, two_d=False, dist=dist)
        k0 = np.zeros_like(lev)
        if "szm" in families:
            _emit_sparse(out, "szm", texture.SZM_NAMES, k0, lev, size, [n], "3D")
        if want_dzm:
            _emit_sparse(out, "dzm", texture.DZM_NAMES, k0, lev, dmin, [n], "3D")
    if "2D" in aggs or "2.5D" in aggs:
        dist = texture.distance_map(dmask, two_d=True) if want_dzm else None
        lev, size, z, dmin = texture.zones(L, two_d=True, dist=dist)
        for fam, names, j in (("szm", texture.SZM_NAMES, size), ("dzm", texture.DZM_NAMES, dmin)):
            if fam not in families:
                continue
            if "2D" in aggs:
                _emit_sparse(out, fam, names, z, lev, j, nslice, "2D")
            if "2.5D" in aggs:
                _emit_sparse(out, fam, names, np.zeros_like(lev), lev, j, [n], "2_5D")
    return out


def _ngt(prep: Prepared, aggs) -> dict:
    out: dict = {}
    L, ng = prep.levels, prep.n_levels
    nz = L.shape[0]

    def emit(g, diff, k, K, suffix):
        idx = k * ng + (g - 1)
        cnt = np.bincount(idx, minlength=K * ng).reshape(K, ng).astype(np.float64)
        s = np.bincount(idx, weights=diff, minlength=K * ng).reshape(K, ng)
        valid = cnt.sum(axis=1) > 0
        f = texture.ngtdm_features(cnt[valid], s[valid])
        for name, v in f.items():
            out[f"ngt_{name}_{suffix}"] = _nanmean(v)

    if "3D" in aggs:
        g, diff, z = texture.ngtdm_terms(L, two_d=False)
        emit(g, diff, np.zeros_like(g), 1, "3D")
    if "2D" in aggs or "2.5D" in aggs:
        g, diff, z = texture.ngtdm_terms(L, two_d=True)
        if "2D" in aggs:
            emit(g, diff, z, nz, "2D")
        if "2.5D" in aggs:
            emit(g, diff, np.zeros_like(g), 1, "2_5D")
    return out


def _ngl(prep: Prepared, aggs) -> dict:
    out: dict = {}
    L = prep.levels
    n = float((L > 0).sum())
    nslice = (L > 0).sum(axis=(1, 2)).astype(np.float64)
    if "3D" in aggs:
        g, dep, z = texture.ngldm_terms(L, two_d=False)
        _emit_sparse(out, "ngl", texture.NGL_NAMES, np.zeros_like(g), g, dep, [n], "3D")
    if "2D" in aggs or "2.5D" in aggs:
        g, dep, z = texture.ngldm_terms(L, two_d=True)
        if "2D" in aggs:
            _emit_sparse(out, "ngl", texture.NGL_NAMES, z, g, dep, nslice, "2D")
        if "2.5D" in aggs:
            _emit_sparse(out, "ngl", texture.NGL_NAMES, np.zeros_like(g), g, dep, [n], "2_5D")
    return out


def compute_prepared(prep: Prepared, settings: IbsiSettings) -> dict[str, float]:
    """All IBSI features (tag -> value) of an already prepared image."""
    fam = set(settings.families)
    aggs = set(settings.aggregation)
    out: dict[str, Any] = {}
    if "diagnostics" in fam:
        out.update(prep.diagnostics)
    if "morph" in fam:
        out.update(morphology.morphology(prep.image, prep.morph_mask, prep.int_mask, prep.spacing))
    if "loc" in fam:
        out.update(morphology.local_intensity(prep.full_image, prep.full_int_mask, prep.spacing))
    if "stat" in fam:
        out.update(intensity.statistics(prep.image[prep.int_mask]))
    if "ih" in fam:
        out.update(intensity.intensity_histogram(prep.levels[prep.int_mask]))
    if "ivh" in fam:
        out.update(intensity.intensity_volume_histogram(prep.ivh))
    if "cm" in fam:
        out.update(_cm(prep, aggs))
    if "rlm" in fam:
        out.update(_rlm(prep, aggs))
    if "szm" in fam or "dzm" in fam:
        out.update(_zones(prep, aggs, fam, settings.distance_mask))
    if "ngt" in fam:
        out.update(_ngt(prep, aggs))
    if "ngl" in fam:
        out.update(_ngl(prep, aggs))
    return {k: float(v) for k, v in out.items()}


def compute(image: np.ndarray, mask: np.ndarray, spacing, settings: IbsiSettings,
            diagnostics: bool | None = None) -> dict[str, float]:
    """IBSI features of ``image``/``mask`` arrays (z, y, x); ``spacing`` (dz, dy, dx) in mm.

    ``diagnostics`` (default: ``settings.diagnostics``) adds the IBSI diagnostic values.
    """
    if diagnostics is None:
        diagnostics = settings.diagnostics
    if "diagnostics" not in settings.families:
        diagnostics = False
    prep = prepare(image, mask, tuple(float(s) for s in spacing), settings, diagnostics=diagnostics)
    return compute_prepared(prep, settings)
