"""The big privacy test: identifying values planted into shared STS DICOM headers (and a
clinical table) never reach any byte of any output; pseudonyms and UIDs are stable per
secret; exported DICOM copies convert to the same voxels and masks.

Inputs: STS_001 and STS_002 CT series + RTSTRUCT (shared data), copied to a temporary
folder named after the planted patient ids, with canary values in PatientName, PatientID,
OtherPatientIDs, PatientBirthDate, StudyDate, AccessionNumber, InstitutionName,
ReferringPhysicianName, StationName, free text (AdditionalPatientHistory, ImageComments,
descriptions, ProtocolName ``MGH_...``), ContributingEquipmentSequence serial numbers and
private tags (see :mod:`biomarkers.deid.canary`).
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from biomarkers.deid import DeidSettings, Deidentifier, Pseudonymizer
from biomarkers.deid.canary import default_canaries, plant_dicom
from biomarkers.dicom.export import export_dicom
from biomarkers.deid.scan import find_identifying_values, scan_files
from biomarkers.dicom.ingest import run_ingest
from biomarkers.dicom.settings import IngestSettings

pytestmark = pytest.mark.slow

PATIENTS = ["STS_001", "STS_002"]
SECRET = "privacy-test-site-secret-0123456789"
OTHER_SECRET = b"a-different-site-secret-0123456789"


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("privacy")


@pytest.fixture(scope="module")
def planted(shared_data, work):
    canaries = default_canaries(len(PATIENTS))
    src = work / "hospital" / "dicom"
    needles = plant_dicom([shared_data / "sts/dicom" / p for p in PATIENTS], src, canaries, modalities=["CT"])
    return src, needles, canaries


@pytest.fixture(scope="module")
def runs(planted, work, tmp_path_factory):
    """Ingest twice with the test secret (A, B), once with another secret (C); export DICOM
    copies (E) and ingest them with de-identification off (F: nothing left to remove)."""
    src, _, _ = planted
    mp = pytest.MonkeyPatch()  # module scope: the autouse secret fixture is function-scoped
    mp.setenv("BIOMARKERS_SECRET", SECRET)
    mp.delenv("BIOMARKERS_SECRET_FILE", raising=False)
    out = {}
    out["A"] = work / "A"
    out["B"] = work / "B"
    out["C"] = work / "C"
    out["E"] = work / "E"
    out["F"] = work / "F"
    reports = {}
    try:
        reports["A"] = run_ingest(src, out["A"], executor="serial")
        reports["B"] = run_ingest(src, out["B"], executor="serial")
        other = Deidentifier(DeidSettings(), pseudonymizer=Pseudonymizer(OTHER_SECRET))
        reports["C"] = run_ingest(src, out["C"], executor="serial", deidentifier=other)
        reports["E"] = export_dicom(src, out["E"])
        reports["F"] = run_ingest(
            out["E"], out["F"], settings=IngestSettings(deid=DeidSettings(enabled=False)), executor="serial"
        )
    finally:
        mp.undo()
    return out, reports


def _manifest(folder: Path) -> pd.DataFrame:
    return pd.read_parquet(folder / "manifest.parquet").sort_values(["kind", "path"]).reset_index(drop=True)


def test_all_runs_completed(runs):
    _, reports = runs
    for name in ("A", "B", "C", "F"):
        assert reports[name].counts() == {"done": 4, "skipped": 0, "failed": 0}, (name, reports[name].summary())
    assert reports["E"].counts()["done"] == 59 + 1 + 48 + 1  # every file of the two CT series + RTSTRUCTs


def test_positive_control_needles_are_in_the_input(planted):
    src, needles, _ = planted
    found = {h.label for h in scan_files([src], needles)}
    missing = {k for k in needles if not k.startswith("original:")} - found
    assert not missing


def test_no_planted_value_in_any_output_byte(runs, planted):
    out, _ = runs
    _, needles, _ = planted
    hits = scan_files([out[k] for k in ("A", "B", "C", "E", "F")], needles)
    assert hits == [], "\n".join(map(str, hits[:30]))


def test_nifti_headers_and_sidecars_clean(runs):
    out, _ = runs
    for f in out["A"].rglob("*.nii.gz"):
        h = nib.load(f).header
        for field in ("descrip", "aux_file", "db_name", "intent_name"):
            assert bytes(h[field]).strip(b"\x00 ") == b"", (f, field)
    for f in out["A"].rglob("*.json"):
        if f.name == "report.json":
            continue
        md = json.loads(f.read_text())
        acq = md.get("acquisition", {})
        assert set(acq) <= {"modality", "manufacturer", "model", "kvp", "tube_current_ma", "exposure_mas",
                            "convolution_kernel", "slice_thickness_mm", "pixel_spacing_mm", "body_part",
                            "patient_position"}, acq


def test_release_heuristics_find_nothing_in_manifest(runs):
    out, _ = runs
    df = pd.read_parquet(out["A"] / "manifest.parquet")
    assert find_identifying_values(df) == []


def test_same_secret_same_pseudonyms_and_uids(runs, planted):
    out, _ = runs
    _, _, canaries = planted
    a, b = _manifest(out["A"]), _manifest(out["B"])
    cols = ["patient_id", "study_uid", "series_uid", "source_series_uid", "path", "image_path", "content_hash"]
    pd.testing.assert_frame_equal(a[cols], b[cols])
    deid = Deidentifier(DeidSettings(), pseudonymizer=Pseudonymizer(SECRET.encode()))
    assert set(a.patient_id) == {deid.patient_id(c.patient_id) for c in canaries}
    files_a = sorted(p.relative_to(out["A"]) for p in out["A"].rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(out["B"]) for p in out["B"].rglob("*") if p.is_file())
    assert files_a == files_b
    for rel in files_a:
        # sidecars byte-identical (the integrity ledger records file times: not compared)
        if rel.suffix == ".json" and rel.name not in ("report.json", ".integrity.json"):
            assert (out["A"] / rel).read_bytes() == (out["B"] / rel).read_bytes(), rel


def test_other_secret_gives_other_pseudonyms_and_uids(runs):
    out, _ = runs
    a, c = _manifest(out["A"]), _manifest(out["C"])
    assert not set(a.patient_id) & set(c.patient_id)
    assert not set(a.series_uid) & set(c.series_uid)
    assert not set(a.study_uid) & set(c.study_uid)
    assert sorted(a.content_hash) == sorted(c.content_hash)  # same voxels, other names


def test_exported_dicom_converts_to_same_voxels_and_masks(runs):
    """ingest(export(src)) without further de-identification == ingest(src): same UIDs,
    same paths, same voxels and masks, same geometry."""
    out, reports = runs
    assert reports["F"].to_dict().get("deidentified") is False  # the explicit flag is recorded
    a, f = _manifest(out["A"]), _manifest(out["F"])
    cols = ["patient_id", "study_uid", "series_uid", "kind", "roi", "path", "shape", "spacing", "voxel_count",
            "content_hash"]
    pd.testing.assert_frame_equal(a[cols], f[cols])
    for rel in a.path:
        ia, i_f = nib.load(out["A"] / rel), nib.load(out["F"] / rel)
        np.testing.assert_array_equal(np.asarray(ia.dataobj), np.asarray(i_f.dataobj))
        np.testing.assert_allclose(ia.affine, i_f.affine, atol=1e-6)
    masks = a[a.kind == "mask"]
    assert len(masks) == 2 and (masks.voxel_count > 0).all()


# ------------------------------------------------------------------ downstream stages

CLINICAL_CSV = """patient_id,name,birth_date,age,sex,diagnosis_date,surgery_date,phone,email,comment
{p0},{n0},{b0},93,M,2019-08-10,2019-09-24,+41 61 555 12 34,jz@example.org,"{w0}, 12 Nightingale Lane"
{p1},{n1},{b1},57,F,2019-09-02,2019-10-30,+41 61 555 12 34,jz@example.org,"{w1}, 12 Nightingale Lane"
"""

SCHEMA = """patient_id: {column: patient_id, pattern: "QCH[0-9]{5}X"}
join: series
how: inner
variables:
  age: {type: float, min: 0, max: 120, age: true}
  sex: {type: category, mapping: {M: male, F: female}}
  diagnosis_date: {type: date}
  surgery_date: {type: date}
"""

PARAMS = """setting: {label: 1, binWidth: 25}
imageType: {Original: {}}
featureClass: {firstorder: [Mean, Median, Maximum], shape: [VoxelVolume]}
"""

RELEASE = """name: privacy-test
clinical_variables: [age_band, sex]
features: {include: ["original_*"]}
privacy: {k: 1, quasi_identifiers: [age_band, sex], age_variable: age}
mlflow_experiment: privacy-releases
"""


@pytest.fixture(scope="module")
def downstream(runs, planted, work):
    """extract (CLI) -> link with a planted clinical CSV (CLI) -> analysis table logged to
    MLflow (sqlite) -> release (CLI, logged to the same store)."""
    import mlflow

    from biomarkers.cli import main
    from biomarkers.tracking import log_feature_set

    out, _ = runs
    _, needles, canaries = planted
    hospital = work / "hospital"
    fmt = {}
    for i, c in enumerate(canaries):
        b = c.birth_date
        fmt.update({f"p{i}": c.patient_id, f"n{i}": c.name, f"b{i}": f"{b[6:]}.{b[4:6]}.{b[:4]}",
                    f"w{i}": c.name.replace("^", " ")})
    csv_path = hospital / "clinical_centre_a.csv"
    csv_path.write_text(CLINICAL_CSV.format(**fmt))
    clinical_needles = dict(needles)
    clinical_needles.update({"clinical:diagnosis_date": ("2019-08-10", "date"),
                             "clinical:surgery_date": ("2019-10-30", "date"),
                             "clinical:email": ("jz@example.org", "text")})
    cfg = work / "cfg"
    cfg.mkdir()
    (cfg / "schema.yaml").write_text(SCHEMA)
    (cfg / "params.yaml").write_text(PARAMS)
    (cfg / "release.yaml").write_text(RELEASE)
    d = {"FEAT": work / "FEAT", "LINK": work / "LINK", "REL": work / "REL", "MLRUNS": work / "mlstore"}
    d["MLRUNS"].mkdir()
    uri = f"sqlite:///{d['MLRUNS'] / 'mlflow.db'}"
    mp = pytest.MonkeyPatch()
    mp.setenv("BIOMARKERS_SECRET", SECRET)
    mp.setenv("MLFLOW_TRACKING_URI", uri)
    mp.chdir(work)  # nothing may land in the repository
    try:
        assert main(["extract", str(out["A"]), "--params", str(cfg / "params.yaml"), "--out", str(d["FEAT"]),
                     "--executor", "serial"]) == 0
        analysis = d["LINK"] / "analysis.parquet"
        assert main(["link", "--features", str(d["FEAT"]), "--clinical", str(csv_path), "--schema",
                     str(cfg / "schema.yaml"), "--out", str(analysis)]) == 0
        mlflow.set_tracking_uri(uri)
        exp = mlflow.create_experiment("privacy-analysis", artifact_location=str(d["MLRUNS"] / "artifacts"))
        with mlflow.start_run(experiment_id=exp):
            log_feature_set(analysis, "analysis")
            mlflow.log_artifact(str(analysis))
            mlflow.log_artifact(str(d["FEAT"] / "features_wide.parquet"))
        assert main(["release", "--features", str(d["FEAT"]), "--clinical", str(csv_path), "--config",
                     str(cfg / "release.yaml"), "--schema", str(cfg / "schema.yaml"), "--out", str(d["REL"]),
                     "--tracking-uri", uri]) == 0
    finally:
        mlflow.set_tracking_uri(None)
        mp.undo()
    return d, uri, clinical_needles, csv_path


def test_downstream_positive_control(downstream):
    _, _, needles, csv_path = downstream
    found = {h.label for h in scan_files([csv_path], needles)}
    assert {"clinical:diagnosis_date", "clinical:email"} <= found
    assert any(lbl.endswith(":PatientBirthDate") for lbl in found)  # DD.MM.YYYY rendering of the DICOM date


def test_no_planted_value_in_features_link_release_or_mlflow(downstream):
    from biomarkers.deid.scan import scan_mlflow

    d, uri, needles, _ = downstream
    assert list(d["REL"].iterdir()) and (d["FEAT"] / "features_wide.parquet").is_file()
    hits = scan_files([d["FEAT"], d["LINK"], d["REL"], d["MLRUNS"]], needles) + scan_mlflow(uri, needles)
    assert hits == [], "\n".join(map(str, hits[:30]))


def test_clinical_pseudonyms_meet_imaging_and_intervals_preserved(downstream, runs, planted):
    import datetime as dt

    d, _, _, _ = downstream
    out, _ = runs
    _, _, canaries = planted
    analysis = pd.read_parquet(d["LINK"] / "analysis.parquet")
    imaging = set(_manifest(out["A"]).patient_id)
    assert set(analysis.patient_id) == imaging  # every clinical row met its images
    p = Pseudonymizer(SECRET.encode())
    planted_dates = {canaries[0].patient_id: ("2019-08-10", "2019-09-24"), canaries[1].patient_id: ("2019-09-02", "2019-10-30")}
    for orig, (diag, surg) in planted_dates.items():
        row = analysis[analysis.patient_id == p.patient_id(orig)].iloc[0]
        got_diag = pd.Timestamp(row.diagnosis_date).date()
        got_surg = pd.Timestamp(row.surgery_date).date()
        assert got_diag == dt.date.fromisoformat(diag) + dt.timedelta(days=p.date_offset_days(orig))
        assert (got_surg - got_diag) == dt.date.fromisoformat(surg) - dt.date.fromisoformat(diag)  # 45 / 58 days
    assert analysis.loc[analysis.patient_id == p.patient_id(canaries[0].patient_id), "age"].iloc[0] == 89.0


def test_unused_source_files_do_not_leak_their_paths(planted, work):
    """Non-DICOM files in patient-named folders (notes, DICOMDIR...) are reported without the path."""
    src, needles, canaries = planted
    site = work / "hospital2"
    c = canaries[0]
    (site / c.patient_id / "CT").mkdir(parents=True)
    rs = next((src / c.patient_id).rglob("RS.dcm"))
    (site / c.patient_id / "CT" / "RS.dcm").write_bytes(rs.read_bytes())
    (site / c.patient_id / "CT" / f"notes_{c.patient_id}.txt").write_text("scanned twice")
    mp = pytest.MonkeyPatch()
    mp.setenv("BIOMARKERS_SECRET", SECRET)
    try:
        run_ingest(site, work / "G", executor="serial")
    finally:
        mp.undo()
    hits = scan_files([work / "G"], needles)
    assert hits == [], "\n".join(map(str, hits[:30]))
