"""Masks through ``biomarkers.dicom.ingest.run_ingest`` on real STS DICOM (integration).

SRC is built in tmp from symlinks to ``../shared/data/sts/dicom`` plus a few small
generated files: an RTSTRUCT copy whose ROI is renamed (matches no configured ROI),
an RTSTRUCT without its image series, and a NIfTI mask of the wrong shape.
"""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from biomarkers.dicom.ingest import IngestSettings, run_ingest
from biomarkers.dicom.masks import MaskSettings, dice
from biomarkers.geometry import Grid, nifti_image, read_nifti
from biomarkers.manifest import Manifest, read_manifest


def _link_tree(src: Path, dst: Path) -> None:
    for root, _dirs, names in os.walk(src):
        rel = Path(root).relative_to(src)
        (dst / rel).mkdir(parents=True, exist_ok=True)
        for n in names:
            (dst / rel / n).symlink_to(Path(root) / n)


@pytest.fixture(scope="module")
def ingested(shared_data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ingest_masks")
    src, out = tmp / "src", tmp / "out"
    sts = shared_data / "sts" / "dicom"
    for p in ("STS_001", "STS_002"):
        _link_tree(sts / p, src / p)
    # an RTSTRUCT whose image series is absent
    (src / "STS_003" / "CT" / "mask").mkdir(parents=True)
    (src / "STS_003" / "CT" / "mask" / "RS.dcm").symlink_to(sts / "STS_003" / "CT" / "mask" / "RS.dcm")
    # an RTSTRUCT (new series) whose only ROI matches no configured name
    ds = pydicom.dcmread(sts / "STS_002" / "PET" / "mask" / "RS.dcm")
    ds.StructureSetROISequence[0].ROIName = "Bladder"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    (src / "STS_002" / "PET" / "extra").mkdir()
    ds.save_as(src / "STS_002" / "PET" / "extra" / "RS_bladder.dcm")
    # a NIfTI mask of the wrong shape beside STS_001's CT
    ref, ref_grid = read_nifti(shared_data / "sts" / "nifti" / "STS_001" / "CT_mask.nii.gz")
    g = Grid((ref.shape[0], ref.shape[1] - 2, ref.shape[2]), ref_grid.spacing, ref_grid.origin, ref_grid.direction)
    nib.save(nifti_image(ref[:, :-2, :].astype(np.uint8), g), str(src / "STS_001" / "CT" / "mask" / "GTV_Mass.nii.gz"))
    settings = IngestSettings(masks=MaskSettings(rois={"GTV_Mass": [], "Lung_L": []}, nifti_pattern="../mask/*.nii.gz"))
    with pytest.MonkeyPatch.context() as mp:  # module-scoped: set the test secret here too
        mp.setenv("BIOMARKERS_SECRET", os.environ.get("BIOMARKERS_TEST_SECRET", "test-secret-0123456789abcdef"))
        mp.delenv("BIOMARKERS_SECRET_FILE", raising=False)
        report = run_ingest(src, out, settings, executor="serial")
    return out, report, read_manifest(out)


def test_manifest_mask_rows_dice_and_grid(ingested, shared_data):
    out, report, man = ingested
    masks = man[man["kind"] == "mask"]
    ok = masks[masks["status"] == "converted"]
    assert len(ok) == 6, masks[["roi", "status", "reason"]].to_string()
    assert set(ok["roi"]) == {"GTV_Mass"}
    refs = {
        f"{p}/{m}": read_nifti(shared_data / "sts" / "nifti" / p / f"{m}_mask.nii.gz")
        for p in ("STS_001", "STS_002") for m in ("CT", "MR_T1", "PET")
    }
    found = set()
    for _, row in ok.iterrows():
        mimg = nib.load(str(out / row["path"]))
        iimg = nib.load(str(out / row["image_path"]))
        # exactly the image's header geometry, uint8
        assert mimg.shape == iimg.shape and np.array_equal(mimg.affine, iimg.affine)
        assert mimg.get_data_dtype() == np.uint8
        arr, grid = read_nifti(out / row["path"])
        (case,) = [c for c, (_r, rg) in refs.items() if rg.mismatch(grid, atol_mm=1e-3) is None]
        ref = refs[case][0]
        assert dice(arr, ref) >= 0.99, case
        assert int(row["voxel_count"]) == int(np.count_nonzero(ref))
        assert abs(float(row["volume_ml"]) - np.count_nonzero(ref) * grid.voxel_volume_ml) <= 0.01 * float(row["volume_ml"])
        assert row["source_series_uid"] and row["source_series_uid"] in set(man.loc[man["kind"] == "image", "series_uid"])
        image = Manifest.read(out).image_of(row)  # the explicit reference (series + stack) names the same image
        assert image.path == row["image_path"] and image.stack == row["source_stack"] and image.kind == "image"
        found.add(case)
    assert len(found) == 6


def test_specific_reasons_in_manifest_and_report(ingested):
    out, report, man = ingested
    masks = man[man["kind"] == "mask"]
    bad = masks[masks["status"] != "converted"]
    reasons = " | ".join(bad["reason"].astype(str))
    assert "referenced image series not found" in reasons
    assert "'Bladder' matches no configured ROI" in reasons
    assert "not on the image grid" in reasons and "shape" in reasons
    # a configured ROI that no object of a patient provides is reported per patient
    missing = bad[bad["reason"].str.contains("configured ROI 'Lung_L' not found for this patient")]
    assert len(missing) == 2 and set(missing["status"]) == {"skipped"}
    assert set(missing["patient_id"]) == set(masks.loc[masks["status"] == "converted", "patient_id"])
    assert len(bad) == 5, bad[["roi", "status", "reason"]].to_string()
    # the run went on: report has the 6 masks done and the 3 problems with reasons
    probs = " | ".join(report.reasons())
    assert "matches no configured ROI" in probs and "not on the image grid" in probs
