"""Index and qualify on real files: bad inputs never stop a run; stacks split; reruns are incremental."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest

from biomarkers.dicom.index import build_stacks, index_folder
from biomarkers.dicom.ingest import Ingest, IngestSettings, run_ingest
from biomarkers.dicom.qualify import qualify


def _series(shared_data, patient="STS_001", modality="PET") -> list[Path]:
    return sorted((shared_data / "sts" / "dicom" / patient / modality / "image").iterdir())


@pytest.fixture
def messy_src(shared_data, tmp_path) -> Path:
    """STS_001 PET plus: a truncated file, a text file named .dcm, a duplicated slice,
    a DICOMDIR, and a sagittal localizer slice inside the same series."""
    src = tmp_path / "messy"
    (src / "a" / "b").mkdir(parents=True)
    files = _series(shared_data)
    for f in files:
        shutil.copyfile(f, src / "a" / "b" / f.name)
    data = files[3].read_bytes()
    (src / "truncated.dcm").write_bytes(data[: len(data) - 1000])  # pixel data cut short
    (src / "notes.dcm").write_text("this is not a DICOM file\n")
    (src / "cut_in_header").write_bytes(data[:700])  # ends inside the header
    shutil.copyfile(files[5], src / "copy_of_slice")  # same SOP instance, another name
    (src / "DICOMDIR").write_bytes(b"\0" * 128 + b"DICM")
    ds = pydicom.dcmread(files[10])
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(src / "scout")
    sr = pydicom.dcmread(files[0])  # a non-image object (Basic Text SR) in its own series
    sr.SOPClassUID = sr.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    sr.SOPInstanceUID = sr.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    sr.SeriesInstanceUID = pydicom.uid.generate_uid()
    sr.Modality = "SR"
    for kw in ("PixelData", "Rows", "Columns"):
        delattr(sr, kw)
    sr.save_as(src / "report_sr")
    return src


def test_index_reports_bad_files_and_splits_localizer(messy_src, shared_data):
    idx = index_folder(messy_src)
    reasons = {u.rel: u.reason for u in idx.unused}
    assert reasons["truncated.dcm"].startswith("truncated"), reasons
    assert reasons["notes.dcm"] == "not a DICOM file", reasons
    assert reasons["cut_in_header"].startswith(("truncated", "unreadable")), reasons
    assert reasons["copy_of_slice"].startswith("duplicate"), reasons
    assert [u.duplicate_of for u in idx.unused if u.rel == "copy_of_slice"][0].startswith("a/b/")
    assert "DICOMDIR" in reasons["DICOMDIR"], reasons
    assert idx.n_files == len(_series(shared_data)) + 7
    assert [f.rel for f in idx.unsupported] == ["report_sr"]
    assert idx.unsupported[0].reason.startswith("unsupported object")
    stacks = build_stacks(idx.files)
    assert [len(s.files) for s in stacks] == [len(_series(shared_data)), 1]
    assert stacks[0].series_uid == stacks[1].series_uid and stacks[1].key.endswith("#2")
    for s in stacks:
        qualify(s)
    assert stacks[0].status == "pending" and not stacks[0].reason
    assert stacks[1].status == "skipped" and stacks[1].reason == "localizer"


def test_bad_files_do_not_stop_the_run(messy_src, shared_data, tmp_path):
    out = tmp_path / "out"
    ing = Ingest(messy_src, out, executor="serial")
    report = ing.run()
    unused = {u["path"]: u["reason"] for u in ing.last_unused}  # what the CLI prints
    assert set(unused) == {"truncated.dcm", "notes.dcm", "cut_in_header", "copy_of_slice", "DICOMDIR", "report_sr"}
    # report.json: the same files by keyed reference and reason, no source path (may name patients)
    rep = json.loads((out / "report.json").read_text())
    assert sorted(u["reason"] for u in rep["unused_files"]) == sorted(unused.values())
    assert all("path" not in u and u["ref"].startswith("src-") for u in rep["unused_files"])
    text = (out / "report.json").read_text()
    assert not any(name in text for name in unused if name != "DICOMDIR")
    dup = [u for u in rep["unused_files"] if u["duplicate_of"]][0]
    assert dup["duplicate_of"].startswith("src-") and dup["duplicate_of"] != dup["ref"]
    df = pd.read_parquet(out / "manifest.parquet")
    sr = df[df.modality == "SR"]
    assert len(sr) == 1 and sr.status.iloc[0] == "skipped" and sr.reason.iloc[0].startswith("unsupported object")
    img = df[(df.kind == "image") & (df.modality == "PT")].set_index("stack")
    assert img.loc["", "status"] == "converted"
    assert img.loc["#2", "status"] == "skipped" and img.loc["#2", "reason"] == "localizer"
    assert "localizer" in img.loc["#2", "qc_flags"]
    assert report.counts() == {"done": 1, "skipped": 2, "failed": 0}
    # the converted stack is the full series, unchanged by the extra files
    ref = nib.load(str(shared_data / "sts/nifti/STS_001/PET_image.nii.gz"))
    got = nib.load(str(out / img.loc["", "path"]))
    np.testing.assert_allclose(got.get_fdata(), ref.get_fdata(), rtol=1e-5, atol=1e-5 * float(np.abs(ref.get_fdata()).max()))


def test_duplicate_positions_skipped(shared_data, tmp_path):
    src = tmp_path / "dup"
    src.mkdir()
    files = _series(shared_data)
    for f in files:
        shutil.copyfile(f, src / f.name)
    ds = pydicom.dcmread(files[7])
    ds.SOPInstanceUID = pydicom.uid.generate_uid()  # a different instance at the same position
    ds.save_as(src / "extra")
    out = tmp_path / "out"
    run_ingest(src, out, executor="serial")
    row = pd.read_parquet(out / "manifest.parquet").iloc[0]
    assert row.status == "skipped" and row.reason.startswith("duplicate slice positions"), row.to_dict()
    assert "duplicate_positions" in row.qc_flags


def test_rerun_is_incremental_and_resumes(shared_data, tmp_path):
    src = tmp_path / "src"
    for m in ("CT", "PET"):
        (src / m).mkdir(parents=True)
        for f in _series(shared_data, "STS_003", m):
            shutil.copy2(f, src / m / f.name)
        shutil.copy2(shared_data / "sts/dicom/STS_003" / m / "mask" / "RS.dcm", src / m / "RS.dcm")
    before = {p: p.stat().st_mtime_ns for p in src.rglob("*")}
    out = tmp_path / "out"
    r1 = run_ingest(src, out, executor="serial")
    assert r1.counts()["done"] == 4 and r1.n_computed() == 4, r1.summary()
    assert {p: p.stat().st_mtime_ns for p in src.rglob("*")} == before  # SRC untouched
    m1 = pd.read_parquet(out / "manifest.parquet")
    # nothing changed: nothing recomputed, same manifest
    r2 = run_ingest(src, out, executor="serial")
    assert r2.n_computed() == 0 and r2.counts()["done"] == 4, r2.summary()
    pd.testing.assert_frame_equal(pd.read_parquet(out / "manifest.parquet"), m1)
    # one PET file changed (mtime): only the PET image and its mask are redone
    f = next((src / "PET").glob("0*"))
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10**9))
    r3 = run_ingest(src, out, executor="serial")
    redone = sorted(c.case for c in r3.cases if not c.cached)
    # the PET image is reconverted; masks are redone when a candidate image of the patient changed
    assert [c for c in redone if c.startswith("images/")] == [c for c in redone if c.startswith("images/") and "/PT_" in c]
    assert len([c for c in redone if c.startswith("images/")]) == 1, redone
    # interrupted run: the manifest and one image are gone, sidecars of the others remain
    (out / "manifest.parquet").unlink()
    ct = out / m1[(m1.kind == "image") & (m1.modality == "CT")].path.iloc[0]
    ct.unlink()
    r4 = run_ingest(src, out, executor="serial")
    redone = sorted(c.case for c in r4.cases if not c.cached)
    assert any("/CT_" in c and "__" not in c for c in redone) and not any("/PT_" in c and "__" not in c for c in redone), redone
    m4 = pd.read_parquet(out / "manifest.parquet")
    assert sorted(m4.content_hash) == sorted(pd.read_parquet(out / "manifest.parquet").content_hash)
    assert set(m4[m4.kind == "image"].content_hash) == set(m1[m1.kind == "image"].content_hash)
    assert not list(out.rglob("*.tmp*"))  # atomic writes leave no temp files


def test_plan_is_a_dry_run(shared_data, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for f in _series(shared_data, "STS_002", "PET"):
        shutil.copyfile(f, src / f.name)
    ing = Ingest(src, tmp_path / "out", IngestSettings(), executor="serial")
    ing.validate()
    plan = ing.plan()
    assert len(plan.items) == 1 and not plan.cached
    assert not (tmp_path / "out").exists()


def test_enhanced_multiframe_ct(shared_data, tmp_path):
    """A Legacy Converted Enhanced CT (one multi-frame file, made with highdicom) converts like the series."""
    hd = pytest.importorskip("highdicom")
    from highdicom.legacy import LegacyConvertedEnhancedCTImage

    files = _series(shared_data, "STS_003", "CT")
    dss = [pydicom.dcmread(f) for f in files]
    mf = LegacyConvertedEnhancedCTImage(
        legacy_datasets=dss,
        series_instance_uid=hd.UID(),
        series_number=99,
        sop_instance_uid=hd.UID(),
        instance_number=1,
    )
    src = tmp_path / "mf"
    src.mkdir()
    mf.save_as(src / "enhanced.dcm")
    out = tmp_path / "out"
    run_ingest(src, out, executor="serial")
    df = pd.read_parquet(out / "manifest.parquet")
    row = df[df.kind == "image"].iloc[0]
    assert row.status == "converted", row.to_dict()
    a = nib.as_closest_canonical(nib.load(str(out / row.path)))
    b = nib.as_closest_canonical(nib.load(str(shared_data / "sts/nifti/STS_003/CT_image.nii.gz")))
    np.testing.assert_allclose(a.affine, b.affine, atol=1e-3)
    assert np.array_equal(a.get_fdata(), b.get_fdata())


def test_undecodable_series_fails_alone(shared_data, tmp_path):
    """An RLE series with one slice cut short fails with a reason; the other series converts."""
    from pydicom.uid import RLELossless

    src = tmp_path / "src"
    (src / "good").mkdir(parents=True)
    (src / "bad").mkdir()
    for f in _series(shared_data, "STS_001", "PET"):
        shutil.copyfile(f, src / "good" / f.name)
    bad = _series(shared_data, "STS_002", "PET")
    for i, f in enumerate(bad):
        ds = pydicom.dcmread(f)
        ds.compress(RLELossless)
        ds.save_as(src / "bad" / f.name)
        if i == 4:
            data = (src / "bad" / f.name).read_bytes()
            (src / "bad" / f.name).write_bytes(data[: len(data) - 400])
    out = tmp_path / "out"
    report = run_ingest(src, out, executor="serial")
    df = pd.read_parquet(out / "manifest.parquet")
    assert sorted(df.status) == ["converted", "failed"], df[["status", "reason"]]
    reason = df[df.status == "failed"].reason.iloc[0]
    assert "slice" in reason and "STS_002" not in reason and str(src) not in reason, reason
    assert report.counts() == {"done": 1, "skipped": 0, "failed": 1}
