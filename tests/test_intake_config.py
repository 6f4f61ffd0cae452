"""Gateway config validation (unknown keys, privacy of the spool and audit log), the spool's durability
and duplicate rules, the instance checks, and TLS on the SCP (a real pynetdicom association)."""

from __future__ import annotations

import io
import stat
import subprocess
import sys

import pydicom
import pytest
import yaml

from test_intake_support import SECRET, env, files_of, free_port, gateway_yaml

PEERS = [{"ae_title": "PACS", "addresses": ["127.0.0.1"]}]


def _gateway_cli(*args):
    return subprocess.run([sys.executable, "-m", "biomarkers", "gateway", *map(str, args)], capture_output=True,
                          text=True, env=env(), timeout=60)


def _edit(path, **changes):
    cfg = yaml.safe_load(path.read_text())
    for k, v in changes.items():
        node = cfg
        *parents, last = k.split(".")
        for p in parents:
            node = node[p]
        node[last] = v
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_unknown_key_is_an_error_naming_file_and_key(tmp_path):
    cfg = _edit(gateway_yaml(tmp_path, "g", PEERS), **{"scp.prot": 104})
    res = _gateway_cli(cfg)
    assert res.returncode == 2
    assert f"{cfg}: scp.prot: unknown key" in res.stderr


def test_received_folder_refused_inside_out(tmp_path):
    from biomarkers.errors import PrivacyError
    from biomarkers.intake import load_gateway_config

    cfg = gateway_yaml(tmp_path, "g", PEERS)
    pipe = tmp_path / "g.pipeline.yaml"
    _edit(pipe, **{"source.dicom": str(tmp_path / "g-out" / "received")})
    with pytest.raises(PrivacyError, match="source.dicom"):
        load_gateway_config(cfg)


@pytest.mark.parametrize("key,where,message", [
    ("spool", "out/spool", "inside the de-identified output"),
    ("audit_log", "out/audit.jsonl", "inside the de-identified output"),
    ("spool", "g/received/spool", "overlap"),
])
def test_spool_and_audit_refused_inside_outputs(tmp_path, key, where, message):
    from biomarkers.errors import BiomarkersError
    from biomarkers.intake import load_gateway_config

    cfg = gateway_yaml(tmp_path, "g", PEERS)
    out = tmp_path / "g-out"  # the pipeline's out
    target = str(out / where.split("/", 1)[1]) if where.startswith("out/") else str(tmp_path / where)
    _edit(cfg, **{key: target})
    with pytest.raises(BiomarkersError, match=message):
        load_gateway_config(cfg)
    assert not (out / "spool").exists() and not (out / "audit.jsonl").exists()


@pytest.mark.parametrize("change,message", [
    ({"status": {"http_host": "0.0.0.0", "http_port": 8089}}, "loopback"),
    ({"scp.peers": [{"ae_title": "PACS", "addresses": ["pacs.example.org"]}]}, "not an IP address"),
    ({"scp.peers": []}, "scp.peers"),
    ({"scp.ae_title": "A_VERY_LONG_AE_TITLE_X"}, "scp.ae_title"),
    ({"stable_seconds": 0}, "stable_seconds"),
    ({"pull": {"protocol": "dimse"}}, "dimse section is missing"),
])
def test_invalid_settings_refused(tmp_path, change, message):
    from biomarkers.errors import ConfigError
    from biomarkers.intake import load_gateway_config

    cfg = _edit(gateway_yaml(tmp_path, "g", PEERS), **change)
    with pytest.raises(ConfigError, match=message):
        load_gateway_config(cfg)


def test_status_of_a_gateway_that_never_ran(tmp_path):
    from biomarkers.cli import main

    assert main(["gateway", "status", str(gateway_yaml(tmp_path, "g", PEERS))]) == 0


def test_missing_secret_is_exit_2(tmp_path):
    cfg = gateway_yaml(tmp_path, "g", PEERS)
    e = {k: v for k, v in env().items() if k != "BIOMARKERS_SECRET"}
    res = subprocess.run([sys.executable, "-m", "biomarkers", "gateway", str(cfg)], capture_output=True, text=True,
                         env=e, timeout=60)
    assert res.returncode == 2 and "BIOMARKERS_SECRET" in res.stderr


# ------------------------------------------------------------------------------------ spool
@pytest.fixture
def spool(tmp_path):
    from biomarkers.deid import Pseudonymizer
    from biomarkers.intake.spool import Spool

    return Spool(tmp_path / "spool", tmp_path / "received", Pseudonymizer(SECRET.encode()))


def _encoded(path):
    return path.read_bytes()


def test_store_is_owner_only_named_by_pseudonyms_and_recognises_duplicates(spool, tmp_path):
    f = files_of("STS_002", "CT")[0]
    ds = pydicom.dcmread(f, stop_before_pixels=True)
    r1 = spool.store(_encoded(f), ds.SOPInstanceUID, ds.StudyInstanceUID)
    r2 = spool.store(_encoded(f), ds.SOPInstanceUID, ds.StudyInstanceUID)
    assert (r1.status, r2.status) == ("stored", "duplicate")
    [path] = list((tmp_path / "spool" / "incoming").rglob("*.dcm"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert ds.SOPInstanceUID not in str(path) and ds.StudyInstanceUID not in str(path)
    assert path.read_bytes() == f.read_bytes()
    # same UID, different content: conflict, the first copy is kept
    changed = pydicom.dcmread(f)
    changed.ImageComments = "other"
    buf = io.BytesIO()
    changed.save_as(buf, enforce_file_format=True)
    assert spool.store(buf.getvalue(), ds.SOPInstanceUID, ds.StudyInstanceUID).status == "conflict"
    assert path.read_bytes() == f.read_bytes()


def test_restart_rebuilds_the_index_and_drops_unacknowledged_temporaries(spool, tmp_path):
    from biomarkers.intake.spool import Spool

    files = files_of("STS_002", "CT")[:3]
    for f in files:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        spool.store(_encoded(f), ds.SOPInstanceUID, ds.StudyInstanceUID)
    (tmp_path / "spool" / "tmp" / "half.dcm").write_bytes(b"partial")
    study = spool.pending()[0].ref
    assert spool.release(study) == 3
    again = Spool(tmp_path / "spool", tmp_path / "received", spool.pseudonymizer)
    assert not list((tmp_path / "spool" / "tmp").iterdir())
    assert all(again.has(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files)
    assert again.pending() == [] and len(list((tmp_path / "received" / study).iterdir())) == 3


def test_release_while_an_instance_is_being_flushed_leaves_it_in_the_spool(spool, monkeypatch):
    """A study released between an instance's rename into place and the end of its store (the folder
    flush): that instance stays in the spool, stored and indexed, and goes with the next release."""
    from biomarkers.intake import spool as spool_module

    first, late = files_of("STS_002", "CT")[:2]
    ds = pydicom.dcmread(first, stop_before_pixels=True)
    spool.store(_encoded(first), ds.SOPInstanceUID, ds.StudyInstanceUID)
    study = spool.pending()[0].ref
    flush, released = spool_module._fsync_dir, []

    def release_then_flush(path):  # the gateway thread releases the study while store() flushes the folder
        if str(path) == str(spool.incoming / study) and not released:
            released.append(None)
            released[0] = spool.release(study)
        flush(path)

    monkeypatch.setattr(spool_module, "_fsync_dir", release_then_flush)
    late_ds = pydicom.dcmread(late, stop_before_pixels=True)
    res = spool.store(_encoded(late), late_ds.SOPInstanceUID, late_ds.StudyInstanceUID)
    assert res.status == "stored" and released == [1]  # only the instance stored before
    assert spool.index[res.sop_ref].is_file() and spool.has(late_ds.SOPInstanceUID)
    assert [e.instances for e in spool.pending()] == [1]
    assert spool.release(study) == 1
    assert len(list(spool.received.joinpath(study).glob("*.dcm"))) == 2


def _dataset_part(data: bytes) -> bytes:
    from pydicom.filereader import _read_file_meta_info, read_preamble

    fp = io.BytesIO(data)
    read_preamble(fp, False)
    _read_file_meta_info(fp)
    return data[fp.tell():]


def test_instance_checks():
    from biomarkers.intake.scp import (STATUS_MALFORMED, STATUS_SOP_MISMATCH, STATUS_UNSUPPORTED, Malformed,
                                       check_instance, storage_sop_classes)

    classes = storage_sop_classes()
    for f in (files_of("STS_002", "CT")[0], files_of("STS_002", "CT", "mask")[0], files_of("STS_002", "MR_T1")[0]):
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        got = check_instance(_dataset_part(f.read_bytes()), ds.file_meta.TransferSyntaxUID, ds.SOPClassUID,
                             ds.SOPInstanceUID, classes)
        assert got == ds.StudyInstanceUID
    f = files_of("STS_002", "CT")[0]
    data, ds = _dataset_part(f.read_bytes()), pydicom.dcmread(f, stop_before_pixels=True)
    ts = ds.file_meta.TransferSyntaxUID
    cases = [(data[:-10], ts, ds.SOPInstanceUID, STATUS_MALFORMED, "truncated"),
             (data[:len(data) // 3], ts, ds.SOPInstanceUID, STATUS_MALFORMED, ""),
             (b"\xff" * 64, ts, ds.SOPInstanceUID, STATUS_MALFORMED, "malformed"),
             (data, "1.2.840.10008.1.2.1", ds.SOPInstanceUID, STATUS_MALFORMED, "VR"),  # implicit read as explicit
             (data, ts, "1.2.3.4", STATUS_SOP_MISMATCH, "does not match")]
    for raw, syntax, uid, status, words in cases:
        with pytest.raises(Malformed, match=words) as e:
            check_instance(raw, syntax, ds.SOPClassUID, uid, classes)
        assert e.value.status == status
    # an RTSTRUCT cut inside its nested contour sequences
    m = files_of("STS_002", "CT", "mask")[0]
    rt, mds = _dataset_part(m.read_bytes()), pydicom.dcmread(m, stop_before_pixels=True)
    with pytest.raises(Malformed, match="truncated"):
        check_instance(rt[: len(rt) // 2], mds.file_meta.TransferSyntaxUID, mds.SOPClassUID, mds.SOPInstanceUID,
                       classes)
    sc = pydicom.dcmread(f)
    sc.SOPClassUID = sc.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"  # secondary capture
    buf = io.BytesIO()
    sc.save_as(buf, enforce_file_format=True)
    with pytest.raises(Malformed) as e:
        check_instance(_dataset_part(buf.getvalue()), ts, sc.SOPClassUID, sc.SOPInstanceUID, classes)
    assert e.value.status == STATUS_UNSUPPORTED


def test_contexts_cover_ingest_objects_and_decodable_syntaxes():
    from biomarkers.intake.scp import build_ae, decodable_transfer_syntaxes

    ae = build_ae("GATEWAY")
    uids = {c.abstract_syntax for c in ae.supported_contexts}
    assert {"1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.4", "1.2.840.10008.5.1.4.1.1.128",
            "1.2.840.10008.5.1.4.1.1.481.3", "1.2.840.10008.5.1.4.1.1.66.4"} <= uids
    ts = set(decodable_transfer_syntaxes())
    assert {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.90",
            "1.2.840.10008.1.2.5"} <= ts  # native, JPEG lossless, JPEG 2000, RLE (pylibjpeg plugins)


# ------------------------------------------------------------------------------------ TLS
def _certificate(tmp_path):
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .sign(key, hashes.SHA256()))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                         serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    return tmp_path / "cert.pem", tmp_path / "key.pem"


def test_tls_association_stores_and_plain_one_fails(tmp_path, monkeypatch):
    import ssl

    from pynetdicom import AE

    from biomarkers.intake import load_gateway_config
    from biomarkers.intake.service import Gateway

    monkeypatch.setenv("BIOMARKERS_SECRET", SECRET)
    cert, key = _certificate(tmp_path)
    port = free_port()
    cfg_path = _edit(gateway_yaml(tmp_path, "g", PEERS, port=port, run_pipeline=False),
                     **{"scp.tls": {"cert": str(cert), "key": str(key)}})
    cfg, pipe = load_gateway_config(cfg_path)
    gw = Gateway(cfg, pipe).start()
    try:
        f = files_of("STS_002", "CT")[0]
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cert))
        ae = AE(ae_title="PACS")
        ae.add_requested_context("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2")
        assoc = ae.associate("127.0.0.1", port, ae_title="GATEWAY", tls_args=(ctx, "localhost"))
        assert assoc.is_established
        assert assoc.send_c_store(pydicom.dcmread(f)).Status == 0
        assoc.release()
        plain = ae.associate("127.0.0.1", port, ae_title="GATEWAY")
        assert not plain.is_established
    finally:
        gw.stop()
    assert len(list((tmp_path / "g" / "spool" / "incoming").rglob("*.dcm"))) == 1


# ------------------------------------------------------------------------------------ audit log
def test_audit_log_rotates_by_size_owner_only_and_reads_whole(tmp_path):
    from biomarkers.intake.audit import AuditLog, read_audit, rotated

    log = AuditLog(tmp_path / "audit.jsonl", rotate_bytes=1000, keep=None)
    for i in range(60):  # ~110 bytes a line: several rotations
        log.write("association_end", calling_ae="PACS", peer="127.0.0.1", instances=i)
    log.close()
    files = rotated(tmp_path / "audit.jsonl")
    assert len(files) >= 5
    for f in [*files, tmp_path / "audit.jsonl"]:
        assert f.stat().st_size <= 1000 and stat.S_IMODE(f.stat().st_mode) == 0o600, f
        assert f.read_text().endswith("\n")  # each file ends with a whole line
    assert [e["instances"] for e in read_audit(tmp_path / "audit.jsonl")] == list(range(60))
    # keep: the oldest rotated files beyond it are deleted
    log = AuditLog(tmp_path / "audit.jsonl", rotate_bytes=1000, keep=2)
    for i in range(20):
        log.write("association_end", instances=i)
    log.close()
    assert len(rotated(tmp_path / "audit.jsonl")) == 2
    assert read_audit(tmp_path / "audit.jsonl")[-1]["instances"] == 19


def test_audit_rotation_keys_validated(tmp_path):
    from biomarkers.intake import load_gateway_config

    cfg, _ = load_gateway_config(gateway_yaml(tmp_path, "g", PEERS))
    assert cfg.audit_rotate_mb == 64 and cfg.audit_keep is None
    bad = _edit(gateway_yaml(tmp_path, "h", PEERS), audit_rotate_mb=0)
    res = _gateway_cli(bad)
    assert res.returncode == 2 and "audit_rotate_mb" in res.stderr
