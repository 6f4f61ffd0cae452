"""Synthetic cohort: valid DICOM (pydicom + SimpleITK), planted values recoverable, clinical quirks, determinism."""

from __future__ import annotations

import csv
import datetime as dt
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
import SimpleITK as sitk

from biomarkers.synth import centre_profile, synthesize
from biomarkers.io import sha256_file

UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "cohort"
    synthesize(out, patients=6, centres=3, seed=11, executor="serial")
    return out


def _read_series(folder: Path) -> sitk.Image:
    r = sitk.ImageSeriesReader()
    r.SetFileNames(r.GetGDCMSeriesFileNames(str(folder)))
    return r.Execute()


def _gt(cohort: Path) -> pd.DataFrame:
    return pd.read_csv(cohort / "ground_truth.csv", dtype={"patient_id": str})


def test_layout_and_ground_truth(cohort):
    gt = _gt(cohort)
    assert len(gt) == 6
    # round-robin over centres, numbered within the centre
    assert list(gt["patient_id"]) == ["C1-0001", "C2-0001", "C3-0001", "C1-0002", "C2-0002", "C3-0002"]
    assert set(gt["outcome"]) <= {0, 1}
    for r in gt.itertuples():
        pdir = cohort / "dicom" / r.centre / r.patient_id
        assert {p.name for p in pdir.iterdir()} == {"CT", "PT", "RS_CT", "RS_PT"}
        # volume of an ellipsoid with the recorded equivalent radius
        assert r.lesion_volume_ml == pytest.approx(4 / 3 * np.pi * r.lesion_radius_mm ** 3 / 1000, rel=1e-3)
        assert r.roi_name == centre_profile(int(r.centre[1:])).roi_name


def test_ct_is_valid_dicom_with_planted_density(cohort):
    gt = _gt(cohort)
    for r in gt.itertuples():
        ct_dir = cohort / "dicom" / r.centre / r.patient_id / "CT"
        files = sorted(ct_dir.glob("*.dcm"))
        ds = pydicom.dcmread(files[0])
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert "^" in str(ds.PatientName) and len(ds.PatientBirthDate) == 8 and ds.PatientID == r.patient_id
        assert float(ds.SliceThickness) == r.slice_thickness_mm
        img = _read_series(ct_dir)  # SimpleITK applies the rescale: HU
        assert img.GetSize()[:2] == (96, 96) and img.GetSize()[2] == len(files)
        assert img.GetSpacing() == pytest.approx((r.pixel_spacing_mm, r.pixel_spacing_mm, r.slice_thickness_mm))
        # the lesion core (inner half radius, from the ground-truth geometry) has the planted mean density
        arr = sitk.GetArrayFromImage(img).astype(float)  # z, y, x
        zz, yy, xx = np.meshgrid(*[np.arange(n) for n in arr.shape], indexing="ij")
        ox, oy, oz = img.GetOrigin()
        sx, sy, sz = img.GetSpacing()
        d = np.sqrt((ox + xx * sx - r.lesion_x_mm) ** 2 + (oy + yy * sy - r.lesion_y_mm) ** 2
                    + (oz + zz * sz - r.lesion_z_mm) ** 2)
        core = arr[d < 0.5 * r.lesion_radius_mm]
        assert core.size >= 3
        expected = r.lesion_ct_mean_hu + r.ct_offset_hu
        # texture + noise: tolerance a few standard errors of the core mean
        assert abs(core.mean() - expected) < 3 * (r.lesion_texture_sd_hu + r.ct_noise_hu) / np.sqrt(core.size) + 8
        # air outside the body is about -1000 HU + the centre's offset
        assert arr[:, 0, 0].mean() == pytest.approx(-1000 + r.ct_offset_hu, abs=15)


def _tm_seconds(tm: str) -> float:
    t = dt.datetime.strptime(tm.split(".")[0], "%H%M%S")
    return t.hour * 3600 + t.minute * 60 + t.second


def test_pet_bqml_converts_to_planted_suv(cohort):
    """Independent SUVbw computation from the DICOM header: soft tissue is SUV 1 x the centre's calibration."""
    gt = _gt(cohort)
    for r in gt.itertuples():
        pt_dir = cohort / "dicom" / r.centre / r.patient_id / "PT"
        ds = pydicom.dcmread(next(pt_dir.glob("*.dcm")))
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.128" and ds.Units == "BQML"
        ri = ds.RadiopharmaceuticalInformationSequence[0]
        dose, half_life = float(ri.RadionuclideTotalDose), float(ri.RadionuclideHalfLife)
        elapsed = _tm_seconds(ds.SeriesTime) - _tm_seconds(ri.RadiopharmaceuticalStartTime)
        assert 50 * 60 < elapsed < 80 * 60
        factor = float(ds.PatientWeight) * 1000 / (dose * 2 ** (-elapsed / half_life))
        img = _read_series(pt_dir)
        suv = sitk.GetArrayFromImage(img).astype(float) * factor
        # soft tissue: a ring of body far from the lesion and spine (anterior body, x ~ 0, y ~ -90 mm)
        ox, oy, _ = img.GetOrigin()
        sx = img.GetSpacing()[0]
        col, row = int(round((0 - ox) / sx)), int(round((-90 - oy) / sx))
        tissue = np.median(suv[3:-3, row, col - 2: col + 3])
        assert tissue == pytest.approx(r.pet_scale, rel=0.15)
        # the lesion is hotter than tissue and not hotter than its planted SUV (blurred, scaled)
        assert tissue * 1.3 < suv.max() < r.lesion_suv * r.pet_scale * 1.5


def test_rtstruct_references_and_geometry(cohort):
    gt = _gt(cohort)
    for r in gt.itertuples():
        pdir = cohort / "dicom" / r.centre / r.patient_id
        for tag, img_dir in (("CT", "CT"), ("PT", "PT")):
            rs = pydicom.dcmread(pdir / f"RS_{tag}" / "RS.dcm")
            assert rs.SOPClassUID == "1.2.840.10008.5.1.4.1.1.481.3"
            imgs = {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID: pydicom.dcmread(f, stop_before_pixels=True)
                    for f in (pdir / img_dir).glob("*.dcm")}
            first = next(iter(imgs.values()))
            assert rs.FrameOfReferenceUID == first.FrameOfReferenceUID
            ref = rs.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
            assert ref.SeriesInstanceUID == first.SeriesInstanceUID
            assert rs.StructureSetROISequence[0].ROIName == r.roi_name
            contours = rs.ROIContourSequence[0].ContourSequence
            assert len(contours) >= 2
            zs = {round(float(d.ImagePositionPatient[2]), 3): uid for uid, d in imgs.items()}
            for c in contours:
                pts = np.asarray(c.ContourData, float).reshape(-1, 3)
                z = round(pts[0, 2], 3)
                assert zs[z] == c.ContourImageSequence[0].ReferencedSOPInstanceUID  # on its slice
                dist = np.hypot(pts[:, 0] - r.lesion_x_mm, pts[:, 1] - r.lesion_y_mm)
                assert dist.max() <= r.lesion_radius_mm * 1.16 * 1.2 + 1e-6


def test_uids_unique_and_valid(cohort):
    sops, series = set(), set()
    files = list((cohort / "dicom").rglob("*.dcm"))
    for f in files:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        for uid in (ds.SOPInstanceUID, ds.SeriesInstanceUID, ds.StudyInstanceUID, ds.FrameOfReferenceUID):
            assert UID_RE.match(uid) and len(uid) <= 64
        sops.add(ds.SOPInstanceUID)
        series.add(ds.SeriesInstanceUID)
    assert len(sops) == len(files)
    assert len(series) == 6 * 4  # CT, PT and two RTSTRUCT series per patient


def _decode(centre: str, row: dict) -> tuple[str, int | None]:
    """Independent decoding of each centre's export: (normalised patient id, outcome)."""
    if centre == "C1":
        return row["patient_id"].upper(), int(row["outcome"])
    if centre == "C2":
        return row["PatientID"].upper(), {"responder": 1, "non-responder": 0}[row["Response"]]
    return row["MRN"].upper(), {"TRUE": 1, "FALSE": 0}[row["Event"]]


def test_clinical_csv_quirks(cohort):
    gt = _gt(cohort).set_index("patient_id")
    headers = {}
    for c in ("C1", "C2", "C3"):
        with open(cohort / "clinical" / f"{c}.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
            headers[c] = tuple(rows[0].keys())
        ids = []
        for row in rows:
            pid, outcome = _decode(c, row)
            ids.append(pid)
            if pid in gt.index:
                assert gt.loc[pid, "outcome"] == outcome
        # every imaged patient of the centre has a row; plus a patient without imaging and a row without id
        assert set(gt.index[gt["centre"] == c]) <= set(ids)
        assert "" in ids and any(p not in gt.index and p for p in ids)
    # each centre names its columns its own way
    assert len(set(headers.values())) == 3
    text = (cohort / "clinical" / "C2.csv").read_text()
    assert "NA" in text and "c2-0001" in text  # missing token, lower-case ids
    assert "/" in (cohort / "clinical" / "C3.csv").read_text()  # dd/mm/yyyy birth dates


def test_invalid_age_quirk_planted(tmp_path):
    out = tmp_path / "c"
    s = synthesize(out, patients=9, centres=3, seed=2, executor="serial", pet=False, ct_size=64)
    quirks = {(q["centre"], q["quirk"]) for q in s["clinical_quirks"]}
    assert ("C1", "invalid_age") in quirks and ("C2", "invalid_age") in quirks
    c1 = pd.read_csv(out / "clinical" / "C1.csv", dtype=str)
    assert (c1["age"] == "999").sum() == 1


def test_deterministic_and_additive(tmp_path):
    kw = dict(centres=3, seed=11, executor="serial", pet=False, ct_size=64)
    a, b = tmp_path / "a", tmp_path / "b"
    synthesize(a, patients=4, **kw)
    synthesize(b, patients=6, **kw)
    # same seed: the first patients of a larger cohort are byte-identical
    files_a = sorted((a / "dicom").rglob("*.dcm"))
    assert files_a
    for f in files_a:
        assert sha256_file(f) == sha256_file(b / f.relative_to(a)), f
    before = {f: f.stat().st_mtime_ns for f in files_a}
    synthesize(a, patients=6, **kw)  # add two patients
    assert all(f.stat().st_mtime_ns == t for f, t in before.items())  # existing patients untouched
    assert sorted(p.relative_to(a) for p in (a / "dicom").rglob("*.dcm")) == \
        sorted(p.relative_to(b) for p in (b / "dicom").rglob("*.dcm"))
    # a folder holding another cohort is refused
    with pytest.raises(Exception, match="other settings"):
        synthesize(a, patients=6, centres=3, seed=12, executor="serial", pet=False, ct_size=64)


def test_synth_command(tmp_path, capsys):
    from biomarkers.cli import main

    out = tmp_path / "c"
    assert main(["synth", str(out), "--patients", "2", "--centres", "2", "--seed", "4", "--executor", "serial"]) == 0
    assert "2 patients in 2 centres" in capsys.readouterr().out
    gt = pd.read_csv(out / "ground_truth.csv")
    assert list(gt["centre"]) == ["C1", "C2"]
    assert sorted(p.name for p in (out / "clinical").iterdir()) == ["C1.csv", "C2.csv"]
    assert main(["synth", str(tmp_path / "d"), "--patients", "0"]) == 2  # a clear error, not a traceback
