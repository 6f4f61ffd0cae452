"""The overlay is where the geometry puts it: a cube mask at known voxel indices on real shared
series (STS CT and PET, stored LPS, plus the same CT re-stored in RAS order) must show its
contour, in each of the four thumbnails, at the position its voxel corners have in patient
space under the documented radiological convention (patient left on image right, anterior up
in axial, superior up in coronal and sagittal, sagittal anterior on the left). A mask flipped
left-right must fail the same check.

Expected positions come from nibabel's affine of the file (RAS -> LPS by negating x and y) and
the convention as written in :mod:`biomarkers.qc.display`, not from the renderer.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from biomarkers.qc.render import MASK_VIEWS, png_chunks, render_item, roi_colour

TOL_PX = 1.6  # resampling to square pixels moves an edge by at most about one output pixel


def _lps_box(affine: np.ndarray, lo, hi) -> tuple[np.ndarray, np.ndarray]:
    """LPS bounding box (mm) of the voxel block lo..hi-1 (voxel edges, i.e. indices -0.5 .. +0.5)."""
    corners = np.array(list(itertools.product(*[(a - 0.5, b - 0.5) for a, b in zip(lo, hi)])))
    ras = nib.affines.apply_affine(affine, corners)
    lps = ras * np.array([-1.0, -1.0, 1.0])
    return lps.min(axis=0), lps.max(axis=0)


def expected_rect(affine, shape, lo, hi, view: str, w: int, h: int) -> tuple[float, float, float, float]:
    """(col0, col1, row0, row1) in thumbnail pixels of the cube lo..hi under the documented convention."""
    fmin, fmax = _lps_box(affine, (0, 0, 0), shape)
    cmin, cmax = _lps_box(affine, lo, hi)
    x = lambda v: (v - fmin[0]) / (fmax[0] - fmin[0])  # noqa: E731 - columns: patient right -> left (LPS x up)
    y = lambda v: (v - fmin[1]) / (fmax[1] - fmin[1])  # noqa: E731 - anterior -> posterior (LPS y up)
    zd = lambda v: (fmax[2] - v) / (fmax[2] - fmin[2])  # noqa: E731 - rows: superior -> inferior
    if view in ("axial", "axial_max"):
        return x(cmin[0]) * w, x(cmax[0]) * w, y(cmin[1]) * h, y(cmax[1]) * h
    if view == "coronal":
        return x(cmin[0]) * w, x(cmax[0]) * w, zd(cmax[2]) * h, zd(cmin[2]) * h
    if view == "sagittal":
        return y(cmin[1]) * w, y(cmax[1]) * w, zd(cmax[2]) * h, zd(cmin[2]) * h
    raise ValueError(view)


def contour_pixels(png: Path) -> np.ndarray:
    """(row, col) of the coloured (non-grey) pixels that are not the yellow annotation."""
    rgb = np.asarray(Image.open(png).convert("RGB")).astype(int)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    coloured = (np.abs(r - g) > 30) | (np.abs(g - b) > 30) | (np.abs(r - b) > 30)
    yellow = (r > 200) & (g > 180) & (b < 80)
    return np.argwhere(coloured & ~yellow)


def check_overlay(thumbs: Path, key: str, affine, shape, lo, hi) -> list[str]:
    """Problems found (empty: every view's contour is where the geometry puts it)."""
    problems = []
    for view in MASK_VIEWS:
        png = thumbs / f"{key}_{view}.png"
        w, h = Image.open(png).size
        c0, c1, r0, r1 = expected_rect(affine, shape, lo, hi, view, w, h)
        px = contour_pixels(png)
        if len(px) == 0:
            problems.append(f"{view}: no contour")
            continue
        rows, cols = px[:, 0] + 0.5, px[:, 1] + 0.5  # pixel centres
        got = (cols.min() - 0.5, cols.max() + 0.5, rows.min() - 0.5, rows.max() + 0.5)
        if not np.allclose(got, (c0, c1, r0, r1), atol=TOL_PX):
            problems.append(f"{view}: contour box {np.round(got, 1)} != expected {np.round((c0, c1, r0, r1), 1)}")
            continue
        # every contour pixel lies on the expected rectangle's outline
        d = np.minimum.reduce([np.abs(cols - c0), np.abs(cols - c1), np.abs(rows - r0), np.abs(rows - r1)])
        if d.max() > TOL_PX:
            problems.append(f"{view}: {int((d > TOL_PX).sum())} contour pixels off the cube's outline")
    return problems


def _render_cube(tmp: Path, image: Path, lo, hi, flip: bool = False, name: str = "cube"):
    img = nib.load(str(image))
    shape = img.shape[:3]
    mask = np.zeros(shape, np.uint8)
    mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = 1
    if flip:
        mask = mask[::-1, :, :].copy()  # left-right mistake of a converter, same header
    mpath = tmp / f"{name}.nii.gz"
    nib.save(nib.Nifti1Image(mask, img.affine), str(mpath))
    thumbs = tmp / "thumbs"
    res = render_item({"image": str(image), "modality": "CT" if "CT" in image.name else "PT", "thumbs": str(thumbs),
                       "settings": {"size": 192}, "image_key": None,
                       "masks": [{"key": name, "path": str(mpath), "colour": list(roi_colour("GTV"))}]})
    assert "error" not in res[name], res[name]
    return thumbs, img.affine, shape


def _ras_copy(src: Path, dest: Path) -> Path:
    """The same image stored in RAS voxel order (i towards R, j towards A): other bytes, same patient space."""
    img = nib.as_closest_canonical(nib.load(str(src)))
    assert nib.aff2axcodes(img.affine) == ("R", "A", "S")
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj), img.affine), str(dest))
    return dest


CASES = {  # series, cube lo, hi (voxel indices of the stored array), off-centre in every axis
    "CT": ("STS_001/CT_image.nii.gz", (30, 120, 20), (60, 150, 32)),
    "PET": ("STS_002/PET_image.nii.gz", (5, 15, 10), (12, 22, 21)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_cube_contour_where_geometry_puts_it(case, shared_data, tmp_path):
    rel, lo, hi = CASES[case]
    image = shared_data / "sts" / "nifti" / rel
    assert nib.aff2axcodes(nib.load(str(image)).affine) == ("L", "P", "S")  # stored LPS (as DICOM)
    thumbs, aff, shape = _render_cube(tmp_path, image, lo, hi)
    assert check_overlay(thumbs, "cube", aff, shape, lo, hi) == []
    for view in MASK_VIEWS:
        assert png_chunks((thumbs / f"cube_{view}.png").read_bytes()) == ["IHDR", "PLTE", "IDAT", "IEND"]


def test_flipped_mask_fails_the_check(shared_data, tmp_path):
    rel, lo, hi = CASES["CT"]
    image = shared_data / "sts" / "nifti" / rel
    thumbs, aff, shape = _render_cube(tmp_path, image, lo, hi, flip=True, name="flipped")
    problems = check_overlay(thumbs, "flipped", aff, shape, lo, hi)
    # the cube moved to the other side: axial, coronal and the largest-area slice disagree left-right
    assert {p.split(":")[0] for p in problems} >= {"axial", "coronal", "axial_max"}, problems


def test_same_patient_space_same_picture_whatever_the_storage_order(shared_data, tmp_path):
    """The CT re-stored RAS (array reversed along i and j, affine adjusted) shows the cube where the LPS file does."""
    rel, lo, hi = CASES["CT"]
    src = shared_data / "sts" / "nifti" / rel
    a, b = tmp_path / "lps", tmp_path / "ras"
    a.mkdir()
    b.mkdir()
    thumbs_a, aff, shape = _render_cube(a, src, lo, hi)
    ras = _ras_copy(src, b / "CT_image.nii.gz")
    # the same cube in the RAS copy's indices: i and j reversed
    lo_r = (shape[0] - hi[0], shape[1] - hi[1], lo[2])
    hi_r = (shape[0] - lo[0], shape[1] - lo[1], hi[2])
    thumbs_b, aff_b, shape_b = _render_cube(b, ras, lo_r, hi_r)
    assert check_overlay(thumbs_b, "cube", aff_b, shape_b, lo_r, hi_r) == []
    for view in MASK_VIEWS:
        pa = np.asarray(Image.open(thumbs_a / f"cube_{view}.png").convert("RGB"))
        pb = np.asarray(Image.open(thumbs_b / f"cube_{view}.png").convert("RGB"))
        assert pa.shape == pb.shape
        assert np.mean(np.any(pa != pb, axis=-1)) < 0.01, view  # same picture (resampling may differ on a few pixels)
