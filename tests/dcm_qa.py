"""Comparison with dcm2niix's reference outputs of the neurolabusc ``dcm_qa*`` collections.

One coordinate system: every voxel centre is mapped to world **RAS mm** through its
NIfTI's sform (qform when the sform code is 0), and images are compared there, never by
raw affines (voxel order may differ: dcm2niix flips the rows, we keep the DICOM order).

The collections (``../shared/data/dcm_qa/<name>``, BSD-2-Clause, Chris Rorden et al.; see
each folder's LICENSE and README.md) hold the DICOM input in ``In/`` and dcm2niix's
output in ``Ref/``.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from biomarkers.dicom.ingest import IngestSettings, run_ingest

WORLD_ATOL_MM = 0.05
VALUE_ATOL = 0.5
BVEC_ATOL = 1e-4


def voxel_to_ras(img) -> np.ndarray:
    """The 4x4 matrix mapping voxel indices (i, j, k, 1) to RAS mm (sform, else qform)."""
    h = img.header
    return h.get_sform() if int(h["sform_code"]) > 0 else h.get_qform()


def axis_map(ours, ref) -> tuple[tuple[int, ...], tuple[bool, ...]]:
    """How ``ours``' spatial axes lie on ``ref``'s, from world positions only.

    Asserts both grids cover the same world points: the eight corner voxel centres of
    ``ours`` equal the corner centres of ``ref`` within WORLD_ATOL_MM (as sets: the voxel
    orders may differ), and every index step of ``ours`` is one whole index step of ``ref``.
    Returns ``(perm, flip)``: our axis ``a`` runs along reference axis ``perm[a]``,
    reversed when ``flip[a]``.
    """
    a, b = voxel_to_ras(ours), voxel_to_ras(ref)
    sa, sb = ours.shape[:3], ref.shape[:3]
    corners = lambda s: np.array(list(itertools.product(*[(0, n - 1) for n in s])), float)  # noqa: E731
    wa = corners(sa) @ a[:3, :3].T + a[:3, 3]
    wb = corners(sb) @ b[:3, :3].T + b[:3, 3]
    d = np.linalg.norm(wa[:, None, :] - wb[None, :, :], axis=2)
    assert np.all(d.min(axis=1) <= WORLD_ATOL_MM), (
        f"corner voxel centres differ from the reference by up to {d.min(axis=1).max():.4f} mm (RAS)")
    m = np.linalg.inv(b) @ a  # our index -> reference index
    r = m[:3, :3]
    perm = tuple(int(np.argmax(np.abs(r[:, c]))) for c in range(3))
    assert sorted(perm) == [0, 1, 2] and np.allclose(np.abs(r), np.eye(3)[list(perm)].T, atol=1e-3), (
        f"voxel axes are not a permutation of the reference's:\n{np.round(r, 4)}")
    flip = tuple(bool(r[perm[c], c] < 0) for c in range(3))
    assert tuple(sa[c] for c in range(3)) == tuple(sb[perm[c]] for c in range(3)), (sa, sb, perm)
    return perm, flip


def on_our_axes(ref_arr: np.ndarray, perm, flip) -> np.ndarray:
    """The reference voxels reordered onto our axes (no resampling)."""
    order = list(perm) + list(range(3, ref_arr.ndim))
    out = np.transpose(ref_arr, order)
    for ax, f in enumerate(flip):
        if f:
            out = np.flip(out, axis=ax)
    return out


def assert_reproduces(ours_path: Path, ref_path: Path) -> tuple[tuple[int, ...], tuple[bool, ...]]:
    """Same shape (4-D where the reference is 4-D), same world geometry, voxels within VALUE_ATOL."""
    ours, ref = nib.load(str(ours_path)), nib.load(str(ref_path))
    ref_shape = ref.shape if len(ref.shape) == 3 or ref.shape[3] > 1 else ref.shape[:3]
    assert len(ours.shape) == len(ref_shape), f"{ours_path.name}: shape {ours.shape}, reference {ref.shape}"
    perm, flip = axis_map(ours, ref)
    a = np.asanyarray(ours.dataobj).astype(np.float64)
    b = on_our_axes(np.asanyarray(ref.dataobj).astype(np.float64).reshape(ref_shape), perm, flip)
    assert a.shape == b.shape, (a.shape, b.shape)
    diff = np.abs(a - b)
    assert diff.max() <= VALUE_ATOL, (
        f"{ours_path.name}: voxels differ from {ref_path.name} by up to {diff.max()} "
        f"({int((diff > VALUE_ATOL).sum())} voxels over {VALUE_ATOL})")
    return perm, flip


def bvec_world(bvec: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """FSL bvecs (3 x T, voxel axes, first axis negated when det(affine) > 0) -> RAS unit vectors (T x 3)."""
    v = np.asarray(bvec, float).T.copy()
    rot = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    if np.linalg.det(affine[:3, :3]) > 0:
        v[:, 0] *= -1
    return v @ rot.T


def read_table(path: Path) -> np.ndarray:
    return np.loadtxt(path, ndmin=2)


def ingest(src: Path, out: Path) -> pd.DataFrame:
    """``biomarkers ingest`` of one input folder (serial, no index cache); the image rows of its manifest."""
    os.environ.setdefault("BIOMARKERS_SECRET", "test-secret-0123456789abcdef")
    run_ingest(src, out, IngestSettings(index_cache="off"), executor="serial")
    df = pd.read_parquet(out / "manifest.parquet")
    return df[df.kind == "image"].reset_index(drop=True)


def ingest_each(root: Path, folders, tmp_path_factory, name: str) -> dict:
    """Each input folder ``root/<folder>`` ingested on its own, as one series: folder ->
    (output folder, its one image row). Asserts one image row per folder."""
    out = {}
    for folder in folders:
        dest = tmp_path_factory.mktemp(name) / "out"
        rows = ingest(root / folder, dest)
        assert len(rows) == 1, rows.to_string()
        out[folder] = (dest, rows.iloc[0])
    return out
