"""DICOM export (PS3.15 basic profile + retain longitudinal with modified dates) on shared STS data."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import numpy as np
import pydicom
import pytest

from biomarkers.cli import main
from biomarkers.deid import DeidSettings, Deidentifier, Pseudonymizer
from biomarkers.deid.canary import default_canaries, plant_dicom
from biomarkers.deid.export import ExportSettings, deidentify_dataset
from biomarkers.dicom.export import export_dicom
from biomarkers.deid.scan import scan_files

SECRET = b"export-test-secret-0123456789"
GEOMETRY = ["ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness", "Rows", "Columns",
            "RescaleSlope", "RescaleIntercept", "BitsStored", "PixelRepresentation", "PhotometricInterpretation"]


@pytest.fixture(scope="module")
def planted(shared_data, tmp_path_factory):
    """STS_001 CT (59 slices + RTSTRUCT) with canary identifiers planted."""
    src = tmp_path_factory.mktemp("export_src") / "dicom"
    canary = default_canaries(1)
    needles = plant_dicom([shared_data / "sts/dicom/STS_001"], src, canary, modalities=["CT"])
    return src, needles, canary[0]


@pytest.fixture(scope="module")
def exported(planted, tmp_path_factory):
    src, _, _ = planted
    out = tmp_path_factory.mktemp("export_out") / "OUT"
    deid = Deidentifier(DeidSettings(), pseudonymizer=Pseudonymizer(SECRET))
    report = export_dicom(src, out, deid)
    return out, report, deid


def _read_all(folder: Path) -> dict[str, pydicom.Dataset]:
    return {str(ds.SOPInstanceUID): ds for ds in (pydicom.dcmread(f) for f in sorted(folder.rglob("*.dcm")))}


def test_export_report_and_layout(exported, planted):
    out, report, deid = exported
    assert report.counts() == {"done": 60, "skipped": 0, "failed": 0}
    pseudonym = deid.patient_id(planted[2].patient_id)
    assert sorted(p.name for p in out.iterdir()) == sorted([pseudonym, "report.json"])
    assert len(list(out.rglob("*.dcm"))) == 60


def test_export_contains_no_planted_value(exported, planted):
    out, _, _ = exported
    src, needles, _ = planted
    # positive control: every planted value is found in the input
    planted_labels = {k for k in needles if not k.startswith("original:")}
    assert {h.label for h in scan_files([src], needles)} >= planted_labels
    hits = scan_files([out], needles)
    assert hits == [], "\n".join(map(str, hits[:20]))


def test_export_profile_attributes(exported, planted):
    out, _, deid = exported
    c = planted[2]
    for ds in _read_all(out).values():
        assert ds.PatientIdentityRemoved == "YES"
        assert ds.LongitudinalTemporalInformationModified == "MODIFIED"
        codes = [it.CodeValue for it in ds.DeidentificationMethodCodeSequence]
        # the source's own history (TCIA's codes in the STS files) kept, ours appended (issue 15)
        src_codes = [it.CodeValue for it in pydicom.dcmread(next(planted[0].rglob("*.dcm")), stop_before_pixels=True)
                     .get("DeidentificationMethodCodeSequence", [])]
        assert codes[:len(src_codes)] == src_codes
        assert {"113100", "113104", "113105", "113107"} <= set(codes) and len(set(codes)) == len(codes)
        assert ds.PatientID == ds.PatientName == deid.patient_id(c.patient_id)
        assert ds.PatientBirthDate == "" and ds.AccessionNumber == "" and ds.StudyID == ""
        for kw in ("OtherPatientIDs", "InstitutionName", "StationName", "ProtocolName", "AdditionalPatientHistory",
                   "ImageComments", "StudyDescription", "SeriesDescription", "ContributingEquipmentSequence",
                   "PatientAge", "PatientWeight"):
            assert kw not in ds, kw
        tags = []
        ds.walk(lambda d, e: tags.append(e.tag))
        assert not any(t.is_private for t in tags)
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        for kw in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID"):
            assert str(ds[kw].value).startswith("2.25.") and len(ds[kw].value) <= 64


def test_dates_shifted_intervals_preserved(exported, planted):
    out, _, deid = exported
    c = planted[2]
    offset = deid.offset_days(c.patient_id)
    assert offset < 0
    planted_study = dt.date.fromisoformat(f"{c.study_date[:4]}-{c.study_date[4:6]}-{c.study_date[6:]}")
    for ds in _read_all(out).values():
        study = dt.datetime.strptime(ds.StudyDate, "%Y%m%d").date()
        assert study - planted_study == dt.timedelta(days=offset)
        # intervals planted: content +3 days, structure set +5 days after the study
        assert dt.datetime.strptime(ds.ContentDate, "%Y%m%d").date() - study == dt.timedelta(days=3)
        if ds.Modality == "RTSTRUCT":
            assert dt.datetime.strptime(ds.StructureSetDate, "%Y%m%d").date() - study == dt.timedelta(days=5)
            # 113107 with whole-day shifts: the time of day is kept (PS3.15 E.3.6); the birth time is not
            src_rs = [o for o in map(pydicom.dcmread, planted[0].rglob("*.dcm")) if o.Modality == "RTSTRUCT"]
            assert ds.StructureSetTime == src_rs[0].StructureSetTime != ""
        assert "PatientBirthTime" not in ds


def test_same_voxels_geometry_and_contours(exported, planted):
    out, _, deid = exported
    src, _, _ = planted
    orig = _read_all(src)
    new = _read_all(out)
    assert len(orig) == len(new) == 60
    for old_uid, o in orig.items():
        n = new[deid.uid(old_uid)]
        for kw in GEOMETRY:
            assert (kw in o) == (kw in n), kw
            if kw in o:
                assert o[kw].value == n[kw].value, kw
        if o.Modality == "CT":
            np.testing.assert_array_equal(o.pixel_array, n.pixel_array)
            assert n.SeriesInstanceUID == deid.uid(o.SeriesInstanceUID)
            assert n.FrameOfReferenceUID == deid.uid(o.FrameOfReferenceUID)
        else:  # RTSTRUCT: same contours, references mapped with the same UID function
            assert [r.ROIName for r in n.StructureSetROISequence] == ["GTV_Mass_CT"]
            oc = [c.ContourData for c in o.ROIContourSequence[0].ContourSequence]
            nc = [c.ContourData for c in n.ROIContourSequence[0].ContourSequence]
            assert oc == nc
            rf = n.ReferencedFrameOfReferenceSequence[0]
            ct = next(d for d in new.values() if d.Modality == "CT")
            assert rf.FrameOfReferenceUID == ct.FrameOfReferenceUID
            assert rf.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0].SeriesInstanceUID == ct.SeriesInstanceUID
            refs = [
                i.ReferencedSOPInstanceUID
                for c in n.ROIContourSequence[0].ContourSequence
                for i in c.ContourImageSequence
            ]
            orefs = [
                i.ReferencedSOPInstanceUID
                for c in o.ROIContourSequence[0].ContourSequence
                for i in c.ContourImageSequence
            ]
            assert refs == [deid.uid(u) for u in orefs]


def test_series_converts_to_same_volume(exported, planted):
    """SimpleITK reads both series to the same voxels and geometry."""
    import SimpleITK as sitk

    out, _, _ = exported
    src, _, _ = planted

    def volume(folder: Path):
        r = sitk.ImageSeriesReader()
        files = [str(p) for p in sorted(folder.rglob("*.dcm")) if pydicom.dcmread(p, stop_before_pixels=True).Modality == "CT"]
        r.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(Path(files[0]).parent)))
        return r.Execute()

    a, b = volume(src), volume(out)
    assert a.GetSize() == b.GetSize() == (198, 202, 59)  # header dump: 198 columns, 202 rows; 59 files
    assert a.GetOrigin() == b.GetOrigin() and a.GetSpacing() == b.GetSpacing() and a.GetDirection() == b.GetDirection()
    np.testing.assert_array_equal(sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b))


def test_same_secret_same_uids_other_secret_different(planted, exported, tmp_path):
    src, _, _ = planted
    out1, _, _ = exported
    one = next(src.rglob("000000.dcm"))
    a = deidentify_dataset(pydicom.dcmread(one), Deidentifier(DeidSettings(), pseudonymizer=Pseudonymizer(SECRET)))
    assert a.SOPInstanceUID in _read_all(out1)
    b = deidentify_dataset(pydicom.dcmread(one), Deidentifier(DeidSettings(), pseudonymizer=Pseudonymizer(b"another-secret-0123456789")))
    for kw in ("PatientID", "SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID", "StudyDate"):
        assert a[kw].value != b[kw].value, kw


def test_characteristics_option_and_burned_in(planted, tmp_path):
    src, _, _ = planted
    one = next(src.rglob("000000.dcm"))
    deid = Deidentifier(DeidSettings(), pseudonymizer=Pseudonymizer(SECRET))
    ds = deidentify_dataset(pydicom.dcmread(one), deid, ExportSettings(retain_patient_characteristics=True))
    assert ds.PatientAge == "089Y"  # planted 093Y, capped
    assert float(ds.PatientWeight) == 71.0  # header dump of the source
    assert "113108" in {it.CodeValue for it in ds.DeidentificationMethodCodeSequence}
    d = tmp_path / "burned"
    d.mkdir()
    x = pydicom.dcmread(one)
    x.BurnedInAnnotation = "YES"
    x.save_as(d / "a.dcm")
    (d / "notes.txt").write_text("not dicom")
    y = pydicom.dcmread(one)
    y.PatientID = ""
    y.SOPInstanceUID = y.SOPInstanceUID + ".9"  # another instance (one SOP instance twice: a duplicate)
    y.save_as(d / "b.dcm")
    r = export_dicom(d, tmp_path / "out", deid)
    assert r.counts() == {"done": 0, "skipped": 2, "failed": 1}
    from biomarkers.dicom.refusals import screen_capture_reason

    assert set(r.reasons()) == {"not a DICOM file", screen_capture_reason(x.get),
                                "no PatientID: cannot derive a pseudonym"}
    assert all(x.case.startswith("src-") for x in r.cases)  # source paths are not written to the report


def test_export_refuses_disabled_deid_and_out_inside_src(planted, tmp_path):
    from biomarkers.errors import InputError, PrivacyError

    src, _, _ = planted
    with pytest.raises(PrivacyError):
        export_dicom(src, tmp_path / "o", Deidentifier(DeidSettings(enabled=False)))
    with pytest.raises(InputError, match="inside the source"):
        export_dicom(src, src / "out", Deidentifier(DeidSettings(), pseudonymizer=Pseudonymizer(SECRET)))


def test_cli_deid_export_with_linkage_table(planted, tmp_path, capsys):
    src, needles, c = planted
    rs_only = tmp_path / "rs"
    rs_only.mkdir()
    rs = next(src.rglob("RS.dcm"))
    (rs_only / "RS.dcm").write_bytes(rs.read_bytes())
    out = tmp_path / "OUT"
    assert main(["deid-export", str(rs_only), str(out), "--linkage-table", str(out / "link.csv")]) == 2
    assert not out.exists()
    link = tmp_path / "keys" / "link.csv"
    assert main(["deid-export", str(rs_only), str(out), "--linkage-table", str(link)]) == 0
    assert "1 done" in capsys.readouterr().out
    assert oct(os.stat(link).st_mode & 0o777) == "0o600"
    assert c.patient_id in link.read_text()
    assert scan_files([out], needles) == []
    # the pseudonym is the one of the environment's secret
    assert (out / Deidentifier(DeidSettings()).patient_id(c.patient_id)).is_dir()


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_seg_references_and_masks_survive_export(planted, tmp_path, monkeypatch):
    """A DICOM SEG (highdicom) over the planted CT: after export its references point at the
    exported CT, and ingest of the export gives the same image and mask as ingest of the source."""
    import highdicom as hd
    import pandas as pd
    from pydicom.sr.codedict import codes

    from biomarkers.dicom.ingest import run_ingest
    from biomarkers.dicom.settings import IngestSettings

    src, needles, c = planted
    monkeypatch.setenv("BIOMARKERS_SECRET", SECRET.decode())
    site = tmp_path / "site" / c.patient_id / "CT"
    (site / "image").mkdir(parents=True)
    ct_files = sorted((src / c.patient_id / "CT" / "image").glob("*.dcm"))
    for f in ct_files:
        (site / "image" / f.name).write_bytes(f.read_bytes())
    sources = sorted((pydicom.dcmread(f) for f in ct_files), key=lambda d: float(d.ImagePositionPatient[2]))
    mask = np.zeros((len(sources), sources[0].Rows, sources[0].Columns), dtype=np.uint8)  # frames, rows, columns
    mask[20:31, 90:131, 80:121] = 1  # k 20..30, j (rows) 90..130, i (columns) 80..120: 11 x 41 x 41 voxels
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=mask, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[hd.seg.SegmentDescription(
            segment_number=1, segment_label="GTV_Box", segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Neoplasm, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL)],
        series_instance_uid=hd.UID(), series_number=99, sop_instance_uid=hd.UID(), instance_number=1,
        manufacturer="QCH lab", manufacturer_model_name="seg", software_versions="0", device_serial_number=c.serial,
    )
    (site / "seg").mkdir()
    seg.save_as(site / "seg" / "SEG.dcm")

    out = tmp_path / "E"
    deid = Deidentifier(DeidSettings())
    assert export_dicom(tmp_path / "site", out, deid).counts()["done"] == 60
    assert scan_files([out], needles) == []
    new = _read_all(out)
    eseg = next(d for d in new.values() if d.Modality == "SEG")
    ct = {u: d for u, d in new.items() if d.Modality == "CT"}
    ct_series = next(iter(ct.values())).SeriesInstanceUID
    assert eseg.ReferencedSeriesSequence[0].SeriesInstanceUID == ct_series
    assert {i.ReferencedSOPInstanceUID for i in eseg.ReferencedSeriesSequence[0].ReferencedInstanceSequence} == set(ct)
    refs = {
        s.ReferencedSOPInstanceUID
        for fg in eseg.PerFrameFunctionalGroupsSequence
        for di in fg.DerivationImageSequence
        for s in di.SourceImageSequence
    }
    assert refs and refs <= set(ct)
    assert eseg.FrameOfReferenceUID == next(iter(ct.values())).FrameOfReferenceUID
    assert "DeviceSerialNumber" not in eseg and [s.SegmentLabel for s in eseg.SegmentSequence] == ["GTV_Box"]

    a = run_ingest(tmp_path / "site", tmp_path / "A", executor="serial")
    f = run_ingest(out, tmp_path / "F", settings=IngestSettings(deid=DeidSettings(enabled=False)), executor="serial")
    assert a.counts() == f.counts() == {"done": 2, "skipped": 0, "failed": 0}
    cols = ["patient_id", "series_uid", "kind", "roi", "path", "voxel_count", "content_hash"]
    ma = pd.read_parquet(tmp_path / "A" / "manifest.parquet").sort_values("path").reset_index(drop=True)[cols]
    mf = pd.read_parquet(tmp_path / "F" / "manifest.parquet").sort_values("path").reset_index(drop=True)[cols]
    pd.testing.assert_frame_equal(ma, mf)
    assert int(ma.loc[ma.kind == "mask", "voxel_count"].iloc[0]) == 11 * 41 * 41


def test_year_mode_and_resume(planted, exported, tmp_path):
    src, _, c = planted
    one = next(src.rglob("RS.dcm"))
    year = Deidentifier(DeidSettings(dates="year"), pseudonymizer=Pseudonymizer(SECRET))
    ds = deidentify_dataset(pydicom.dcmread(one), year)
    assert ds.StudyDate == c.study_date[:4] + "0701" and ds.StructureSetDate == c.study_date[:4] + "0701"
    # a second export into the same folder rewrites nothing
    out, first, deid = exported
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.dcm")}
    again = export_dicom(src, out, deid)
    assert again.counts()["done"] == 60 and sum(r.cached for r in again.cases) == 60
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.dcm")} == before


def test_incomplete_code_items_do_not_keep_their_text():
    """A code item without its scheme or without its value is still cleaned (Clean Structured Content):
    no scheme is a local code (keyed), no value drops the meaning; the patient's name never survives."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    ds = Dataset()
    ds.PatientID, ds.PatientName = "PID123456", "Zebulonx^Quorra"
    no_scheme, no_value, std = Dataset(), Dataset(), Dataset()
    no_scheme.CodeValue, no_scheme.CodeMeaning = "ZQX-LOCAL-7", "drawn for Quorra Zebulonx"
    no_value.CodingSchemeDesignator, no_value.CodeMeaning = "99LOCAL", "Zebulonx thorax"
    std.CodeValue, std.CodingSchemeDesignator, std.CodeMeaning = "51185008", "SCT", "Thorax"
    ds.AnatomicRegionSequence = Sequence([no_scheme, no_value, std])
    out = deidentify_dataset(ds, Deidentifier(DeidSettings(), pseudonymizer=Pseudonymizer(SECRET)))
    a, b, s = out.AnatomicRegionSequence
    assert a.CodingSchemeDesignator == "99BIOMARKERS" and a.CodeValue.startswith("code-")
    assert a.CodeMeaning == "local code"
    assert "CodeMeaning" not in b
    assert (s.CodeValue, s.CodingSchemeDesignator, s.CodeMeaning) == ("51185008", "SCT", "Thorax")
    assert "zebulonx" not in str(out).lower() and "quorra" not in str(out).lower()


def test_known_values_as_a_matcher_built_once():
    """deid-export normalises the export's known values once (known_matcher): the same output as
    passing the values, and the shared matcher is not changed by a file's own values."""
    from pydicom.dataset import Dataset

    from biomarkers.deid.export import known_matcher

    def ds():
        d = Dataset()
        d.PatientID, d.PatientName, d.Manufacturer = "PID123456", "Zebulonx^Quorra", "Klinikum Vandermoor"
        d.ManufacturerModelName = "Scanner 7"
        return d

    deid = Deidentifier(DeidSettings(), pseudonymizer=Pseudonymizer(SECRET))
    shared = known_matcher(["Klinikum Vandermoor"])
    before = (list(shared.keys), list(shared.dates))
    a = deidentify_dataset(ds(), deid, known=shared)
    b = deidentify_dataset(ds(), deid, known=["Klinikum Vandermoor"])
    assert a == b and "Manufacturer" not in a and a.ManufacturerModelName == "Scanner 7"
    assert (shared.keys, shared.dates) == before


def test_code_item_version_and_context_checked_like_kept_text():
    """The coding scheme version and context of a kept standard code are kept text: checked for the
    dataset's identifying values like any other (removed when they hold one)."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    ds = Dataset()
    ds.PatientID, ds.PatientName = "PID123456", "Zebulonx^Quorra"
    std = Dataset()
    std.CodeValue, std.CodingSchemeDesignator, std.CodeMeaning = "51185008", "SCT", "Thorax"
    std.CodingSchemeVersion, std.ContextIdentifier, std.MappingResource = "ZEBULONX", "QUORRA", "DCMR"
    ds.AnatomicRegionSequence = Sequence([std])
    out = deidentify_dataset(ds, Deidentifier(DeidSettings(), pseudonymizer=Pseudonymizer(SECRET)))
    s = out.AnatomicRegionSequence[0]
    assert "CodingSchemeVersion" not in s and "ContextIdentifier" not in s and s.MappingResource == "DCMR"
    assert (s.CodeValue, s.CodingSchemeDesignator, s.CodeMeaning) == ("51185008", "SCT", "Thorax")
