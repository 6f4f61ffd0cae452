"""``biomarkers pull`` from a real Orthanc (PACS): DICOMweb (QIDO-RS + WADO-RS, Orthanc's DICOMweb plugin)
and DIMSE (C-FIND + C-GET, C-FIND + C-MOVE) give the same instances and the same features; a pull killed
with SIGKILL resumes and fetches only what is missing; the filters select what they say; a C-MOVE pull
while the gateway runs goes to the gateway."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time

import pydicom
import pytest
import yaml

from test_intake_support import (SECRET, GatewayProcess, Orthanc, env, features, files_of, free_port, gateway_yaml,
                                 sop_uid)

PEERS = [{"ae_title": "ORTHANC", "addresses": ["127.0.0.1"]}]


@pytest.fixture(scope="module")
def pacs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pull")
    orthanc = Orthanc(root / "orthanc")
    try:
        files = files_of("STS_002", "CT")
        orthanc.upload(files)
        yield {"root": root, "orthanc": orthanc, "files": files}
    finally:
        orthanc.stop()


def _site(pacs, name: str, protocol: str, retrieve: str = "get", port: int | None = None):
    o = pacs["orthanc"]
    pull = ({"protocol": "dicomweb", "dicomweb": {"url": f"{o.url}/dicom-web"}} if protocol == "dicomweb" else
            {"protocol": "dimse", "dimse": {"ae_title": o.aet, "host": "127.0.0.1", "port": o.dicom,
                                            "retrieve": retrieve}})
    return gateway_yaml(pacs["root"], name, PEERS, port=port, pull=pull)


def _cli(*args, timeout=180):
    return subprocess.run([sys.executable, "-m", "biomarkers", *map(str, args)], capture_output=True, text=True,
                          env=env(), timeout=timeout)


def _instances(pacs, name: str) -> dict:
    root = pacs["root"] / name
    files = [*(root / "received").rglob("*.dcm"), *(root / "spool" / "incoming").rglob("*.dcm")]
    return {sop_uid(f): f for f in files}


@pytest.fixture(scope="module")
def pulled(pacs):
    """One pull over DICOMweb and one over DIMSE (C-GET), each into its own site, pipeline run. The DIMSE
    site's spool already holds an instance of another study (pushed, not yet stable): the pull leaves it."""
    from biomarkers.intake import load_gateway_config
    from biomarkers.intake.pull import pull
    from biomarkers.intake.service import Gateway

    res = _cli("pull", _site(pacs, "web", "dicomweb"))  # the command, as a user runs it
    assert res.returncode == 0, res.stdout + res.stderr
    with pytest.MonkeyPatch.context() as mp:  # module fixtures run before conftest's per-test secret
        mp.setenv("BIOMARKERS_SECRET", SECRET)
        cfg, pipe = load_gateway_config(_site(pacs, "dimse", "dimse"))
        waiting = files_of("STS_003", "CT")[0]
        gw = Gateway(cfg, pipe)
        ds = pydicom.dcmread(waiting, stop_before_pixels=True)
        assert gw.spool.store(waiting.read_bytes(), ds.SOPInstanceUID, ds.StudyInstanceUID).status == "stored"
        gw.audit.close()
        return {"web": res, "dimse": pull(cfg, pipe), "waiting": waiting}  # the same entry point, in this process


def test_pull_reports_counts_without_identifiers(pacs, pulled):
    n = len(pacs["files"])
    res = pulled["web"]
    assert f"{n} instances on the PACS: 0 already here, {n} fetched, 0 failed; pipeline done" in res.stdout
    ds = pydicom.dcmread(pacs["files"][0], stop_before_pixels=True)
    for v in (ds.StudyInstanceUID, ds.PatientID, ds.StudyDate, str(pacs["root"])):
        assert str(v) not in res.stdout + res.stderr
    rep = pulled["dimse"]
    assert (rep.instances, rep.present, rep.fetched, rep.failed, rep.processed) == (n, 0, n, 0, True)


def test_dicomweb_and_dimse_give_the_same_instances_and_features(pacs, pulled):
    web, dimse = _instances(pacs, "web"), _instances(pacs, "dimse")
    dimse.pop(sop_uid(pulled["waiting"]))  # the other study's instance (see the next test)
    src = {sop_uid(f): f for f in pacs["files"]}
    assert set(web) == set(dimse) == set(src)
    for uid, f in src.items():
        a, b, c = pydicom.dcmread(web[uid]), pydicom.dcmread(dimse[uid]), pydicom.dcmread(f)
        assert a == c and b == c  # every element and value; WADO-RS re-encodes the file, C-GET does not
    fw, fd = features(pacs["root"] / "web-out"), features(pacs["root"] / "dimse-out")
    assert len(fw) == 1 and fw.shape[1] > 50
    import pandas as pd

    pd.testing.assert_frame_equal(fw, fd, check_exact=True)


def test_pull_hands_only_the_pulled_study_to_the_pipeline(pacs, pulled):
    site = pacs["root"] / "dimse"
    assert [sop_uid(p) for p in (site / "spool" / "incoming").rglob("*.dcm")] == [sop_uid(pulled["waiting"])]
    received = {sop_uid(p) for p in (site / "received").rglob("*.dcm")}
    assert received == {sop_uid(f) for f in pacs["files"]}
    import pandas as pd

    manifest = pd.read_parquet(site.parent / "dimse-out" / "dataset" / "manifest.parquet")
    assert manifest["study_uid"].nunique() == 1


def test_rerun_fetches_nothing(pacs, pulled):
    from biomarkers.intake import load_gateway_config
    from biomarkers.intake.pull import pull

    cfg, pipe = load_gateway_config(_site(pacs, "dimse", "dimse"))
    rep = pull(cfg, pipe, run=False)
    n = len(pacs["files"])
    assert (rep.instances, rep.present, rep.fetched, rep.failed) == (n, n, 0, 0)


def test_interrupted_pull_resumes_fetching_only_the_missing(pacs):
    cfg = _site(pacs, "resume", "dimse")
    incoming = pacs["root"] / "resume" / "spool" / "incoming"
    proc = subprocess.Popen([sys.executable, "-m", "biomarkers", "pull", str(cfg), "--no-run"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env())
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        if incoming.is_dir() and len(list(incoming.rglob("*.dcm"))) >= 5:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.002)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the pull finished before it could be interrupted"
    have = len(list(incoming.rglob("*.dcm")))
    n = len(pacs["files"])
    assert 5 <= have < n
    from biomarkers.intake import load_gateway_config
    from biomarkers.intake.pull import pull

    rep = pull(*load_gateway_config(cfg), run=False)
    assert (rep.instances, rep.present, rep.fetched, rep.failed) == (n, have, n - have, 0)
    got = _instances(pacs, "resume")
    assert set(got) == {sop_uid(f) for f in pacs["files"]}
    assert len(list(incoming.rglob("*.dcm"))) == n  # each instance once
    assert not list((pacs["root"] / "resume" / "spool" / "tmp").iterdir())


def test_cmove_to_our_scp_gives_the_same_instances(pacs):
    from biomarkers.intake import load_gateway_config
    from biomarkers.intake.pull import pull

    port = free_port()
    pacs["orthanc"].add_modality("gateway", "GATEWAY", port)  # Orthanc finds the C-MOVE destination by AE title
    cfg, pipe = load_gateway_config(_site(pacs, "move", "dimse", retrieve="move", port=port))
    try:
        rep = pull(cfg, pipe, run=False)
    finally:
        pacs["orthanc"].remove_modality("gateway")
    assert (rep.instances, rep.fetched, rep.failed) == (len(pacs["files"]), len(pacs["files"]), 0)
    got = _instances(pacs, "move")
    for f in pacs["files"]:
        assert pydicom.dcmread(got[sop_uid(f)]) == pydicom.dcmread(f)


@pytest.mark.parametrize("protocol", ["dicomweb", "dimse"])
def test_filters_select_what_they_say(pacs, protocol):
    from biomarkers.errors import InputError
    from biomarkers.intake import load_gateway_config
    from biomarkers.intake.pull import pull

    cfg, pipe = load_gateway_config(_site(pacs, f"filter-{protocol}", protocol))
    ds = pydicom.dcmread(pacs["files"][0], stop_before_pixels=True)
    day = dt.datetime.strptime(ds.StudyDate, "%Y%m%d").date()
    n = len(pacs["files"])
    assert pull(cfg, pipe, modalities=["MR"], run=False).instances == 0  # no MR (nor its RTSTRUCT) here
    assert pull(cfg, pipe, since=day + dt.timedelta(days=1), run=False).studies == 0
    assert pull(cfg, pipe, since=day, modalities=["CT"], run=False).instances == n  # CT + its RTSTRUCT
    with pytest.raises(InputError, match="no study-level match for it: is it on the PACS"):
        pull(cfg, pipe, studies=["1.2.3.4.5.6.7"], run=False)  # unknown study: refused, not "0 instances"
    rep = pull(cfg, pipe, studies=[str(ds.StudyInstanceUID)], run=False)
    assert rep.instances == n and rep.present == n and rep.fetched == 0


def test_cmove_pull_while_the_gateway_runs_goes_to_the_gateway(pacs):
    """The gateway holds the spool; a C-MOVE pull then only queries and moves: the gateway receives."""
    port = free_port()
    cfg = _site(pacs, "live", "dimse", retrieve="move", port=port)
    data = yaml.safe_load(cfg.read_text())
    data.update(run_pipeline=False, stable_seconds=1)
    cfg.write_text(yaml.safe_dump(data))
    pacs["orthanc"].add_modality("live", "GATEWAY", port)
    from biomarkers.intake import load_gateway_config
    from biomarkers.intake.pull import pull

    gw = GatewayProcess(cfg)
    try:
        rep = pull(*load_gateway_config(cfg))
        n = len(pacs["files"])
        assert (rep.instances, rep.present, rep.fetched, rep.failed) == (n, 0, n, 0)
        st = gw.wait_processed(1)
        assert st["counts"]["instances_received"] == n
    finally:
        gw.stop()
        pacs["orthanc"].remove_modality("live")
    assert set(_instances(pacs, "live")) == {sop_uid(f) for f in pacs["files"]}


@pytest.mark.parametrize("protocol", ["dicomweb", "dimse"])
def test_a_series_missing_from_the_answers_is_asked_again_then_refused(pacs, protocol, monkeypatch):
    """The PACS's series answer for the study drops its last series (a fault injected into the real
    answers): the pull asks again; when the answers stay short, it refuses instead of looking complete."""
    from biomarkers.errors import InputError
    from biomarkers.intake import load_gateway_config
    from biomarkers.intake.pull import DicomwebPACS, DimsePACS, pull

    short = {"left": 1}
    if protocol == "dicomweb":
        real = DicomwebPACS.__init__

        def init(self, src):
            real(self, src)
            search = self.client.search_for_series

            def search_for_series(*a, **kw):
                hits = search(*a, **kw)
                if short["left"] > 0:
                    short["left"] -= 1
                    return hits[:-1]
                return hits

            self.client.search_for_series = search_for_series

        monkeypatch.setattr(DicomwebPACS, "__init__", init)
    else:
        find = DimsePACS._find

        def _find(self, assoc, level, **keys):
            hits = find(self, assoc, level, **keys)
            if level == "SERIES" and short["left"] > 0:
                short["left"] -= 1
                return hits[:-1]
            return hits

        monkeypatch.setattr(DimsePACS, "_find", _find)
    cfg, pipe = load_gateway_config(_site(pacs, f"short-{protocol}", protocol))
    n = len(pacs["files"])
    assert pull(cfg, pipe, run=False).instances == n  # asked again once: complete
    short["left"] = 10
    with pytest.raises(InputError, match="1 series listed of 2"):
        pull(cfg, pipe, run=False)


def test_a_study_with_instances_not_retrieved_is_not_processed(pacs, monkeypatch):
    """One CT instance cannot be stored during the pull (a spool fault injected into our receiving side;
    the PACS is real): the study would convert to a plausible, shorter volume, so it is not handed to the
    pipeline and the report names it; the next pull fetches the instance and processes the whole study."""
    from biomarkers.intake import load_gateway_config
    from biomarkers.intake.pull import pull
    from biomarkers.intake.scp import STATUS_OUT_OF_RESOURCES, StoreService

    victim = sop_uid(sorted(pacs["files"])[0])
    real = StoreService.store_dataset

    def store_dataset(self, data, ts, cls, sop, st):
        return STATUS_OUT_OF_RESOURCES if sop == victim else real(self, data, ts, cls, sop, st)

    cfg, pipe = load_gateway_config(_site(pacs, "held", "dimse"))
    out = pacs["root"] / "held-out" / "dataset"
    with monkeypatch.context() as mp:
        mp.setattr(StoreService, "store_dataset", store_dataset)
        rep = pull(cfg, pipe)
    assert rep.failed == 1 and len(rep.held) == 1 and rep.processed is None
    assert "1 study not processed" in rep.summary() and rep.held[0] in rep.summary()
    assert not (out / "manifest.parquet").exists(), "a study missing an instance was processed"
    rep = pull(cfg, pipe)
    assert (rep.fetched, rep.failed, rep.held, rep.processed) == (1, 0, [], True)
    import pandas as pd

    assert len(pd.read_parquet(out / "manifest.parquet")) > 0
