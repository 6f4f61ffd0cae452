"""Planted identifiers (issue 15) on a copy of a shared STS series: every place real exports hide
identity, several character sets; ``ingest``, ``deid-export``, an ingest of the export and
``biomarkers run`` with MLflow leave 0 hits in every output byte, console and log line and the
MLflow store; the export conforms to PS3.15 Table E.1-1 attribute by attribute."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
import yaml

from biomarkers.cli import main
from biomarkers.deid import DeidSettings, Deidentifier, Pseudonymizer
from biomarkers.deid.canary import default_canaries, hard_needles, plant_dicom, plant_hard
from biomarkers.deid.export import ROI_DESCRIPTORS, WELL_KNOWN_UID_PREFIX, profile_actions
from biomarkers.deid.scan import scan_files, scan_mlflow

SECRET = "planted-test-site-secret-0123456789"
ROIS = {"GTV": ["GTV_Mass*"]}


def _plant(shared_data: Path, root: Path):
    c = default_canaries(1)[0]
    staging = root / "staging"
    needles = plant_dicom([shared_data / "sts/dicom/STS_001"], staging, [c], modalities=["CT"])
    needles.update(hard_needles(c))
    src = root / "hospital" / f"{c.patient_id} MÜLLER-SCHÖN {c.study_date[6:]}.{c.study_date[4:6]}.{c.study_date[:4]}"
    uid_map: dict[str, str] = {}
    images = sorted((staging / c.patient_id / "CT" / "image").glob("*.dcm"))
    (src / "CT").mkdir(parents=True)
    for k, f in enumerate(images):
        ds = pydicom.dcmread(f)
        old = ds.SOPInstanceUID
        plant_hard(ds, c, k, "ISO_IR 100")
        ds.BodyPartExamined, ds.ReviewerName = "NOVAKREHOR", "NOVAK-REHOR^PAVLA"  # ASCII in Latin-1 images
        uid_map[old] = ds.SOPInstanceUID
        ds.save_as(src / "CT" / f"MUELLER_SCHOEN_{c.birth_date}_{k:03d}.dcm", enforce_file_format=False)
    rs = pydicom.dcmread(next((staging / c.patient_id / "CT" / "mask").glob("*.dcm")))
    plant_hard(rs, c, 0, "ISO_IR 192")
    _plant_other(rs, needles)
    rs.walk(lambda d, e: setattr(e, "value", uid_map.get(str(e.value), e.value))
            if e.keyword == "ReferencedSOPInstanceUID" else None)
    (src / "RS").mkdir()
    rs.save_as(src / "RS" / f"RS_{c.patient_id}.dcm", enforce_file_format=False)
    # a burned-in screen capture of the same study (CT Image Storage, DERIVED\SECONDARY\SCREEN)
    sc = pydicom.dcmread(src / "CT" / f"MUELLER_SCHOEN_{c.birth_date}_000.dcm")
    sc.ImageType = ["DERIVED", "SECONDARY", "SCREEN"]
    sc.BurnedInAnnotation = "YES"
    sc.SeriesInstanceUID, sc.SOPInstanceUID, sc.SeriesNumber = sc.SOPInstanceUID + ".77", sc.SOPInstanceUID + ".78", 977
    sc.file_meta.MediaStorageSOPInstanceUID = sc.SOPInstanceUID
    (src / "screens").mkdir()
    sc.save_as(src / "screens" / "capture.dcm", enforce_file_format=False)
    shutil.rmtree(staging)
    return root / "hospital", needles, c


OTHER = "NOVÁK-ŘEHOŘ^PAVLA"  # fictional; UTF-8 only (not in Latin-1)


def _plant_other(ds, needles: dict) -> None:
    """Other identifiers in other places (not the canary's): a Czech name in a code string, a
    reviewer, an address, a private tag inside a nested item, a series description."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    ds.BodyPartExamined = "NOVAKREHOR"
    ds.ReviewerName = OTHER
    ds.PatientAddress = "Okružní 17, Ostrava"
    ds.SeriesDescription = f"kontury {OTHER}"
    item = Dataset()
    item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    item.ReferencedSOPInstanceUID = "1.2.3.4"
    item.private_block(0x0029, "SIEMENS CSA HEADER", create=True).add_new(0x10, "LO", OTHER)
    ds.ReferencedStudySequence = Sequence([item])
    needles.update({"other:name": (OTHER, "name"), "other:address": ("Okružní 17", "text"),
                    "other:code": ("NOVAKREHOR", "id")})


@contextlib.contextmanager
def _console(sink: list[str]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        yield
    sink.append(out.getvalue() + err.getvalue())


@pytest.fixture(scope="module")
def cohort(shared_data, tmp_path_factory):
    from biomarkers.pipeline.demo import DEMO_PARAMS

    root = tmp_path_factory.mktemp("planted")
    src, needles, c = _plant(shared_data, root)
    site = root / "site"  # the hospital side: source report, linkage table
    work = root / "work"
    cfg = work / "cfg"
    cfg.mkdir(parents=True)
    (cfg / "ingest.yaml").write_text(yaml.safe_dump({"masks": {"rois": ROIS}}))
    (cfg / "ct.yaml").write_text(yaml.safe_dump(DEMO_PARAMS["ct"]))
    uri = f"sqlite:///{work / 'mlflow.db'}"
    (cfg / "run.yaml").write_text(yaml.safe_dump({
        "name": "planted", "source": {"dicom": str(src)}, "out": str(work / "RUN"), "executor": "serial",
        "tracking": {"uri": uri, "experiment": "planted"}, "ingest": {"masks": {"rois": ROIS}},
        "extract": {"params": {"CT": str(cfg / "ct.yaml")}}}))
    console: list[str] = []
    mp = pytest.MonkeyPatch()
    mp.setenv("BIOMARKERS_SECRET", SECRET)
    mp.delenv("BIOMARKERS_SECRET_FILE", raising=False)
    mp.chdir(work)
    rc = {}
    try:
        for name, argv in (
            ("A", ["ingest", str(src), str(work / "A"), "-c", str(cfg / "ingest.yaml"), "--executor", "serial",
                   "--source-report", str(site / "source.json"), "--linkage-table", str(site / "links.csv")]),
            ("E", ["deid-export", str(src), str(work / "E")]),
            ("F", ["ingest", str(work / "E"), str(work / "F"), "-c", str(cfg / "ingest.yaml"), "--executor",
                   "serial", "--no-deid"]),
            ("RUN", ["-v", "run", str(cfg / "run.yaml")]),
        ):
            with _console(console):
                rc[name] = main(argv)
    finally:
        mp.undo()
    (root / "console.txt").write_text("\n".join(console), encoding="utf-8")
    return dict(src=src, needles=needles, c=c, work=work, site=site, uri=uri, rc=rc, console=root / "console.txt")


def test_commands_completed(cohort):
    assert cohort["rc"] == {"A": 0, "E": 0, "F": 0, "RUN": 0}, cohort["console"].read_text()[-3000:]
    wide = pd.read_parquet(cohort["work"] / "RUN" / "features" / "features_wide.parquet")
    assert len(wide) == 1 and list(wide.roi) == ["GTV"]  # the pipeline ran through extraction
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=cohort["uri"])
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert runs  # ... and logged to MLflow (scanned below)
    assert "ingest:" in cohort["console"].read_text()  # the console was captured


def test_positive_control(cohort):
    found = {h.label for h in scan_files([cohort["src"]], cohort["needles"])}
    assert {k for k in cohort["needles"] if ":hard:" in k} <= found


def test_zero_hits_in_outputs_console_logs_and_mlflow(cohort):
    work, needles = cohort["work"], cohort["needles"]
    hits = scan_files([work, cohort["console"]], needles) + scan_mlflow(cohort["uri"], needles)
    # Retain Longitudinal Temporal Information with Modified Dates (113107, declared): with whole-day
    # date shifts, times of day stay in the exported DICOM (SUV decay correction needs them; PS3.15
    # E.3.6). Everywhere else (NIfTI, sidecars, tables, logs, MLflow) the planted time must not appear.
    kept = [h for h in hits if h.label.endswith(":hard:time") and h.path.startswith(f"{work.name}/E/")
            and h.path.endswith(".dcm") and h.layer.startswith("raw")]
    assert kept, "the planted time of day was expected in the exported DICOM (113107)"
    hits = [h for h in hits if h not in kept]
    assert hits == [], "\n".join(map(str, hits[:30]))


def test_burned_in_capture_skipped_with_reason(cohort):
    from biomarkers.dicom.refusals import screen_capture_reason

    sc = pydicom.dcmread(next(cohort["src"].rglob("capture.dcm")), stop_before_pixels=True)
    reason = screen_capture_reason(sc.get)
    assert reason
    exp = json.loads((cohort["work"] / "E" / "report.json").read_text())
    assert reason in [c["reason"] for c in exp["cases"] if c["status"] == "skipped"]
    man = pd.read_parquet(cohort["work"] / "A" / "manifest.parquet")
    assert (man.kind == "image").sum() == 2 and (man[man.kind == "image"].status == "skipped").sum() == 1
    assert "screen" in " ".join(man.reason.fillna("")).lower() or "burned" in " ".join(man.reason.fillna("")).lower()


def test_unconfigured_roi_keyed_and_mapped_at_the_site(cohort):
    p = Pseudonymizer(SECRET.encode())
    name = "MÜLLER-SCHÖN ERIKA JOHANNA"
    ref = p.reference("roi", name)
    man = pd.read_parquet(cohort["work"] / "A" / "manifest.parquet")
    masks = man[man.kind == "mask"]
    assert set(masks.roi) == {"GTV", ref}
    assert ref in " ".join(masks.reason.fillna(""))
    site = json.loads((cohort["site"] / "source.json").read_text())
    assert site["roi_references"] == {ref: name}
    assert (cohort["site"] / "source.json").stat().st_mode & 0o777 == 0o600


def test_reingested_export_same_voxels_and_masks(cohort):
    a = pd.read_parquet(cohort["work"] / "A" / "manifest.parquet")
    f = pd.read_parquet(cohort["work"] / "F" / "manifest.parquet")
    key = ["kind", "roi", "status"]
    a, f = (x[x.status == "converted"].sort_values(key).reset_index(drop=True) for x in (a, f))
    assert len(a) == 2  # the CT and its GTV mask
    for col in ("patient_id", "series_uid", "roi", "shape", "voxel_count", "content_hash"):
        assert list(a[col].astype(str)) == list(f[col].astype(str)), col


def _pairs(cohort):
    deid = Deidentifier(DeidSettings(), pseudonymizer=Pseudonymizer(SECRET.encode()))
    new = {str(ds.SOPInstanceUID): ds for ds in map(pydicom.dcmread, (cohort["work"] / "E").rglob("*.dcm"))}
    for f in sorted(cohort["src"].rglob("*.dcm")):
        o = pydicom.dcmread(f)
        n = new.get(deid.uid(o.SOPInstanceUID))
        if n is not None:
            yield o, n, deid


def _check(o, n, deid, path: str, problems: list[str]) -> None:
    actions = profile_actions()
    for elem in o:
        kw, vr = elem.keyword, elem.VR
        where = f"{path}{kw or elem.tag}"
        if elem.tag.is_private:
            if elem.tag in n:
                problems.append(f"{where}: private tag kept")
            continue
        act = actions.get(kw)
        if act is None:
            continue
        got = n[kw] if kw in n else None
        orig = elem.value
        if kw in ROI_DESCRIPTORS:  # Clean Descriptors (113105): keyed unless allowed
            if got is not None and got.value != orig and not str(got.value).startswith("roi-"):
                problems.append(f"{where}: cleaned descriptor neither kept nor keyed")
            continue
        if got is None:
            if act in ("D", "U", "Z", "Z/D") and kw not in ("PatientSex",):
                problems.append(f"{where}: {act} but removed")
            continue
        v = got.value
        empty = v in (None, "") or (vr == "SQ" and len(v) == 0)
        temporal = vr in ("DA", "DT", "TM") and kw not in ("PatientBirthDate", "PatientBirthTime")
        if "X" == act and not temporal:  # 113107 retains (modified) the table's X dates and times too
            problems.append(f"{where}: X but present")
        elif vr == "SQ":
            if not empty:
                for i, (oi, ni) in enumerate(zip(orig, v)):
                    _check(oi, ni, deid, f"{where}[{i}].", problems)
        elif vr == "UI":
            if "U" in act and str(orig) and not str(orig).startswith(WELL_KNOWN_UID_PREFIX) and v != deid.uid(str(orig)):
                problems.append(f"{where}: U but not the keyed UID")
        elif vr in ("DA", "DT"):  # 113107: modified dates (shifted) for every non-X action
            if not empty and str(v) == str(orig):
                problems.append(f"{where}: date kept unmodified")
        elif vr == "TM":  # 113107 with whole-day shifts: times of day kept (PatientBirthTime: X, above)
            if str(v) != str(orig):
                problems.append(f"{where}: time of day not kept (113107, whole-day shift)")
        elif not empty and v == orig:  # D and Z (PS3.15: a zero-length or a dummy value), combinations
            problems.append(f"{where}: {act} but the original value kept")


def test_export_conforms_to_table_e1_1(cohort):
    problems: list[str] = []
    n_pairs = 0
    for o, n, deid in _pairs(cohort):
        n_pairs += 1
        _check(o, n, deid, "", problems)
        assert n.preamble == b"\0" * 128
        codes = [it.CodeValue for it in n.DeidentificationMethodCodeSequence]
        assert {"113100", "113104", "113105", "113107"} <= set(codes)
        assert "PatientBirthTime" not in n
        assert all(str(x.get("CodingSchemeDesignator")) != "99QCH" for x in n.get("AnatomicRegionSequence", []))
    assert n_pairs == 60  # 59 CT slices + the RTSTRUCT (the screen capture is not exported)
    assert problems == [], "\n".join(sorted(set(problems))[:40])
