"""Push into the gateway from a real Orthanc (REST /modalities/{id}/store) and from dcmtk's storescu, plus
pynetdicom's SCU for the refusals: byte-identical spool, stable study -> pipeline (incremental when the
study grows), features equal to a run over the same files from disk, rejected peers, malformed and
conflicting instances, status and audit without identifiers.

One scenario (module fixture, ~30 s: three pipeline runs in the gateway + one reference run) and one
property per test. STS_002 CT (48 images + RTSTRUCT) comes from Orthanc, STS_003 CT from storescu."""

from __future__ import annotations

import json
import stat

import pydicom
import pytest
import requests
from pydicom.uid import ImplicitVRLittleEndian

from biomarkers.deid import Pseudonymizer
from test_intake_support import (SECRET, GatewayProcess, Orthanc, StoreSCP, assert_same_features,
                                 dataset_bytes_pydicom, features, files_of, free_port, gateway_yaml,
                                 reference_features, secret_free, sop_uid, storescu)

PEERS = [{"ae_title": "ORTHANC", "addresses": ["127.0.0.1"]},
         {"ae_title": "STORESCU", "addresses": ["127.0.0.1"]},
         {"ae_title": "PYSCU", "addresses": ["127.0.0.2"]}]


def _pyscu(port: int, files_or_ds, bind: str, aet: str = "PYSCU") -> list:
    """Send with pynetdicom from ``bind``; returns the statuses (None: association rejected)."""
    from pynetdicom import AE, _config

    _config.STORE_SEND_CHUNKED_DATASET = True  # paths are sent raw, as encoded in the file
    try:
        ae = AE(ae_title=aet)
        ae.add_requested_context("1.2.840.10008.5.1.4.1.1.2", ImplicitVRLittleEndian)
        assoc = ae.associate("127.0.0.1", port, ae_title="GATEWAY", bind_address=(bind, 0))
        if not assoc.is_established:
            return [None] if assoc.is_rejected else ["aborted"]
        out = []
        for f in files_or_ds:
            st = assoc.send_c_store(f)
            out.append(int(st.Status) if "Status" in st else "no response")
        assoc.release()
        return out
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = False


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    root = tmp_path_factory.mktemp("push")
    r: dict = {"root": root}
    ct2, pet2, ct3 = files_of("STS_002", "CT"), files_of("STS_002", "PET"), files_of("STS_003", "CT")
    r["ct2"], r["ct3"] = ct2 + pet2, ct3
    orthanc = Orthanc(root / "orthanc")
    ref = StoreSCP(root / "storescp")  # the reference receiver gets the very same sends
    gw = None
    try:
        http = free_port()
        cfg = gateway_yaml(root, "site", PEERS, stable=2.0, status={"http_port": http})
        r["cfg"], r["http"] = cfg, http
        gw = GatewayProcess(cfg)
        r["gw"] = gw
        orthanc.add_modality("gw", "GATEWAY", gw.port)
        orthanc.add_modality("ref", ref.aet, ref.port)
        ct_series = list(orthanc.series_of([x["ID"] for x in orthanc.upload(ct2)]))
        pet_series = list(orthanc.series_of([x["ID"] for x in orthanc.upload(pet2)]))
        assert len(ct_series) == 2 and len(pet_series) == 2  # images + RTSTRUCT each
        # 1. the CT (images + RTSTRUCT): processed once stable
        r["store_first"] = orthanc.store("gw", ct_series)
        assert orthanc.store("ref", ct_series + pet_series)["status"] == 200
        gw.wait_processed(1)
        r["report1"] = json.loads((root / "site-out" / "run_report.json").read_text())
        # 2. the study grows (its PET and the PET's RTSTRUCT): processed again, incrementally
        r["store_grown"] = orthanc.store("gw", pet_series)
        gw.wait_processed(2)
        r["report2"] = json.loads((root / "site-out" / "run_report.json").read_text())
        # 3. refusals: unlisted AE title, AE title from an unlisted address
        r["unlisted_ae"] = storescu(gw.port, ct3[:1], aet="INTRUDER")
        r["unlisted_addr"] = _pyscu(gw.port, ct3[:1], bind="127.0.0.1")
        # 4. one association: good, malformed (truncated), conflicting (same UID, other content), good
        bad = root / "truncated.dcm"
        data = ct3[1].read_bytes()
        bad.write_bytes(data[: len(data) - 1000])
        changed = pydicom.dcmread(ct3[0])
        changed.ImageComments = "changed"
        r["mixed"] = _pyscu(gw.port, [ct3[0], bad, changed, ct3[2]], bind="127.0.0.2")
        # 5. storescu sends the whole STS_003 CT (two of them are duplicates by now)
        r["storescu"] = storescu(gw.port, ct3)
        r["raw_sent"] = {sop_uid(ct3[0]), sop_uid(ct3[2])}  # first copies came raw from pynetdicom
        assert storescu(ref.port, ct3, aec=ref.aet).returncode == 0
        r["reference_received"] = ref.received()
        gw.wait_processed(3)
        r["status_cmd"] = gw.status()
        r["status_http"] = requests.get(f"http://127.0.0.1:{http}/status", timeout=10).json()
        r["reference"] = reference_features(root, "push", ct2 + ct3)
        yield r
    finally:
        try:
            if gw is not None:
                gw.stop()
        finally:
            orthanc.stop()
            ref.stop()


def _received(r) -> dict:
    """SOP Instance UID -> the file in the received-studies folder (names are keyed pseudonyms)."""
    pseudo = Pseudonymizer(SECRET.encode())
    files = {p.stem: p for p in (r["root"] / "site" / "received").rglob("*.dcm")}
    return {sop_uid(f): files.get(pseudo.uid(sop_uid(f))) for f in r["ct2"] + r["ct3"]}


def test_orthanc_store_succeeded(scenario):
    assert scenario["store_first"]["status"] == 200, scenario["store_first"]
    assert scenario["store_grown"]["status"] == 200, scenario["store_grown"]
    assert scenario["storescu"].returncode == 0, scenario["storescu"].stderr


def test_every_instance_byte_identical_in_received_folder(scenario):
    """What a C-STORE carries is the dataset (the receiver rebuilds the file meta): the dataset bytes in the
    received folder equal those dcmtk's storescp (+B, bit-preserving) wrote for the very same sends. Both
    senders re-encode some files (dcmtk writes sequences with explicit lengths), so the source file's bytes
    are the reference only for the two instances pynetdicom sent raw first; the element values always equal
    the source file's, and the meta names the same transfer syntax, SOP class and instance."""
    got = _received(scenario)
    assert all(p is not None for p in got.values()), [k for k, p in got.items() if p is None][:3]
    srcs = {sop_uid(f): f for f in scenario["ct2"] + scenario["ct3"]}
    ref = scenario["reference_received"]
    assert set(ref) == set(got)
    for uid, p in got.items():
        want = srcs[uid] if uid in scenario["raw_sent"] else ref[uid]
        assert dataset_bytes_pydicom(p) == dataset_bytes_pydicom(want), p.name
        a, b = pydicom.dcmread(p), pydicom.dcmread(srcs[uid])
        assert a == b  # every element and value (pixel data included)
        for k in ("TransferSyntaxUID", "MediaStorageSOPClassUID", "MediaStorageSOPInstanceUID"):
            assert a.file_meta[k].value == b.file_meta[k].value
    # nothing else: no copy of the malformed or conflicting instance, each instance once, spool empty
    all_files = list((scenario["root"] / "site" / "received").rglob("*"))
    assert len([f for f in all_files if f.is_file()]) == len(got)
    assert not list((scenario["root"] / "site" / "spool" / "incoming").rglob("*.dcm"))


def test_features_equal_ingest_of_same_files_from_disk(scenario):
    assert_same_features(features(scenario["root"] / "site-out"), scenario["reference"])


def test_grown_study_processed_again_incrementally(scenario):
    s1, s2 = scenario["report1"]["stages"], scenario["report2"]["stages"]
    assert s1["ingest"]["status"] == "ran" and s2["ingest"]["status"] == "ran"
    assert s2["extract"]["status"] in ("ran", "cached"), s2["extract"]
    cases = [c for c in scenario["report2"]["cases"] if c.get("stage") == "ingest" and c["status"] == "done"]
    first = {c["case"] for c in scenario["report1"]["cases"] if c.get("stage") == "ingest" and c["status"] == "done"}
    assert len(first) == 2 and len(cases) == 4, cases  # CT + mask, then + PET + mask
    # the CT image was not converted again (ingest re-matches a patient's masks when a new RTSTRUCT comes)
    assert all(c["cached"] for c in cases if c["case"] in first and c["case"].startswith("images/")), cases
    assert not any(c["cached"] for c in cases if c["case"] not in first), cases  # the PET and its mask were


def test_unlisted_ae_title_and_address_rejected_at_association(scenario):
    out = scenario["unlisted_ae"]
    assert out.returncode != 0 and "Association Rejected" in out.stderr + out.stdout, out.stderr
    assert "Calling AE Title Not Recognized" in out.stderr + out.stdout
    assert scenario["unlisted_addr"] == [None]
    assert scenario["status_cmd"]["counts"]["associations_rejected"] == 2


def test_malformed_and_conflicting_refused_association_carries_on(scenario):
    assert scenario["mixed"] == [0x0000, 0xC210, 0xC211, 0x0000]
    c = scenario["status_cmd"]["counts"]
    assert c["instances_refused"] == 2 and c["duplicates"] == 2
    msgs = [e["message"] for e in scenario["status_cmd"]["last_errors"]]
    assert any("truncated" in m for m in msgs) and any("different content" in m for m in msgs)
    assert "instance refused (status 0xC210)" in scenario["gw"].output()


def test_status_command_and_health_endpoint(scenario):
    st, http = scenario["status_cmd"], scenario["status_http"]
    n = len(scenario["ct2"]) + len(scenario["ct3"])
    assert st["counts"]["instances_received"] == n and st["counts"]["studies_received"] == 2
    assert st["counts"]["pipeline_runs"] == 3
    assert st["counts"]["studies_processed"] == 3 and st["counts"]["studies_failed"] == 0
    assert st["queue"]["studies_waiting_stable"] == 0 and st["queue"]["studies_waiting_pipeline"] == 0
    assert http["counts"] == st["counts"]


def test_audit_log_who_sent_what_with_pseudonymised_studies(scenario):
    audit = [json.loads(x) for x in (scenario["root"] / "site" / "spool" / "audit.jsonl").read_text().splitlines()]
    ends = [a for a in audit if a["event"] == "association_end"]
    by_ae: dict = {}
    for a in ends:
        assert a["peer"] in ("127.0.0.1", "127.0.0.2") and a["time"].endswith("Z")
        by_ae[a["calling_ae"]] = by_ae.get(a["calling_ae"], 0) + a["instances"]
    n2, n3 = len(scenario["ct2"]), len(scenario["ct3"])
    assert by_ae == {"ORTHANC": n2, "PYSCU": 2, "STORESCU": n3 - 2}
    rejected = [a for a in audit if a["event"] == "association" and not a["accepted"]]
    assert {a["calling_ae"] for a in rejected} == {"INTRUDER", "PYSCU"}
    import pandas as pd

    manifest = pd.read_parquet(scenario["root"] / "site-out" / "dataset" / "manifest.parquet")
    processed = {a["study"] for a in audit if a["event"] == "study_processed"}
    assert processed == set(manifest["study_uid"])  # the dataset's de-identified study UIDs


def test_no_identifier_in_status_audit_or_console(scenario):
    files = scenario["ct2"][:1] + scenario["ct3"][:1]
    texts = {"status": json.dumps(scenario["status_cmd"]), "http": json.dumps(scenario["status_http"]),
             "audit": (scenario["root"] / "site" / "spool" / "audit.jsonl").read_text(),
             "console": scenario["gw"].output()}
    for name, text in texts.items():
        assert secret_free(text, files) == [], name
        assert str(scenario["root"]) not in text, name  # no site path either


def test_spool_and_audit_owner_only(scenario):
    site = scenario["root"] / "site"
    for p in [site / "spool" / "audit.jsonl", *list((site / "received").rglob("*.dcm"))[:5]]:
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    for d in (site / "spool", site / "spool" / "incoming", *list((site / "received").iterdir())):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d

