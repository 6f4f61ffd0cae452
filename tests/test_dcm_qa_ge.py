"""``dcm_qa_ge`` (GE DWI with bval/bvec, 3-D MPRAGE, multi-phase fMRI) against dcm2niix's ``Ref/``.

Collection: neurolabusc/dcm_qa_ge (BSD-2-Clause, Chris Rorden et al.; ``LICENSE`` and
``README.md`` in ``../shared/data/dcm_qa/dcm_qa_ge``). Every input folder is one series.

Reference volumes: ``Ref/`` has a NIfTI for 6 of the 8 series. Without one:
``Ax_DWI_TENSOR_R2MB2_4`` (bval/bvec only: compared here in dcm2niix's voxel frame, which
the three other DWI series show is the DICOM frame with the rows reversed) and
``3D_Ax_T1_MP-RAGE_R22_5`` (JSON only: its shape comes from the DICOM headers only, checked
against the slice count the JSON implies).
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pydicom
import pytest

from dcm_qa import BVEC_ATOL, assert_reproduces, bvec_world, ingest_each, read_table

#: input folder -> dcm2niix's output stem in Ref/
SERIES = {
    "01_Ax_DWI_TENSOR_R2": "Ax_DWI_TENSOR_R2_1",
    "02_Ax_DWI_TENSOR_R3": "Ax_DWI_TENSOR_R3_2",
    "03_Ax_DWI_TENSOR_R1p5": "Ax_DWI_TENSOR_R1p5_3",
    "04_Ax_DWI_TENSOR_R2MB2": "Ax_DWI_TENSOR_R2MB2_4",
    "05_3D_Ax_T1_MP_RAGE_R22": "3D_Ax_T1_MP-RAGE_R22_5",
    "SliceTimingMPh/2_fMRI_Multiphase_Des": "fMRI_Multiphase_Des_2",
    "SliceTimingMPh/3_fMRI_Multiphase_Des_0.35Delay": "fMRI_Multiphase_Des_0.35Delay_3",
    "SliceTimingMPh/5_fMRI_Multiphase_Des_VariableDelays1s": "fMRI_Multiphase_Des_VariableDelays1s_5",
}
NO_REFERENCE_NIFTI = {"Ax_DWI_TENSOR_R2MB2_4", "3D_Ax_T1_MP-RAGE_R22_5"}


@pytest.fixture(scope="module")
def ge(shared_data):
    return shared_data / "dcm_qa" / "dcm_qa_ge"


@pytest.fixture(scope="module")
def converted(ge, tmp_path_factory):
    """Each series ingested on its own: folder -> (output folder, its one image row)."""
    return ingest_each(ge / "In", SERIES, tmp_path_factory, "ge")


def test_reference_files_are_as_documented(ge):
    """The module docstring's list of series without a reference NIfTI is the real one."""
    missing = {stem for stem in SERIES.values() if not (ge / "Ref" / f"{stem}.nii").is_file()}
    assert missing == NO_REFERENCE_NIFTI


@pytest.mark.parametrize("folder", [f for f, s in SERIES.items() if s not in NO_REFERENCE_NIFTI])
def test_reproduces_reference_volume(converted, ge, folder):
    dest, row = converted[folder]
    assert row.status == "converted", row.reason
    ref = ge / "Ref" / f"{SERIES[folder]}.nii"
    assert_reproduces(dest / row.path, ref)
    t = nib.load(str(ref)).shape[3]
    assert row.volumes == t and row["shape"].endswith(f" x {t}")


def _dcm2niix_affine(first_slice: pydicom.Dataset) -> np.ndarray:
    """dcm2niix's voxel frame for an axial GE series (RAS rotation): i = row direction,
    j = minus the column direction (rows reversed), k = slice normal."""
    iop = np.asarray(first_slice.ImageOrientationPatient, float)
    lps = np.column_stack([iop[:3], -iop[3:], np.cross(iop[:3], iop[3:])])
    return np.diag([-1.0, -1.0, 1.0]) @ lps


@pytest.mark.parametrize("folder", [f for f in SERIES if "DWI" in f])
def test_bval_bvec_equal_dcm2niix(converted, ge, folder):
    """b-values equal; gradient directions equal within 1e-4 in world (RAS) coordinates, each
    file's FSL bvecs mapped through its own NIfTI's voxel axes (volumes in the same order)."""
    dest, row = converted[folder]
    stem = SERIES[folder]
    ours = dest / row.path
    base = ours.with_name(ours.name[: -len(".nii.gz")])
    np.testing.assert_allclose(read_table(base.with_suffix(".bval")), read_table(ge / "Ref" / f"{stem}.bval"), atol=1e-4)
    files = sorted((ge / "In" / folder).iterdir())
    first = pydicom.dcmread(files[0], stop_before_pixels=True)
    if stem in NO_REFERENCE_NIFTI:
        ref_frame = _dcm2niix_affine(first)
    else:
        ref_frame = nib.load(str(ge / "Ref" / f"{stem}.nii")).affine[:3, :3]
        rot = ref_frame / np.linalg.norm(ref_frame, axis=0)
        np.testing.assert_allclose(rot, _dcm2niix_affine(first), atol=1e-4)  # the frame used for R2MB2
    ref_w = bvec_world(read_table(ge / "Ref" / f"{stem}.bvec"), ref_frame)
    our_w = bvec_world(read_table(base.with_suffix(".bvec")), nib.load(str(ours)).affine)
    np.testing.assert_allclose(our_w, ref_w, atol=BVEC_ATOL)


def test_dwi_sidecar_per_volume_values(converted):
    dest, row = converted["01_Ax_DWI_TENSOR_R2"]
    side = json.loads((dest / row.path.replace(".nii.gz", ".json")).read_text())
    vols = side["volumes"]
    assert vols["count"] == 7 and vols["dimension"] == "diffusion"
    assert vols["b_value"] == [0.0] + [1000.0] * 6 and len(vols["gradient_lps"]) == 7
    assert vols["echo_time_ms"] == [123.6] * 7


def test_multiphase_is_time_ordered(converted, ge):
    """Volumes follow TemporalPositionIdentifier; per-volume trigger times are relative (ms)."""
    dest, row = converted["SliceTimingMPh/2_fMRI_Multiphase_Des"]
    vols = json.loads((dest / row.path.replace(".nii.gz", ".json")).read_text())["volumes"]
    assert vols["dimension"] == "time" and vols["ordered_by"] == "TemporalPositionIdentifier"
    assert vols["temporal_position"] == list(range(1, 11))
    assert vols["trigger_time_ms"] == [100.0 + 1000.0 * t for t in range(10)]
    assert nib.load(str(dest / row.path)).header["pixdim"][4] == pytest.approx(1.0)  # TR 1000 ms, as dcm2niix


def test_mprage_without_reference_nifti(converted, ge):
    """3D_Ax_T1_MP-RAGE_R22_5 has only a JSON in Ref/: a 3-D volume of all its slices."""
    dest, row = converted["05_3D_Ax_T1_MP_RAGE_R22"]
    n = len(list((ge / "In" / "05_3D_Ax_T1_MP_RAGE_R22").iterdir()))
    ref = json.loads((ge / "Ref" / "3D_Ax_T1_MP-RAGE_R22_5.json").read_text())
    assert row.status == "converted" and row.volumes == 1
    img = nib.load(str(dest / row.path))
    assert img.shape == (256, 256, n) and ref["SeriesNumber"] == 5
