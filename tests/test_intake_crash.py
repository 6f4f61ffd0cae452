"""kill -9 of the gateway during a storescu transfer: the sender sees the failure; every instance the
gateway had acknowledged is on disk; after a restart and the sender's retry every instance is there
exactly once and the features equal those of a run over the same files from disk."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time

import pydicom
import pytest

from test_intake_support import (GatewayProcess, assert_same_features, env, features, files_of, gateway_yaml,
                                 need, reference_features, sop_uid, storescu)

PEERS = [{"ae_title": "STORESCU", "addresses": ["127.0.0.1"]}]


def _acknowledged(output: str) -> list[str]:
    """Files storescu got a Success response for (its -v log: 'Sending file: X' ... 'Store Response (Success)')."""
    acked, current = [], None
    for line in output.splitlines():
        m = re.search(r"Sending file: (.+)$", line)
        if m:
            current = m.group(1).strip()
        elif "Received Store Response (Success)" in line and current:
            acked.append(current)
            current = None
    return acked


@pytest.fixture(scope="module")
def crash(tmp_path_factory):
    root = tmp_path_factory.mktemp("crash")
    files = files_of("STS_001", "CT")
    cfg = gateway_yaml(root, "site", PEERS, stable=2.0)
    spool = root / "site" / "spool"
    r = {"root": root, "files": files}
    gw = GatewayProcess(cfg)
    sender = subprocess.Popen([need("storescu", "dcmtk"), "-v", "-aet", "STORESCU", "-aec", "GATEWAY", "127.0.0.1",
                               str(gw.port), *map(str, files)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, env=env())
    deadline = time.time() + 60
    while time.time() < deadline and sender.poll() is None:
        if len(list((spool / "incoming").rglob("*.dcm"))) >= 10:
            os.kill(gw.proc.pid, signal.SIGKILL)
            break
        time.sleep(0.002)
    r["sender_out"], _ = sender.communicate(timeout=60)
    r["sender_rc"] = sender.returncode
    gw.proc.wait()
    r["gateway_rc"] = gw.proc.returncode
    gw.stop()
    r["after_kill"] = {sop_uid(p) for p in (spool / "incoming").rglob("*.dcm")}
    src = {sop_uid(f): f for f in files}
    r["after_kill_complete"] = all(pydicom.dcmread(p) == pydicom.dcmread(src[sop_uid(p)])
                                   for p in (spool / "incoming").rglob("*.dcm"))
    gw2 = GatewayProcess(cfg)
    try:
        r["retry"] = storescu(gw2.port, files)
        r["status"] = gw2.wait_processed(1)
    finally:
        r["stop_rc"] = gw2.stop()
    r["reference"] = reference_features(root, "crash", files)
    return r


def test_sender_sees_the_failure(crash):
    assert crash["gateway_rc"] == -signal.SIGKILL
    assert crash["sender_rc"] != 0, crash["sender_out"][-2000:]
    assert re.search(r"(Store Failed|Peer aborted|Association Aborted|Network|DIMSE Failed)", crash["sender_out"],
                     re.I), crash["sender_out"][-2000:]


def test_every_acknowledged_instance_survived_the_kill(crash):
    acked = _acknowledged(crash["sender_out"])
    assert 5 <= len(acked) < len(crash["files"])  # the kill came mid-transfer
    assert {sop_uid(p) for p in map(__import__("pathlib").Path, acked)} <= crash["after_kill"]
    assert crash["after_kill_complete"]  # every spooled file is whole and equals its source
    assert not list((crash["root"] / "site" / "spool" / "tmp").iterdir())  # half-written instances removed


def test_after_retry_every_instance_exactly_once(crash):
    assert crash["retry"].returncode == 0, crash["retry"].stdout[-2000:]
    received = sorted((crash["root"] / "site" / "received").rglob("*.dcm"))
    uids = [sop_uid(p) for p in received]
    src = {sop_uid(f): f for f in crash["files"]}
    assert sorted(uids) == sorted(src) and len(set(uids)) == len(uids)
    for p, uid in zip(received, uids):
        assert pydicom.dcmread(p) == pydicom.dcmread(src[uid])
    assert crash["status"]["counts"]["studies_failed"] == 0


def test_result_equals_an_uninterrupted_run(crash):
    assert_same_features(features(crash["root"] / "site-out"), crash["reference"])


def test_sigterm_exits_143(crash):
    assert crash["stop_rc"] == 143
