"""Gantry-tilted CT, built with pydicom from the shared STS_002 CT series, against dcm2niix.

The case: every slice shifted in its own plane by ``k * shift`` voxels along the rows
(ImagePositionPatient sheared, IOP unchanged) with the matching GantryDetectorTilt. The
converter resamples onto an orthogonal grid widened to hold every slice (``biomarkers.dicom.tilt``),
as dcm2niix does for its ``_Tilt`` output:

* whole-voxel shifts (+1 and -1 voxel per slice): same shape, world geometry (RAS, 0.05 mm)
  and voxels (0.5) as dcm2niix's ``*_Tilt_1.nii``;
* half-voxel shift: same shape and geometry as dcm2niix; voxels equal the hand computation
  (linear interpolation between two rows, rounded). dcm2niix anchors the last slice on the
  widened grid's edge, so when the total shift is not whole (23.5 voxels here) its voxels sit
  ``ceil(T) - T`` = 0.5 voxel from where its own sform puts them: shown, not copied.

dcm2niix computes the source row of each output row in float32: with a whole shift it can
come out a hair below the whole row and be truncated, so some voxels of some slices come from
the neighbouring row (parts of 4 of 48 slices in the +1 case). The whole-voxel comparison is
therefore exact slice by slice, except at most 10 % of the slices, in which every voxel equals
ours or ours one row away.

Needs the ``dcm2niix`` binary (PyPI package ``dcm2niix``, in the ``bench`` extras).
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.uid import generate_uid

from biomarkers.dicom.ingest import IngestSettings, run_ingest

from dcm_qa import axis_map, on_our_axes

CT = "STS_002/CT"


def _dcm2niix() -> str:
    exe = shutil.which("dcm2niix") or str(Path(sys.executable).with_name("dcm2niix"))
    if not os.access(exe, os.X_OK):
        pytest.skip("dcm2niix binary not installed (pip install 'dcm2niix>=1.0.20240202', the bench extras)")
    return exe


@pytest.fixture(scope="module")
def ct(shared_data) -> list[pydicom.Dataset]:
    ds = [pydicom.dcmread(p) for p in sorted((shared_data / "sts" / "dicom" / CT / "image").iterdir())]
    return sorted(ds, key=lambda d: float(d.ImagePositionPatient[2]))


def _tilted(ct, dest: Path, shift: float) -> Path:
    """The series with slice k moved ``k * shift`` rows (LPS +y: the column direction)."""
    dest.mkdir(parents=True)
    series = generate_uid()
    dz = float(ct[1].ImagePositionPatient[2]) - float(ct[0].ImagePositionPatient[2])
    for k, d in enumerate(ct):
        c = copy.deepcopy(d)
        c.SeriesInstanceUID = series
        c.SOPInstanceUID = c.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        dy = shift * float(c.PixelSpacing[0])
        p = [float(x) for x in c.ImagePositionPatient]
        c.ImagePositionPatient = [p[0], p[1] + k * dy, p[2]]
        c.GantryDetectorTilt = f"{math.degrees(math.atan(dy / dz)):.10g}"
        c.save_as(dest / f"{k:03d}.dcm", enforce_file_format=True)
    return dest


def _convert(src: Path, out: Path):
    run_ingest(src, out, IngestSettings(index_cache="off"), executor="serial")
    df = pd.read_parquet(out / "manifest.parquet")
    row = df[df.kind == "image"].iloc[0]
    assert row.status == "converted", row.reason
    return row, out / row.path


def _reference(src: Path, out: Path) -> Path:
    out.mkdir()
    subprocess.run([_dcm2niix(), "-z", "n", "-f", "ref", "-o", str(out), str(src)], check=True,
                   capture_output=True, timeout=120)
    return out / "ref_Tilt_1.nii"


@pytest.mark.parametrize("shift", [1.0, -1.0])
def test_whole_voxel_tilt_reproduces_dcm2niix(shift, ct, tmp_path):
    src = _tilted(ct, tmp_path / "src", shift)
    ref = _reference(src, tmp_path / "ref")
    row, ours = _convert(src, tmp_path / "out")
    assert row["shape"] == f"{ct[0].Columns} x {ct[0].Rows + len(ct) - 1} x {len(ct)}"
    assert "gantry_tilt" in row.qc_flags and "oblique" not in row.qc_flags
    ours_img, ref_img = nib.load(ours), nib.load(ref)
    perm, flip = axis_map(ours_img, ref_img)  # same shape and world corners (RAS, 0.05 mm)
    a = np.asanyarray(ours_img.dataobj).astype(np.float64)
    b = on_our_axes(np.asanyarray(ref_img.dataobj).astype(np.float64), perm, flip)
    off = [k for k in range(a.shape[2]) if np.abs(a[..., k] - b[..., k]).max() > 0.5]
    n_rows = int(ct[0].Rows)
    for k in off:  # dcm2niix's float32 rounding: voxels taken from the next row, nothing else
        first = k if shift > 0 else len(ct) - 1 - k  # our row of the slice's first row
        j = np.arange(first + 1, first + n_rows - 1)  # inside rows (dcm2niix may drop an edge row)
        near = np.min([np.abs(a[:, j + d, k] - b[:, j, k]) for d in (0, 1, -1)], axis=0)
        assert near.max() <= 0.5, f"slice {k}: dcm2niix's voxels are not ours or a neighbour row's"
    assert len(off) <= 0.1 * a.shape[2], f"slices differing from dcm2niix: {off}"
    side = json.loads(ours.with_name(ours.name.replace(".nii.gz", ".json")).read_text())
    dz = float(ct[1].ImagePositionPatient[2]) - float(ct[0].ImagePositionPatient[2])
    tilt = math.degrees(math.atan(abs(shift) * float(ct[0].PixelSpacing[0]) / dz))
    assert side["qc"]["gantry_tilt_resampled_deg"] == pytest.approx(tilt, abs=1e-3)  # from the positions
    aff = nib.load(ours).affine[:3, :3]
    assert np.allclose(aff.T @ aff, np.diag(np.diag(aff.T @ aff)), atol=1e-9), "the output grid is orthogonal"


def test_half_voxel_tilt_geometry_as_dcm2niix_voxels_by_hand(ct, tmp_path):
    src = _tilted(ct, tmp_path / "src", 0.5)
    ref_path = _reference(src, tmp_path / "ref")
    row, ours_path = _convert(src, tmp_path / "out")
    ours, ref = nib.load(ours_path), nib.load(ref_path)
    perm, flip = axis_map(ours, ref)  # same shape and world corners (0.05 mm)
    got = np.asanyarray(ours.dataobj).astype(np.float64)  # [i = column, j = row, k]
    n_rows, n_k = int(ct[0].Rows), len(ct)
    lowest = min(float(d.pixel_array.min()) * float(d.RescaleSlope) + float(d.RescaleIntercept) for d in ct)
    want = np.full(got.shape, lowest)
    for k, d in enumerate(ct):  # slice k: output row j = r + k/2 (origin = slice 0's position)
        hu = (d.pixel_array.astype(np.float64) * float(d.RescaleSlope) + float(d.RescaleIntercept)).T
        for j in range(got.shape[1]):
            r = j - 0.5 * k
            lo = math.floor(r)
            if r == lo and 0 <= lo < n_rows:
                want[:, j, k] = hu[:, lo]
            elif 0 <= lo and lo + 1 < n_rows:
                want[:, j, k] = np.rint(0.5 * hu[:, lo] + 0.5 * hu[:, lo + 1])
    np.testing.assert_array_equal(got, want)
    # dcm2niix: the same values half a voxel further along j, as its anchoring predicts
    theirs = on_our_axes(np.asanyarray(ref.dataobj).astype(np.float64), perm, flip)
    total = 0.5 * (n_k - 1)
    assert math.ceil(total) - total == 0.5
    k = n_k - 1  # the last slice: whole-voxel shift 24 in dcm2niix, 23.5 here
    np.testing.assert_array_equal(theirs[:, 24:24 + n_rows, k], (ct[k].pixel_array.T * float(ct[k].RescaleSlope)
                                                                  + float(ct[k].RescaleIntercept)))
