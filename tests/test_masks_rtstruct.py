"""RTSTRUCT -> voxel masks on the image grid, checked against the IBSI reference conversions.

Reference masks: ``../shared/data/sts/nifti/STS_00N/<MOD>_mask.nii.gz`` and
``ibsi1_ct_phantom/nifti/mask/mask.nii.gz`` (IBSI team's conversion, RAS NIfTI,
read through biomarkers.geometry.read_nifti). Image stacks are built here directly
from the DICOM headers (sorted along the slice normal, Grid.from_dicom), so these
tests do not depend on the ingest index.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest

from biomarkers.dicom.masks import MaskSettings, dice, masks_from_object
from biomarkers.dicom.model import DicomFile, ImageStack, SegmentationObject
from biomarkers.dicom.roi import match_roi_names, normalise_name
from biomarkers.dicom.rtstruct import fill_polygons, rasterize_contours, read_rtstruct
from biomarkers.geometry import Grid, grid_of_nifti, read_nifti

from conftest import STS_MODALITIES, STS_PATIENTS


# ------------------------------------------------------------------ helpers
def stack_from_dir(folder: Path, key: str | None = None) -> ImageStack:
    """An ImageStack from a folder of single-frame DICOM images (headers only)."""
    files = []
    for p in sorted(Path(folder).glob("*.dcm")):
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        files.append(
            DicomFile(
                path=p, rel=p.name, sop_class_uid=str(ds.SOPClassUID), sop_instance_uid=str(ds.SOPInstanceUID),
                modality=str(ds.Modality), patient_id=str(ds.PatientID), study_uid=str(ds.StudyInstanceUID),
                series_uid=str(ds.SeriesInstanceUID), frame_of_reference_uid=str(ds.FrameOfReferenceUID),
                rows=int(ds.Rows), columns=int(ds.Columns),
                pixel_spacing=tuple(float(x) for x in ds.PixelSpacing),
                image_orientation=tuple(float(x) for x in ds.ImageOrientationPatient),
                image_position=tuple(float(x) for x in ds.ImagePositionPatient),
            )
        )
    iop = np.asarray(files[0].image_orientation)
    normal = np.cross(iop[:3], iop[3:])
    files.sort(key=lambda f: float(np.dot(normal, f.image_position)))
    f0 = files[0]
    grid = Grid.from_dicom(f0.rows, f0.columns, f0.pixel_spacing, f0.image_orientation, [f.image_position for f in files])
    return ImageStack(
        key=key or f0.series_uid, patient_id=f0.patient_id, study_uid=f0.study_uid, series_uid=f0.series_uid,
        modality=f0.modality, frame_of_reference_uid=f0.frame_of_reference_uid, files=files, grid=grid,
    )


def rtstruct_object(path: Path) -> SegmentationObject:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return SegmentationObject(
        path=path, rel=path.name, kind="RTSTRUCT", patient_id=str(ds.PatientID), study_uid=str(ds.StudyInstanceUID),
        series_uid=str(ds.SeriesInstanceUID),
        frame_of_reference_uid=str(ds.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID),
    )


def cases(shared: Path):
    """(label, image folder, RTSTRUCT, reference mask, reference image) for the 18 STS masks + the CT phantom."""
    out = []
    for p in STS_PATIENTS:
        for m in STS_MODALITIES:
            base = shared / "sts" / "dicom" / p / m
            ref = shared / "sts" / "nifti" / p
            out.append((f"{p}/{m}", base / "image", base / "mask" / "RS.dcm", ref / f"{m}_mask.nii.gz", ref / f"{m}_image.nii.gz"))
    ph = shared / "ibsi1_ct_phantom"
    out.append(("ibsi1_ct_phantom", ph / "dicom" / "image", next((ph / "dicom" / "mask").glob("*.dcm")),
                ph / "nifti" / "mask" / "mask.nii.gz", ph / "nifti" / "image" / "phantom.nii.gz"))
    return out


@pytest.fixture(scope="module")
def stacks(shared_data):
    """All image stacks, per patient (STS: CT, MR_T1 and PET together, as ingest would offer them)."""
    by_patient: dict[str, list[ImageStack]] = {}
    by_case = {}
    for label, img, *_ in cases(shared_data):
        patient = label.split("/")[0]
        st = stack_from_dir(img, key=label)
        by_patient.setdefault(patient, []).append(st)
        by_case[label] = st
    return by_patient, by_case


# ------------------------------------------------------------------ reference data
def test_dice_volume_table_vs_reference_masks(shared_data, stacks, record_property):
    """All 18 STS masks + IBSI CT phantom: Dice >= 0.99 mean, >= 0.97 worst, volume within 1 %, same grid."""
    by_patient, by_case = stacks
    settings = MaskSettings()  # no ROI config: every ROI converted under its own name
    rows = []
    for label, _img, rs, ref_mask, ref_image in cases(shared_data):
        patient = label.split("/")[0]
        t0 = time.perf_counter()
        res = masks_from_object(rtstruct_object(rs), by_patient[patient], settings)
        dt = time.perf_counter() - t0
        conv = [r for r in res if r.status == "converted"]
        assert len(conv) == 1, (label, [(r.status, r.reason) for r in res])
        r = conv[0]
        stack = by_case[label]
        # the right stack among the patient's CT / MR / PET (all share one frame of reference)
        assert r.stack_key == stack.key, (label, r.stack_key)
        # mask grid == its image's grid, and == the reference image NIfTI grid
        assert r.array.shape == stack.grid.shape and r.array.dtype == np.uint8
        assert stack.grid.mismatch(grid_of_nifti(ref_image), atol_mm=1e-3) is None, label
        ref, ref_grid = read_nifti(ref_mask)
        assert stack.grid.mismatch(ref_grid, atol_mm=1e-3) is None, label
        d = dice(r.array, ref)
        vol, ref_vol = r.volume_ml(stack.grid), int(np.count_nonzero(ref)) * ref_grid.voxel_volume_ml
        rows.append((label, r.source_name, stack.grid.shape, d, vol, ref_vol, dt))
    lines = [f"{'case':<18} {'roi':<16} {'shape':<16} {'dice':>7} {'vol_ml':>10} {'ref_ml':>10} {'dvol%':>7} {'time_s':>7}"]
    for label, roi, shape, d, vol, ref_vol, dt in rows:
        lines.append(
            f"{label:<18} {roi:<16} {'x'.join(map(str, shape)):<16} {d:7.4f} {vol:10.3f} {ref_vol:10.3f} "
            f"{100 * (vol - ref_vol) / ref_vol:7.3f} {dt:7.3f}"
        )
    dices = np.array([r[3] for r in rows])
    lines.append(f"mean Dice {dices.mean():.4f}, worst {dices.min():.4f} over {len(rows)} masks")
    print("\n" + "\n".join(lines))
    record_property("dice_table", "\n".join(lines))
    record_property("dice_mean", float(dices.mean()))
    record_property("dice_min", float(dices.min()))
    assert len(rows) == 19
    assert any(r[2][0] != r[2][1] for r in rows)  # non-square images included
    assert dices.mean() >= 0.99
    assert dices.min() >= 0.97
    for label, _roi, _shape, _d, vol, ref_vol, _dt in rows:
        assert abs(vol - ref_vol) <= 0.01 * ref_vol, label


def test_fallback_by_frame_of_reference_and_geometry(shared_data, stacks):
    """Referenced series not among the stacks (UIDs changed): placed by FoR + geometry on the closest stack."""
    by_patient, by_case = stacks
    rs = shared_data / "sts" / "dicom" / "STS_002" / "PET" / "mask" / "RS.dcm"
    anon = [dataclasses.replace(s, series_uid=f"1.2.3.{i}") for i, s in enumerate(by_patient["STS_002"])]
    res = masks_from_object(rtstruct_object(rs), anon, MaskSettings())
    (r,) = res
    assert r.status == "converted" and r.stack_key == "STS_002/PET"
    ref, _ = read_nifti(shared_data / "sts" / "nifti" / "STS_002" / "PET_mask.nii.gz")
    assert dice(r.array, ref) >= 0.99


def test_missing_series_unmatched_roi_and_geometry_mismatch_give_reasons(shared_data, stacks):
    by_patient, by_case = stacks
    rs = shared_data / "sts" / "dicom" / "STS_003" / "CT" / "mask" / "RS.dcm"
    obj = rtstruct_object(rs)
    # 1) image series absent: only another patient's stacks (other frame of reference)
    (r,) = masks_from_object(obj, by_patient["STS_001"], MaskSettings())
    assert r.status == "skipped" and r.array is None
    assert "referenced image series not found" in r.reason
    # 2) ROI name matching nothing
    res = masks_from_object(obj, by_patient["STS_003"], MaskSettings(rois={"Liver": ["liv*"]}))
    (r,) = res
    assert r.status == "skipped" and r.source_name == "GTV_Mass_CT"
    assert "matches no configured ROI" in r.reason and "Liver" in r.reason
    # 3) same frame of reference but the image lies 500 mm away: geometry does not match
    far = []
    for s in by_patient["STS_003"]:
        g = s.grid
        far.append(dataclasses.replace(s, series_uid="1.2.3", grid=dataclasses.replace(g, origin=(g.origin[0], g.origin[1], g.origin[2] + 500.0))))
    (r,) = masks_from_object(obj, far, MaskSettings())
    assert r.status == "failed" and "geometry does not match" in r.reason
    # 4) an unreadable file: object-level failure, no exception
    bad = dataclasses.replace(obj, path=shared_data / "ibsi1_digital_phantom" / "image.nii.gz")
    (r,) = masks_from_object(bad, by_patient["STS_003"], MaskSettings())
    assert r.status == "failed" and "cannot read RTSTRUCT" in r.reason
    # and processing goes on: the same object with the right config still converts
    res = masks_from_object(obj, by_patient["STS_003"], MaskSettings(rois={"GTV_Mass": []}))
    assert [(x.roi, x.status) for x in res] == [("GTV_Mass", "converted")]


def test_roi_names_case_insensitive_synonyms_and_ambiguity():
    rois = {"GTV_Mass": ["tumour"], "Lung_L": ["re:lung_?l(eft)?"], "GTV": ["gtv*"]}
    names = ["GTV_Mass", "gtv mass", "GTV-Mass_CT", "Tumour", "left lung", "Lung L", "lungleft", "GTVp"]
    got = {m.name: (m.canonical, m.reason) for m in match_roi_names(names, {"GTV_Mass": ["tumour"], "Lung_L": ["re:lung_?l(eft)?"]})}
    assert got["GTV_Mass"][0] is None and "several ROIs" in got["GTV_Mass"][1]  # 4 names claim GTV_Mass
    assert got["Lung L"][0] is None and got["lungleft"][0] is None  # two claim Lung_L
    assert got["left lung"][0] is None and "matches no configured ROI" in got["left lung"][1]
    single = match_roi_names(["gtv mass"], {"GTV_Mass": []})
    assert single[0].canonical == "GTV_Mass"
    assert match_roi_names(["GTV_Mass_MR_T1"], {"GTV_Mass": []})[0].canonical == "GTV_Mass"
    assert match_roi_names(["GTV_Mass_PET"], {"GTV_Mass": []})[0].canonical == "GTV_Mass"
    assert match_roi_names(["GTV_Mass_extra"], {"GTV_Mass": []})[0].canonical is None
    amb = match_roi_names(["GTV_Mass_CT"], rois)  # GTV_Mass (suffix) and GTV (glob gtv*)
    assert amb[0].canonical is None and "matches several configured ROIs" in amb[0].reason
    assert normalise_name("  GTV  Mass-CT ") == "gtv_mass_ct"


# ------------------------------------------------------------------ synthetic geometry
def _grid(direction=np.eye(3), shape=(20, 16, 6), spacing=(1.0, 1.0, 2.0), origin=(0.0, 0.0, 0.0)) -> Grid:
    return Grid(tuple(shape), tuple(spacing), tuple(origin), tuple(tuple(float(x) for x in r) for r in np.asarray(direction)))


def _square(i0, j0, i1, j1):
    return np.array([[i0, j0], [i1, j0], [i1, j1], [i0, j1]], float)


def test_fill_rule_pixel_centres_holes_and_several_contours():
    # square with corners on voxel boundaries: voxels 3..7 x 3..7 (hand count 25)
    m = fill_polygons([_square(2.5, 2.5, 7.5, 7.5)], (12, 12))
    expected = np.zeros((12, 12), bool)
    expected[3:8, 3:8] = True
    assert np.array_equal(m, expected)
    # nested contour = hole (even-odd): voxel (5, 5) removed
    m = fill_polygons([_square(2.5, 2.5, 7.5, 7.5), _square(4.5, 4.5, 5.5, 5.5)], (12, 12))
    assert m.sum() == 24 and not m[5, 5]
    # two disjoint contours on one slice add up
    m = fill_polygons([_square(0.5, 0.5, 2.5, 2.5), _square(8.5, 8.5, 10.5, 11.5)], (12, 12))
    assert m.sum() == 4 + 6 and m[1, 1] and m[10, 11]
    # triangle: centres strictly inside a right triangle i + j < 6 (i, j >= 0.5): hand count
    m = fill_polygons([np.array([[0.5, 0.5], [6.5, 0.5], [0.5, 6.5]])], (10, 10))
    ii, jj = np.meshgrid(np.arange(10), np.arange(10), indexing="ij")
    assert np.array_equal(m, (ii >= 1) & (jj >= 1) & (ii + jj < 7))
    # polygon partly outside the slice is clipped, no error
    m = fill_polygons([_square(-5.5, -5.5, 2.5, 2.5)], (12, 12))
    assert m.sum() == 9
    # disc of radius 30 voxels: area within 1 % of pi r^2
    t = np.linspace(0, 2 * np.pi, 400, endpoint=False)
    disc = np.stack([50 + 30 * np.cos(t), 50 + 30 * np.sin(t)], 1)
    assert abs(fill_polygons([disc], (100, 100)).sum() / (np.pi * 900) - 1) < 0.01


def test_oblique_grid_and_off_plane_points():
    # grid rotated 30 deg about LPS z and 20 deg about x: oblique slices
    a, b = np.radians(30), np.radians(20)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    g = _grid(direction=rz @ rx, origin=(-12.0, 40.0, 7.5), spacing=(0.8, 1.2, 2.5))
    assert g.is_oblique()
    # contours drawn in index space (voxels 3..7 x 2..9 on slices 1..3), points off-plane by up to 0.2 slice
    rng = np.random.default_rng(0)
    contours = []
    for k in (1, 2, 3):
        sq = _square(2.5, 1.5, 7.5, 9.5)
        ijk = np.column_stack([sq, k + rng.uniform(-0.2, 0.2, len(sq))])
        contours.append(g.index_to_lps(ijk))
    # a hole on slice 2 and a contour 0.45 slice off-plane (dropped, flagged)
    contours.append(g.index_to_lps(np.column_stack([_square(4.5, 4.5, 5.5, 6.5), np.full(4, 2.0)])))
    contours.append(g.index_to_lps(np.column_stack([_square(2.5, 1.5, 7.5, 9.5), np.full(4, 4.45)])))
    mask, info = rasterize_contours(contours, g, plane_tolerance=0.3)
    expected = np.zeros(g.shape, np.uint8)
    expected[3:8, 2:10, 1:4] = 1
    expected[5, 5:7, 2] = 0
    assert np.array_equal(mask, expected)
    assert info.n_off_plane == 1 and info.n_placed == 4


def test_structure_set_references_are_read(shared_data):
    ss = read_rtstruct(shared_data / "sts" / "dicom" / "STS_001" / "CT" / "mask" / "RS.dcm")
    ds = pydicom.dcmread(next((shared_data / "sts" / "dicom" / "STS_001" / "CT" / "image").glob("*.dcm")), stop_before_pixels=True)
    assert ss.frame_of_reference_uids == (str(ds.FrameOfReferenceUID),)
    assert ss.referenced_series_uids == (str(ds.SeriesInstanceUID),)
    assert len(ss.referenced_sop_uids) > 0
    assert [r.name for r in ss.rois] == ["GTV_Mass_CT"] and len(ss.rois[0].contours) == 32


def test_referenced_sop_instances_take_precedence(shared_data, stacks):
    """A stack holding the SOP instances the contours name wins over the referenced series / FoR match."""
    by_patient, by_case = stacks
    rs = shared_data / "sts" / "dicom" / "STS_002" / "CT" / "mask" / "RS.dcm"
    sops = read_rtstruct(rs).referenced_sop_uids
    mr = by_case["STS_002/MR_T1"]
    files = [dataclasses.replace(f, sop_instance_uid=sops[i % len(sops)]) for i, f in enumerate(mr.files)]
    cands = [by_case["STS_002/CT"], dataclasses.replace(mr, files=files), by_case["STS_002/PET"]]
    (r,) = masks_from_object(rtstruct_object(rs), cands, MaskSettings())
    assert r.status == "converted" and r.stack_key == "STS_002/MR_T1"
    # without that overlap the referenced series (CT) is chosen
    (r,) = masks_from_object(rtstruct_object(rs), by_patient["STS_002"], MaskSettings())
    assert r.stack_key == "STS_002/CT"


def test_mask_settings_validation_names_key(tmp_path):
    from biomarkers.config import load_yaml
    from biomarkers.errors import ConfigError

    ok = tmp_path / "ok.yaml"
    ok.write_text("rois:\n  GTV_Mass: ['tumour', 're:gtv_?m.*']\nnifti_pattern: '../mask/*.nii.gz'\nresample: nearest\n")
    s = load_yaml(ok, MaskSettings)
    assert s.rois == {"GTV_Mass": ["tumour", "re:gtv_?m.*"]} and s.resample == "nearest"
    for text, key in [("rois:\n  GTV: ['re:(unclosed']\n", "rois"), ("resample: linear\n", "resample"), ("roi: {}\n", "roi")]:
        bad = tmp_path / "bad.yaml"
        bad.write_text(text)
        with pytest.raises(ConfigError) as ei:
            load_yaml(bad, MaskSettings)
        assert str(bad) in str(ei.value) and f"{key}:" in str(ei.value)
