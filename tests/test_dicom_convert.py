"""DICOM -> NIfTI conversion on the shared data, against the IBSI team's reference NIfTI.

All geometry comparisons go through ``same_world`` (both images loaded with
nibabel and reoriented to the closest canonical RAS orientation, so voxel arrays
and affines are compared in one coordinate system).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest

from biomarkers.deid import Deidentifier
from biomarkers.dicom.ingest import IngestSettings, run_ingest

from conftest import SHARED, STS_MODALITIES, STS_PATIENTS

MOD = {"CT": "CT", "MR_T1": "MR", "PET": "PT"}


# ----------------------------------------------------------------- one comparison, in RAS
def same_world(ours: Path, ref: Path, rtol: float = 0.0) -> None:
    """Assert voxel values and world geometry agree (nibabel, closest canonical RAS).

    origin within 1e-3 mm, direction cosines within 1e-5, spacing within 1e-4 mm;
    values exactly equal (rtol=0) or within ``rtol`` relative to the image's max |value|.
    """
    a = nib.as_closest_canonical(nib.load(str(ours)))
    b = nib.as_closest_canonical(nib.load(str(ref)))
    assert a.shape == b.shape, f"{ours.name}: shape {a.shape} != reference {b.shape}"
    aa, ba = a.affine, b.affine
    sa, sb = np.linalg.norm(aa[:3, :3], axis=0), np.linalg.norm(ba[:3, :3], axis=0)
    np.testing.assert_allclose(aa[:3, 3], ba[:3, 3], atol=1e-3, err_msg=f"{ours.name}: origin (RAS mm)")
    np.testing.assert_allclose(aa[:3, :3] / sa, ba[:3, :3] / sb, atol=1e-5, err_msg=f"{ours.name}: direction")
    np.testing.assert_allclose(sa, sb, atol=1e-4, err_msg=f"{ours.name}: spacing")
    va = np.asanyarray(a.dataobj).astype(np.float64)
    vb = np.asanyarray(b.dataobj).astype(np.float64)
    if rtol == 0:
        assert np.array_equal(va, vb), f"{ours.name}: voxel values differ from the reference (max |diff| {np.max(np.abs(va - vb))})"
    else:
        np.testing.assert_allclose(va, vb, rtol=rtol, atol=rtol * float(np.max(np.abs(vb))), err_msg=f"{ours.name}: values")


def manifest(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / "manifest.parquet")


def image_path(out: Path, patient: str, modality: str) -> Path:
    df = manifest(out)
    pid = Deidentifier().patient_id(patient)
    sel = df[(df.patient_id == pid) & (df.modality == modality) & (df.kind == "image") & (df["stack"] == "")]
    assert len(sel) == 1, f"{patient} {modality}: {len(sel)} image rows\n{df.to_string()}"
    row = sel.iloc[0]
    assert row.status == "converted", f"{patient} {modality}: {row.status} ({row.reason})"
    return out / row.path


@pytest.fixture(scope="module")
def sts_out(shared_data, tmp_path_factory) -> Path:
    """All six STS patients ingested once, on a real local process pool."""
    import os

    out = tmp_path_factory.mktemp("sts") / "dataset"
    with pytest.MonkeyPatch.context() as mp:  # the autouse secret fixture is function-scoped
        mp.setenv("BIOMARKERS_SECRET", os.environ.get("BIOMARKERS_TEST_SECRET", "test-secret-0123456789abcdef"))
        report = run_ingest(shared_data / "sts" / "dicom", out, executor="local:2")
    assert report.counts()["failed"] == 0, report.summary()
    return out


# ----------------------------------------------------------------- reference conversions
@pytest.mark.parametrize("patient", STS_PATIENTS)
def test_sts_series_equal_reference(sts_out, shared_data, patient):
    for modality in STS_MODALITIES:
        ours = image_path(sts_out, patient, MOD[modality])
        ref = shared_data / "sts" / "nifti" / patient / f"{modality}_image.nii.gz"
        same_world(ours, ref, rtol=1e-5 if modality == "PET" else 0.0)
        if modality == "CT":
            assert nib.load(str(ours)).get_data_dtype() == np.int16  # integer HU, lossless


def test_ibsi_ct_phantom_equals_reference(shared_data, tmp_path):
    out = tmp_path / "phantom"
    run_ingest(shared_data / "ibsi1_ct_phantom" / "dicom", out, executor="serial")
    df = manifest(out)
    img = df[df.kind == "image"].iloc[0]
    same_world(out / img.path, shared_data / "ibsi1_ct_phantom" / "nifti" / "image" / "phantom.nii.gz")
    mask = df[df.kind == "mask"]
    assert len(mask) >= 1 and (mask.status == "converted").all(), mask.to_string()


def test_manifest_sidecars_and_privacy(sts_out):
    df = manifest(sts_out)
    from biomarkers.manifest import COLUMNS

    assert list(df.columns[: len(COLUMNS)]) == COLUMNS
    imgs = df[df.kind == "image"]
    assert len(imgs) == 18 and (imgs.status == "converted").all()
    assert imgs["shape"].str.fullmatch(r"\d+ x \d+ x \d+").all()
    from biomarkers.io import sha256_array

    for _, r in imgs.head(3).iterrows():  # content_hash is the hash of the voxels as written
        assert sha256_array(np.asanyarray(nib.load(str(sts_out / r.path)).dataobj)) == r.content_hash
    # one mask per RTSTRUCT on the image it was drawn on
    masks = df[df.kind == "mask"]
    assert (masks.status == "converted").sum() == 18
    assert set(masks.image_path) == set(imgs.path)
    assert (masks.volume_ml > 0).all() and (masks.voxel_count > 0).all()
    # sidecars: units and no identifiers
    for p in imgs.path:
        side = json.loads((sts_out / p).with_name(Path(p).name.replace(".nii.gz", ".json")).read_text())
        assert side["units"] in ("HU", "GML", "arbitrary")
        assert side["input_hash"] and side["deidentified"] is True
    pt = sts_out / imgs[imgs.modality == "PT"].path.iloc[0]
    assert json.loads(pt.with_name(pt.name.replace(".nii.gz", ".json")).read_text())["units"] == "GML"
    # no original identifiers anywhere in OUT (patient ids, UIDs) - raw bytes and decompressed
    from biomarkers.deid.scan import scan_files

    needles = {f"pid{i}": p for i, p in enumerate(STS_PATIENTS)}
    for i, f in enumerate([_series_files(SHARED, p, m)[0] for p in STS_PATIENTS[:2] for m in STS_MODALITIES]):
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        needles[f"series{i}"] = str(ds.SeriesInstanceUID)
        needles[f"study{i}"] = str(ds.StudyInstanceUID)
    files = sorted(p for p in sts_out.rglob("*") if p.is_file() and not p.name.endswith(".nii.gz"))
    files += sorted(sts_out.rglob("*.nii.gz"))[:4]  # NIfTI headers (voxels are pixel values only)
    hits = scan_files(files, needles)
    assert not hits, hits[:5]


def _series_files(shared_data, patient, modality):
    return sorted((shared_data / "sts" / "dicom" / patient / modality / "image").iterdir())


def test_flat_folder_random_names_same_result(shared_data, sts_out, tmp_path):
    """All STS files (images and RTSTRUCTs of the six patients) in one folder under random names.

    Files are hard-linked (symlinked across file systems) to keep the test fast; the
    index only sees one folder of anonymous names.
    """
    import os

    rng = np.random.default_rng(7)
    src = tmp_path / "flat"
    src.mkdir()
    files = sorted(p for p in (shared_data / "sts" / "dicom").rglob("*") if p.is_file())
    names = set()
    for f in files:
        name = "".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz0123456789"), 16))
        names.add(name)
        try:
            os.link(f, src / name)
        except OSError:
            (src / name).symlink_to(f)
    assert len(names) == len(files)
    out = tmp_path / "out"
    report = run_ingest(src, out, executor="local:2")
    assert report.counts() == {"done": 36, "skipped": 0, "failed": 0}, report.summary()
    a, b = manifest(out), manifest(sts_out)
    key = ["patient_id", "kind", "modality", "roi", "path"]
    m = a.merge(b, on=key, suffixes=("", "_ref"))
    assert len(m) == len(a) == len(b) == 36
    assert (m.content_hash == m.content_hash_ref).all()
    assert (m["shape"] == m["shape_ref"]).all()


def test_missing_slice_skipped_or_converted_with_flag(shared_data, tmp_path):
    src = tmp_path / "gap"
    src.mkdir()
    files = _series_files(shared_data, "STS_001", "PET")
    # remove the slice in the middle of the stack (by position, not by name)
    z = {f: float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]) for f in files}
    order = sorted(files, key=z.get)
    removed = order[len(order) // 2]
    for f in files:
        if f != removed:
            shutil.copyfile(f, src / f.name)
    out = tmp_path / "out"
    report = run_ingest(src, out, executor="serial")
    df = manifest(out)
    row = df[df.kind == "image"].iloc[0]
    assert row.status == "skipped" and row.reason.startswith("missing slices"), row.to_dict()
    assert "missing_slices" in row.qc_flags
    assert report.counts()["skipped"] == 1 and not (out / "images").exists()
    # with allow_gaps the stack converts, flagged, on the full grid; known slices unchanged
    out2 = tmp_path / "out2"
    run_ingest(src, out2, IngestSettings(allow_gaps=True), executor="serial")
    row = manifest(out2).iloc[0]
    assert row.status == "converted" and "missing_slices" in row.qc_flags
    ref = nib.as_closest_canonical(nib.load(str(shared_data / "sts/nifti/STS_001/PET_image.nii.gz")))
    got = nib.as_closest_canonical(nib.load(str(out2 / row.path)))
    assert got.shape == ref.shape
    np.testing.assert_allclose(got.affine, ref.affine, atol=1e-3)
    r, g = ref.get_fdata(), got.get_fdata()
    k = len(order) // 2
    keep = [i for i in range(r.shape[2]) if i != k]
    np.testing.assert_allclose(g[..., keep], r[..., keep], rtol=1e-5, atol=1e-5 * np.abs(r).max())
    np.testing.assert_allclose(g[..., k], 0.5 * (r[..., k - 1] + r[..., k + 1]), rtol=1e-5, atol=1e-5 * np.abs(r).max())


def _encode_gdcm_jpeg_lossless(src: Path, dst: Path) -> None:
    """JPEG Lossless, process 14 SV1 (pydicom has no encoder for it; GDCM has)."""
    import gdcm

    reader = gdcm.ImageReader()
    reader.SetFileName(str(src))
    assert reader.Read(), src
    change = gdcm.ImageChangeTransferSyntax()
    change.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.JPEGLosslessProcess14_1))
    change.SetInput(reader.GetImage())
    assert change.Change(), src
    writer = gdcm.ImageWriter()
    writer.SetFileName(str(dst))
    writer.SetFile(reader.GetFile())
    writer.SetImage(change.GetOutput())
    assert writer.Write(), dst


@pytest.mark.parametrize("syntax", ["RLELossless", "JPEG2000Lossless", "JPEGLSLossless", "JPEGLosslessSV1"])
def test_compressed_copies_same_voxels(shared_data, tmp_path, syntax):
    import pydicom.uid

    if syntax == "JPEGLSLossless":
        pytest.importorskip("jpeg_ls", reason="pydicom's JPEG-LS encoder needs the pyjpegls package")
    uid = getattr(pydicom.uid, syntax)
    src = tmp_path / "enc"
    src.mkdir()
    for f in _series_files(shared_data, "STS_003", "CT"):
        if syntax == "JPEGLosslessSV1":
            _encode_gdcm_jpeg_lossless(f, src / f.name)
            continue
        ds = pydicom.dcmread(f)
        ds.compress(uid)
        ds.save_as(src / f.name)
    assert pydicom.dcmread(next(src.iterdir())).file_meta.TransferSyntaxUID == uid
    out = tmp_path / "out"
    run_ingest(src, out, executor="serial")
    same_world(image_path(out, "STS_003", "CT"), shared_data / "sts/nifti/STS_003/CT_image.nii.gz")


def test_jpeg_baseline_copy_decodes_like_pillow(shared_data, tmp_path):
    """8-bit JPEG baseline (lossy) slices made with Pillow: our conversion (pydicom + pylibjpeg)
    gives what Pillow decodes from the same bytes (+-1: the two libjpeg builds' IDCTs)."""
    import io

    from PIL import Image
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    src = tmp_path / "jpeg"
    src.mkdir()
    expected = {}
    for f in _series_files(shared_data, "STS_001", "MR_T1"):
        ds = pydicom.dcmread(f)
        v = ds.pixel_array.astype(np.float64)
        v8 = np.clip(v * 255.0 / 1000.0, 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(v8).save(buf, "JPEG", quality=90)
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.PixelData = encapsulate([buf.getvalue()])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        ds.LossyImageCompression = "01"
        ds.save_as(src / f.name, enforce_file_format=True)
        expected[float(ds.ImagePositionPatient[2])] = np.asarray(Image.open(io.BytesIO(buf.getvalue())))
    out = tmp_path / "out"
    run_ingest(src, out, executor="serial")
    got = np.asanyarray(nib.load(str(image_path(out, "STS_001", "MR"))).dataobj).astype(int)
    exp = np.stack([expected[z] for z in sorted(expected)]).transpose(2, 1, 0).astype(int)  # [i=col, j=row, k]
    assert got.shape == exp.shape
    assert np.max(np.abs(got - exp)) <= 1


# ----------------------------------------------------------------- PET in Bq/ml -> SUV
HALF_LIFE = 6586.2  # s, F-18
WEIGHT = 72.5  # kg
DOSE = 350e6  # Bq


def _bqml_copy(shared_data, dest: Path, inj_datetime: str | None, inj_time: str, series_date: str, series_time: str,
               decay: str = "START", weight: float | None = WEIGHT) -> dict:
    """Rewrite STS_001 PET (GML) as Bq/ml: stored values kept, slopes scaled so that the
    activity concentration C = SUV * D_ref / W. Returns {SOPInstanceUID: (stored, new slope)}."""
    dest.mkdir()
    out = {}
    for f in _series_files(shared_data, "STS_001", "PET"):
        ds = pydicom.dcmread(f)
        ds.Units = "BQML"
        ds.DecayCorrection = decay
        if weight is None:
            del ds.PatientWeight
        else:
            ds.PatientWeight = str(weight)
        ds.SeriesDate, ds.SeriesTime = series_date, series_time
        ds.AcquisitionDate, ds.AcquisitionTime = series_date, series_time
        rp = ds.RadiopharmaceuticalInformationSequence[0]
        rp.RadionuclideTotalDose = str(DOSE)
        rp.RadionuclideHalfLife = str(HALF_LIFE)
        rp.RadiopharmaceuticalStartTime = inj_time
        if inj_datetime is None:
            if "RadiopharmaceuticalStartDateTime" in rp:
                del rp.RadiopharmaceuticalStartDateTime
        else:
            rp.RadiopharmaceuticalStartDateTime = inj_datetime
        new_slope = float(ds.RescaleSlope) * 1e5  # any positive factor: values become "Bq/ml"
        ds.RescaleSlope = f"{new_slope:.10g}"
        out[str(ds.SOPInstanceUID)] = (ds.pixel_array.astype(np.float64), float(ds.RescaleSlope), ds.ImagePositionPatient[2])
        ds.save_as(dest / f.name)
    return out


def _expected_suv(stored: dict, decay_s: float) -> np.ndarray:
    """SUVbw = C * W[g] / (D * 2^(-t/T)), per slice, ordered by z; array [i, j, k] (k increasing z)."""
    d_ref = DOSE * 2.0 ** (-decay_s / HALF_LIFE)
    slices = [v[0] * v[1] * WEIGHT * 1000.0 / d_ref for v in sorted(stored.values(), key=lambda v: float(v[2]))]
    return np.stack(slices).transpose(2, 1, 0)


@pytest.mark.parametrize(
    "case",
    [
        # injection 09:00:00, series 10:30:00 on the same day (full DateTime given): 5400 s
        dict(inj_datetime="20050702090000", inj_time="090000", series_date="20050702", series_time="103000", decay_s=5400.0),
        # time only, injection 23:40 the evening before a scan at 00:20 (crosses midnight): 2400 s
        dict(inj_datetime=None, inj_time="234000", series_date="20050703", series_time="002000", decay_s=2400.0,
             flag="injection_previous_day"),
        # injection DateTime on another day than the scan (a data-entry error): time of day used, flagged
        dict(inj_datetime="20050601090000", inj_time="090000", series_date="20050702", series_time="103000", decay_s=5400.0,
             flag="injection_date_disagrees"),
    ],
)
def test_bqml_pet_to_suv(shared_data, tmp_path, case):
    decay_s = case.pop("decay_s")
    flag = case.pop("flag", None)
    stored = _bqml_copy(shared_data, tmp_path / "pet", **case)
    out = tmp_path / "out"
    run_ingest(tmp_path / "pet", out, executor="serial")
    p = image_path(out, "STS_001", "PT")
    img = nib.load(str(p))
    got = np.asanyarray(img.dataobj).astype(np.float64)
    # our k runs along the slice normal (+z for axial HFS): same order as sorting by z
    exp = _expected_suv(stored, decay_s)
    np.testing.assert_allclose(got, exp, rtol=1e-5, atol=1e-6 * np.abs(exp).max())
    # and it is the SUV the reference (GML) conversion has, up to the 1e5 slope factor
    ref = np.asanyarray(nib.load(str(shared_data / "sts/nifti/STS_001/PET_image.nii.gz")).dataobj).astype(np.float64)
    factor = 1e5 * WEIGHT * 1000.0 / (DOSE * math.pow(2.0, -decay_s / HALF_LIFE))
    np.testing.assert_allclose(got, ref * factor, rtol=1e-5, atol=1e-5 * np.abs(ref * factor).max())
    side = json.loads(p.with_name(p.name.replace(".nii.gz", ".json")).read_text())
    assert side["units"].startswith("SUVbw")
    assert abs(side["pet_suv"]["decay_s"] - decay_s) < 1e-6
    if flag:
        assert flag in side["qc_flags"] and flag in manifest(out).qc_flags.iloc[0]
    else:
        assert not side["qc_flags"]


def test_bqml_pet_missing_weight_fails_with_reason(shared_data, tmp_path):
    _bqml_copy(shared_data, tmp_path / "pet", "20050702090000", "090000", "20050702", "103000", weight=None)
    out = tmp_path / "out"
    report = run_ingest(tmp_path / "pet", out, executor="serial")
    row = manifest(out).iloc[0]
    assert row.status == "failed" and "PatientWeight" in row.reason
    assert report.counts()["failed"] == 1  # the run itself completed


# ----------------------------------------------------------------- oblique and tilted geometry
def _rewrite_geometry(shared_data, dest: Path, rotation: np.ndarray | None = None, shear_mm: float = 0.0) -> list[np.ndarray]:
    """STS_003 CT with every slice rotated rigidly (about the first slice's position) and/or
    shifted in-plane by ``shear_mm`` per slice along the column direction (a gantry tilt).
    Returns the new ImagePositionPatient of every slice, sorted along the normal."""
    dest.mkdir()
    files = _series_files(shared_data, "STS_003", "CT")
    dss = sorted((pydicom.dcmread(f) for f in files), key=lambda d: float(d.ImagePositionPatient[2]))
    p0 = np.asarray(dss[0].ImagePositionPatient, dtype=float)
    R = np.eye(3) if rotation is None else rotation
    out = []
    for k, ds in enumerate(dss):
        iop = np.asarray(ds.ImageOrientationPatient, dtype=float)
        row, col = R @ iop[:3], R @ iop[3:]
        pos = p0 + R @ (np.asarray(ds.ImagePositionPatient, dtype=float) - p0) + k * shear_mm * col
        ds.ImageOrientationPatient = [f"{x:.10f}" for x in (*row, *col)]
        ds.ImagePositionPatient = [f"{x:.6f}" for x in pos]
        if shear_mm:
            ds.GantryDetectorTilt = "10"
        ds.save_as(dest / f"{k:04d}.dcm")
        out.append(np.asarray([float(x) for x in ds.ImagePositionPatient]))
    return out


def test_oblique_series_matches_simpleitk(shared_data, tmp_path):
    """An obliquely rotated copy: flagged 'oblique'; geometry and voxels equal SimpleITK's (GDCM) reading."""
    import SimpleITK as sitk

    a, b = np.deg2rad(25), np.deg2rad(-10)
    Rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    Rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    src = tmp_path / "obl"
    _rewrite_geometry(shared_data, src, rotation=Rx @ Rz)
    out = tmp_path / "out"
    run_ingest(src, out, executor="serial")
    row = manifest(out).iloc[0]
    assert row.status == "converted" and "oblique" in row.qc_flags, row.to_dict()
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(src)))
    ref = tmp_path / "sitk.nii.gz"
    sitk.WriteImage(reader.Execute(), str(ref))  # ITK writes its own LPS->RAS affine
    same_world(out / row.path, ref)


def test_gantry_tilt_flagged_and_positions_exact(shared_data, tmp_path):
    src = tmp_path / "tilt"
    positions = _rewrite_geometry(shared_data, src, shear_mm=0.5)
    out = tmp_path / "out"
    run_ingest(src, out, executor="serial")
    row = manifest(out).iloc[0]
    assert row.status == "converted" and "gantry_tilt" in row.qc_flags, row.to_dict()
    img = nib.load(str(out / row.path))
    ds = pydicom.dcmread(next(src.iterdir()), stop_before_pixels=True)
    dy, dx = (float(x) for x in ds.PixelSpacing)
    iop = np.asarray(ds.ImageOrientationPatient, dtype=float)
    # resampled onto an orthogonal grid (biomarkers.dicom.tilt): every source pixel centre lies
    # in output slice k, inside the widened grid
    a = img.affine[:3, :3]
    assert np.allclose(a.T @ a, np.diag(np.diag(a.T @ a)), atol=1e-9)
    inv = np.linalg.inv(img.affine)
    for k in (0, len(positions) // 2, len(positions) - 1):
        for i, j in ((0, 0), (10, 20), (ds.Columns - 1, ds.Rows - 1)):
            lps = positions[k] + i * dx * iop[:3] + j * dy * iop[3:]  # DICOM PS3.3 C.7.6.2.1.1
            ijk = (inv @ np.r_[lps * np.array([-1, -1, 1]), 1.0])[:3]
            assert abs(ijk[2] - k) < 1e-3 and np.all(ijk > -1e-3) and np.all(ijk < np.array(img.shape) - 1 + 1e-3), ijk


def test_bqml_pet_without_decay_correction_per_slice(shared_data, tmp_path):
    """DecayCorrection NONE: every slice decays to its own AcquisitionTime (here 10:00:00 + 20 s x slice)."""
    src = tmp_path / "pet"
    stored = _bqml_copy(shared_data, src, "20050702090000", "090000", "20050702", "100000", decay="NONE")
    times = {}
    for f in sorted(src.iterdir()):
        ds = pydicom.dcmread(f)
        k = int(ds.InstanceNumber)
        t = 3600 + 20 * k  # seconds after the 09:00:00 injection
        ds.AcquisitionTime = f"{10 + (20 * k) // 3600:02d}{((20 * k) % 3600) // 60:02d}{(20 * k) % 60:02d}"
        ds.save_as(f)
        times[float(ds.ImagePositionPatient[2])] = t
    out = tmp_path / "out"
    run_ingest(src, out, executor="serial")
    got = np.asanyarray(nib.load(str(image_path(out, "STS_001", "PT"))).dataobj).astype(np.float64)
    slices = []
    for v in sorted(stored.values(), key=lambda v: float(v[2])):
        d_ref = DOSE * 2.0 ** (-times[float(v[2])] / HALF_LIFE)
        slices.append(v[0] * v[1] * WEIGHT * 1000.0 / d_ref)
    exp = np.stack(slices).transpose(2, 1, 0)
    np.testing.assert_allclose(got, exp, rtol=1e-5, atol=1e-6 * np.abs(exp).max())


def test_failure_reason_names_no_source_path_with_spaces(shared_data, tmp_path, monkeypatch, caplog):
    """A series whose files vanish between planning and conversion fails with a reason; the library's
    message names the file by a quoted path whose folder ('Doe John', a patient's name) holds a space:
    neither the manifest, the report nor the log may carry any part of it."""
    import logging

    from biomarkers.dicom.ingest import Ingest

    monkeypatch.setenv("BIOMARKERS_SECRET", "test-secret-0123456789abcdef")
    src = tmp_path / "src" / "Doe John"
    shutil.copytree(shared_data / "ibsi1_ct_phantom" / "dicom", src)
    out = tmp_path / "out"
    ing = Ingest(tmp_path / "src", out, IngestSettings(index_cache="off"), executor="serial")
    plan = ing.plan()
    assert len(plan.items) == 1
    for f in plan.items[0].stack.all_files:
        f.path.unlink(missing_ok=True)
    with caplog.at_level(logging.WARNING, logger="biomarkers"):
        ing.run(plan)
    row = manifest(out).query("kind == 'image'").iloc[0]
    assert row.status == "failed" and "FileNotFoundError" in row.reason, row.reason
    for text in (row.reason, (out / "report.json").read_text(), caplog.text):
        assert "John" not in text and "Doe" not in text and str(tmp_path) not in text, text
