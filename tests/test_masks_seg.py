"""DICOM SEG -> voxel masks: SEGs built here with highdicom from the IBSI reference masks."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.sr.codedict import codes

from biomarkers.dicom.masks import MaskSettings, masks_from_object
from biomarkers.dicom.model import SegmentationObject
from biomarkers.geometry import read_nifti

from test_masks_rtstruct import stack_from_dir

# highdicom warns about the source images' patient name / VR lengths: not what is tested here
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _source_datasets(stack):
    return [pydicom.dcmread(f.path) for f in stack.files]


def _description(number: int, label: str, fractional: bool = False) -> hd.seg.SegmentDescription:
    return hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=label,
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Neoplasm,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
    )


def build_seg(out: Path, sources, masks_ijk: list[np.ndarray], labels: list[str], fractional: bool = False) -> Path:
    """Write a SEG over ``sources`` (datasets in slice order); masks are (i, j, k) arrays, one per segment."""
    # highdicom wants (frames, rows, columns[, segments]) in the order of the source images
    arrs = [np.transpose(m, (2, 1, 0)) for m in masks_ijk]
    pix = np.stack(arrs, axis=-1) if len(arrs) > 1 else arrs[0]
    pix = pix.astype(np.float32) if fractional else pix.astype(np.uint8)
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=pix,
        segmentation_type=hd.seg.SegmentationTypeValues.FRACTIONAL if fractional else hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[_description(i + 1, lab) for i, lab in enumerate(labels)],
        series_instance_uid=hd.UID(),
        series_number=99,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="biomarkers-tests",
        manufacturer_model_name="test",
        software_versions="0",
        device_serial_number="0",
        max_fractional_value=255,
    )
    seg.save_as(out)
    return out


def seg_object(path: Path) -> SegmentationObject:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return SegmentationObject(
        path=path, rel=path.name, kind="SEG", patient_id=str(ds.PatientID), study_uid=str(ds.StudyInstanceUID),
        series_uid=str(ds.SeriesInstanceUID), frame_of_reference_uid=str(ds.FrameOfReferenceUID),
    )


@pytest.fixture(scope="module")
def sts2(shared_data):
    base = shared_data / "sts" / "dicom" / "STS_002"
    stacks = {m: stack_from_dir(base / m / "image", key=f"STS_002/{m}") for m in ("CT", "MR_T1", "PET")}
    refs = {m: read_nifti(shared_data / "sts" / "nifti" / "STS_002" / f"{m}_mask.nii.gz")[0] for m in stacks}
    return stacks, refs


def test_binary_seg_round_trips_to_reference_voxels(tmp_path, sts2):
    stacks, refs = sts2
    for m in ("MR_T1", "PET"):  # MR_T1 is 115 x 90 (non-square)
        ref = (refs[m] > 0).astype(np.uint8)
        path = build_seg(tmp_path / f"{m}.dcm", _source_datasets(stacks[m]), [ref], ["GTV Mass"])
        res = masks_from_object(seg_object(path), list(stacks.values()), MaskSettings(rois={"GTV_Mass": []}))
        (r,) = res
        assert r.status == "converted", r.reason
        assert r.stack_key == f"STS_002/{m}" and r.roi == "GTV_Mass" and r.source_name == "GTV Mass"
        assert r.array.shape == stacks[m].grid.shape and r.array.dtype == np.uint8
        assert np.array_equal(r.array, ref)


def test_seg_on_subset_of_frames_lands_on_right_slices(tmp_path, sts2):
    stacks, refs = sts2
    st = stacks["PET"]
    ref = (refs["PET"] > 0).astype(np.uint8)
    ks = np.nonzero(ref.any(axis=(0, 1)))[0]
    sub = list(range(int(ks[0]) + 2, int(ks[0]) + 6))  # 4 slices inside the tumour
    sources = _source_datasets(st)
    path = build_seg(tmp_path / "sub.dcm", [sources[k] for k in sub], [ref[:, :, sub]], ["GTV_Mass"])
    expected = np.zeros_like(ref)
    expected[:, :, sub] = ref[:, :, sub]
    (r,) = masks_from_object(seg_object(path), [st], MaskSettings())
    assert r.status == "converted" and np.array_equal(r.array, expected)
    assert sorted(np.nonzero(r.array.any(axis=(0, 1)))[0].tolist()) == sub
    # same SEG, but the stack's SOP instance / series UIDs are unknown to it:
    # placed by plane positions (frame of reference + geometry)
    files = [dataclasses.replace(f, sop_instance_uid=f"1.2.3.{i}") for i, f in enumerate(st.files)]
    anon = dataclasses.replace(st, series_uid="1.2.3", files=files)
    (r2,) = masks_from_object(seg_object(path), [stacks["CT"], anon], MaskSettings())
    assert r2.status == "converted" and r2.stack_key == anon.key
    assert np.array_equal(r2.array, expected)


def test_fractional_seg_thresholded_and_several_segments(tmp_path, sts2):
    stacks, refs = sts2
    st = stacks["PET"]
    ref = (refs["PET"] > 0).astype(np.uint8)
    prob = np.where(ref > 0, 0.8, 0.3).astype(np.float32)  # 0.8 * 255 >= 127.5 > 0.3 * 255
    other = np.zeros_like(ref)
    other[2:6, 3:7, 10:12] = 1
    path = build_seg(tmp_path / "frac.dcm", _source_datasets(st), [prob, other.astype(np.float32)], ["GTV_Mass_PET", "Bladder"], fractional=True)
    res = masks_from_object(seg_object(path), list(stacks.values()), MaskSettings(rois={"GTV_Mass": []}))
    by = {r.source_name: r for r in res}
    assert by["GTV_Mass_PET"].status == "converted" and np.array_equal(by["GTV_Mass_PET"].array, ref)
    assert by["Bladder"].status == "skipped" and "matches no configured ROI" in by["Bladder"].reason
    # without ROI config both segments come out, tiny one flagged
    res = masks_from_object(seg_object(path), [st], MaskSettings(min_voxels=50))
    by = {r.roi: r for r in res}
    assert np.array_equal(by["Bladder"].array, other) and by["Bladder"].flags == ["tiny"]


def test_seg_missing_series_and_geometry_mismatch(tmp_path, sts2, shared_data):
    stacks, refs = sts2
    st = stacks["PET"]
    ref = (refs["PET"] > 0).astype(np.uint8)
    path = build_seg(tmp_path / "pet.dcm", _source_datasets(st), [ref], ["GTV_Mass"])
    other_patient = stack_from_dir(shared_data / "sts" / "dicom" / "STS_003" / "PET" / "image")
    (r,) = masks_from_object(seg_object(path), [other_patient], MaskSettings())
    assert r.status == "skipped" and "referenced image series not found" in r.reason
    # only the CT of the same patient (same frame of reference, other grid)
    (r,) = masks_from_object(seg_object(path), [stacks["CT"]], MaskSettings())
    assert r.status == "failed" and r.reason.startswith("geometry does not match") and "frame size" in r.reason


def test_labelmap_seg(tmp_path, sts2):
    stacks, refs = sts2
    st = stacks["PET"]
    ref = (refs["PET"] > 0).astype(np.uint8)
    other = np.zeros_like(ref)
    other[2:6, 3:7, 10:12] = 1
    other[ref > 0] = 0
    labels = (ref + 2 * other).astype(np.uint8)
    seg = hd.seg.Segmentation(
        source_images=_source_datasets(st),
        pixel_array=np.transpose(labels, (2, 1, 0)),
        segmentation_type=hd.seg.SegmentationTypeValues.LABELMAP,
        segment_descriptions=[_description(1, "GTV_Mass"), _description(2, "Other")],
        series_instance_uid=hd.UID(), series_number=98, sop_instance_uid=hd.UID(), instance_number=1,
        manufacturer="biomarkers-tests", manufacturer_model_name="test", software_versions="0", device_serial_number="0",
    )
    path = tmp_path / "labelmap.dcm"
    seg.save_as(path)
    by = {r.roi: r for r in masks_from_object(seg_object(path), [st], MaskSettings())}
    assert np.array_equal(by["GTV_Mass"].array, ref)
    assert np.array_equal(by["Other"].array, other)
