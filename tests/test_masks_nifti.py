"""NIfTI masks supplied beside the DICOM: grid check, nearest resampling, clear reasons."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from biomarkers.dicom.masks import MaskSettings, find_nifti_masks, masks_from_nifti, missing_rois
from biomarkers.geometry import Grid, nifti_image, read_nifti

from test_masks_rtstruct import stack_from_dir


@pytest.fixture(scope="module")
def layout(shared_data, tmp_path_factory):
    """SRC/P1/PET/image/*.dcm (symlinks to the shared STS_002 PET) + a free folder for masks."""
    src = tmp_path_factory.mktemp("src")
    img_dir = src / "P1" / "PET" / "image"
    img_dir.mkdir(parents=True)
    for f in (shared_data / "sts" / "dicom" / "STS_002" / "PET" / "image").glob("*.dcm"):
        (img_dir / f.name).symlink_to(f)
    (src / "P1" / "PET" / "mask").mkdir()
    ref_path = shared_data / "sts" / "nifti" / "STS_002" / "PET_mask.nii.gz"
    ref, ref_grid = read_nifti(ref_path)
    return src, stack_from_dir(img_dir, key="P1/PET"), (ref > 0).astype(np.uint8), ref_grid, ref_path


def _save(arr: np.ndarray, grid: Grid, path: Path) -> Path:
    nib.save(nifti_image(arr.astype(np.uint8), grid), str(path))
    return path


def test_reference_masks_found_by_pattern_and_on_grid(layout, shared_data):
    src, stack, ref, ref_grid, ref_path = layout
    mask_dir = src / "P1" / "PET" / "mask"
    shutil.copy(ref_path, mask_dir / "GTV Mass.nii.gz")
    settings = MaskSettings(nifti_pattern="../mask/*.nii.gz", rois={"GTV_Mass": []})
    paths = find_nifti_masks(stack, settings)
    assert [p.name for p in paths] == ["GTV Mass.nii.gz"]
    assert find_nifti_masks(stack, MaskSettings(nifti_pattern="{patient_dir}/mask/*.nii*")) == paths
    (r,) = masks_from_nifti(stack, paths, settings)
    assert r.status == "converted" and r.roi == "GTV_Mass" and r.source_kind == "NIFTI"
    assert np.array_equal(r.array, ref) and r.array.dtype == np.uint8
    assert missing_rois([r], settings) == [] and missing_rois([], settings) == ["GTV_Mass"]
    # written the way ingest writes it: header geometry identical to the image's
    like = nib.load(str(shared_data / "sts" / "nifti" / "STS_002" / "PET_image.nii.gz"))
    out = nifti_image(r.array, stack.grid, like=like)
    assert np.array_equal(out.affine, like.affine) and out.shape == like.shape
    (mask_dir / "GTV Mass.nii.gz").unlink()


def test_wrong_shape_and_wrong_position_fail_with_reason_without_stopping(layout, tmp_path):
    src, stack, ref, ref_grid, _ = layout
    good = _save(ref, ref_grid, tmp_path / "GTV_Mass.nii.gz")
    short_grid = Grid((ref.shape[0], ref.shape[1], ref.shape[2] - 1), ref_grid.spacing, ref_grid.origin, ref_grid.direction)
    short = _save(ref[:, :, :-1], short_grid, tmp_path / "Cropped.nii.gz")
    moved_grid = Grid(ref_grid.shape, ref_grid.spacing, (ref_grid.origin[0] + 5.0, *ref_grid.origin[1:]), ref_grid.direction)
    moved = _save(ref, moved_grid, tmp_path / "Moved.nii.gz")
    res = {r.source_name: r for r in masks_from_nifti(stack, [short, good, moved], MaskSettings())}
    assert res["GTV_Mass"].status == "converted" and np.array_equal(res["GTV_Mass"].array, ref)
    r = res["Cropped"]
    assert r.status == "failed" and r.array is None
    assert "not on the image grid" in r.reason and f"shape {short_grid.shape}" in r.reason and "resample: nearest" in r.reason
    r = res["Moved"]
    assert r.status == "failed" and "origin" in r.reason


def test_nearest_resampling_option(layout, tmp_path):
    src, stack, ref, ref_grid, _ = layout
    # the same mask on a grid 3x finer in-plane: original voxel centres fall on fine voxel centres
    fine = np.repeat(np.repeat(ref, 3, axis=0), 3, axis=1)
    sp = ref_grid.spacing
    d = ref_grid.direction_matrix
    origin = np.asarray(ref_grid.origin) - d[:, 0] * sp[0] / 3 - d[:, 1] * sp[1] / 3
    fine_grid = Grid(fine.shape, (sp[0] / 3, sp[1] / 3, sp[2]), tuple(origin), ref_grid.direction)
    path = _save(fine, fine_grid, tmp_path / "fine.nii.gz")
    (r,) = masks_from_nifti(stack, [path], MaskSettings())
    assert r.status == "failed" and "shape" in r.reason
    (r,) = masks_from_nifti(stack, [path], MaskSettings(resample="nearest"))
    assert r.status == "converted" and "resampled" in r.flags
    assert r.array.shape == stack.grid.shape and np.array_equal(r.array, ref)


def test_unmatched_name_empty_and_unreadable(layout, tmp_path):
    src, stack, ref, ref_grid, _ = layout
    a = _save(ref, ref_grid, tmp_path / "Heart.nii.gz")
    e = _save(np.zeros_like(ref), ref_grid, tmp_path / "GTV_Mass_PET.nii.gz")
    bad = tmp_path / "GTV_Other.nii.gz"
    bad.write_bytes(b"not a nifti")
    res = {r.source_name: r for r in masks_from_nifti(stack, [a, e, bad], MaskSettings(rois={"GTV_Mass": [], "GTV_Other": []}))}
    assert res["Heart"].status == "skipped" and "matches no configured ROI" in res["Heart"].reason
    assert res["GTV_Mass_PET"].status == "converted" and res["GTV_Mass_PET"].flags == ["empty"]
    assert res["GTV_Other"].status == "failed" and "cannot read" in res["GTV_Other"].reason
