"""Helpers of the intake tests (no tests here): a real Orthanc on loopback ports, the gateway as a
child process, configs, the reference run of the pipeline over the same files read from disk."""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pydicom
import pytest
import requests
import yaml

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("BIOMARKERS_SHARED_DATA", REPO.parent / "shared" / "data"))
STS = SHARED / "sts" / "dicom"
CT_PARAMS = REPO / "configs" / "radiomics" / "ct.yaml"
SECRET = os.environ.get("BIOMARKERS_TEST_SECRET", "test-secret-0123456789abcdef")
#: dcmtk (storescu, Orthanc's SCU) keeps Nagle's algorithm on unless told: ~40 ms per instance otherwise.
DCMTK_ENV = {"TCP_NODELAY": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def need(binary: str, package: str) -> str:
    path = shutil.which(binary) or (f"/usr/sbin/{binary}" if os.path.exists(f"/usr/sbin/{binary}") else None)
    if path is None:
        pytest.skip(f"{binary} not found: install the Debian package {package} (.ci/run does it with apt-get)")
    return path


def dicomweb_plugin() -> str:
    for pat in ("/usr/share/orthanc/plugins*/libOrthancDicomWeb.so*", "/usr/lib/orthanc/libOrthancDicomWeb.so*",
                "/usr/lib/x86_64-linux-gnu/orthanc/libOrthancDicomWeb.so*"):
        hits = sorted(glob.glob(pat))
        if hits:
            return hits[0]
    pytest.skip("Orthanc's DICOMweb plugin not found: install the Debian package orthanc-dicomweb")


def files_of(*parts: str) -> list[Path]:
    """Every DICOM file below ``STS/<parts>`` (e.g. ``files_of("STS_002", "CT")``)."""
    root = STS.joinpath(*parts)
    if not root.is_dir():
        raise RuntimeError(f"reference data not found at {root}; set BIOMARKERS_SHARED_DATA")
    return sorted(p for p in root.rglob("*.dcm"))


def dataset_bytes_pydicom(path: Path) -> bytes:
    """The encoded dataset after the file meta, located by pydicom's own reader (independent of the spool code)."""
    from pydicom.filereader import _read_file_meta_info, read_preamble

    with open(path, "rb") as fp:
        read_preamble(fp, False)
        _read_file_meta_info(fp)
        return fp.read()


def sop_uid(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"]).SOPInstanceUID)


class Orthanc:
    """A real Orthanc on free loopback ports with its own storage (stopped by :meth:`stop`)."""

    def __init__(self, root: Path, aet: str = "ORTHANC", modalities: dict | None = None):
        binary = need("Orthanc", "orthanc")
        plugin = dicomweb_plugin()
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.http, self.dicom, self.aet = free_port(), free_port(), aet
        cfg = {
            "Name": "intake-test", "StorageDirectory": str(root / "db"), "IndexDirectory": str(root / "db"),
            "HttpPort": self.http, "DicomPort": self.dicom, "DicomAet": aet, "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "Plugins": [plugin], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            "DicomModalities": modalities or {}, "DicomCheckCalledAet": False, "StableAge": 1,
            "DicomAlwaysAllowGet": True, "DicomAlwaysAllowFind": True, "DicomAlwaysAllowMove": True,
        }
        (root / "orthanc.json").write_text(json.dumps(cfg))
        self.log = open(root / "orthanc.log", "wb")
        self.proc = subprocess.Popen([binary, str(root / "orthanc.json")], stdout=self.log, stderr=subprocess.STDOUT,
                                     env={**os.environ, **DCMTK_ENV})
        self.url = f"http://127.0.0.1:{self.http}"
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                if requests.get(f"{self.url}/system", timeout=1).ok:
                    return
            except requests.RequestException:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"Orthanc did not start (see {root / 'orthanc.log'})")

    def upload(self, files) -> list[dict]:
        """POST every file to /instances (Orthanc keeps the bytes as uploaded)."""
        out = []
        for f in files:
            r = requests.post(f"{self.url}/instances", data=Path(f).read_bytes(), timeout=30)
            r.raise_for_status()
            out.append(r.json())
        return out

    def add_modality(self, name: str, aet: str, port: int, host: str = "127.0.0.1") -> None:
        requests.put(f"{self.url}/modalities/{name}", json={"AET": aet, "Host": host, "Port": port},
                     timeout=10).raise_for_status()

    def remove_modality(self, name: str) -> None:
        requests.delete(f"{self.url}/modalities/{name}", timeout=10).raise_for_status()

    def store(self, modality: str, resources: list[str]) -> dict:
        r = requests.post(f"{self.url}/modalities/{modality}/store",
                          json={"Resources": resources, "Synchronous": True}, timeout=120)
        return {"status": r.status_code, "body": r.text}

    def series_of(self, instance_ids: list[str]) -> dict[str, str]:
        """Orthanc series id -> Modality, for uploaded instance ids."""
        out = {}
        for i in instance_ids:
            s = requests.get(f"{self.url}/instances/{i}/series", timeout=10).json()
            out[s["ID"]] = s["MainDicomTags"].get("Modality", "")
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def pipeline_yaml(root: Path, name: str, src: Path, out: Path) -> Path:
    cfg = {"name": name, "source": {"dicom": str(src)}, "out": str(out), "executor": "serial",
           "tracking": {"enabled": False}, "qc": {"enabled": False}, "ingest": {"masks": {"rois": {"GTV": ["GTV*", "gtv*"]}}},
           "extract": {"params": {"CT": str(CT_PARAMS)}}}
    p = root / f"{name}.pipeline.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def gateway_yaml(root: Path, name: str, peers: list[dict], port: int | None = None, stable: float = 2.0,
                 pull: dict | None = None, **extra) -> Path:
    site = root / name
    pipe = pipeline_yaml(root, name, site / "received", root / f"{name}-out")
    cfg = {"pipeline": str(pipe), "spool": str(site / "spool"), "stable_seconds": stable,
           "scp": {"ae_title": "GATEWAY", "host": "127.0.0.1", "port": port or free_port(), "peers": peers},
           **extra}
    if pull:
        cfg["pull"] = pull
    p = root / f"{name}.gateway.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def env() -> dict:
    e = {**os.environ, "BIOMARKERS_SECRET": SECRET, **DCMTK_ENV}
    e.pop("BIOMARKERS_SECRET_FILE", None)
    return e


class GatewayProcess:
    """``python -m biomarkers gateway CONFIG`` as a child process."""

    def __init__(self, config: Path):
        self.config = config
        cfg = yaml.safe_load(config.read_text())
        self.port = cfg["scp"]["port"]
        self.spool = Path(cfg["spool"])
        self.log_path = config.with_suffix(f".{int(time.time() * 1000)}.log")
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "biomarkers", "gateway", str(config)], stdout=self.log,
                                     stderr=subprocess.STDOUT, env=env(), cwd=str(config.parent))
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.proc.returncode}: {self.log_path.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("gateway did not start listening")

    def status(self) -> dict:
        out = subprocess.run([sys.executable, "-m", "biomarkers", "gateway", "status", str(self.config), "--json"],
                             capture_output=True, text=True, env=env(), timeout=60)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    def status_file(self) -> dict:
        try:
            return json.loads((self.spool / "state" / "status.json").read_text())
        except (OSError, ValueError):
            return {}

    def wait_processed(self, n: int, timeout: float = 90) -> dict:
        """Wait until ``studies_processed + studies_failed >= n`` and nothing is queued."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            st = self.status_file()
            c, q = st.get("counts", {}), st.get("queue", {})
            if (c.get("studies_processed", 0) + c.get("studies_failed", 0) >= n and not q.get("pipeline_running")
                    and not q.get("studies_waiting_stable") and not q.get("studies_waiting_pipeline")):
                return st
            time.sleep(0.2)
        raise AssertionError(f"studies not processed in {timeout}s: {self.status_file()}")

    def stop(self, sig=signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text(errors="replace")


def storescu(port: int, files, aet: str = "STORESCU", aec: str = "GATEWAY", timeout: float = 120):
    binary = need("storescu", "dcmtk")
    return subprocess.run([binary, "-v", "-aet", aet, "-aec", aec, "127.0.0.1", str(port), *map(str, files)],
                          capture_output=True, text=True, env=env(), timeout=timeout)


def run_pipeline(config: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "biomarkers", "run", str(config)], capture_output=True, text=True,
                         env=env(), timeout=300, cwd=str(config.parent))
    assert out.returncode == 0, out.stdout + out.stderr


_REFERENCE: dict = {}


def reference_features(root: Path, name: str, files: list[Path]) -> pd.DataFrame:
    """features_wide of ``biomarkers run`` over a plain copy of ``files`` read from disk (cached per name)."""
    if name not in _REFERENCE:
        src = root / f"ref-{name}" / "dicom"
        for i, f in enumerate(files):
            dest = src / f.parent.relative_to(STS) / f.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, dest)
        cfg = pipeline_yaml(root / f"ref-{name}", "ref", src, root / f"ref-{name}" / "out")
        run_pipeline(cfg)
        _REFERENCE[name] = features(root / f"ref-{name}" / "out")
    return _REFERENCE[name]


def features(out: Path) -> pd.DataFrame:
    df = pd.read_parquet(out / "features" / "features_wide.parquet")
    keys = [c for c in ("patient_id", "study_uid", "series_uid", "roi", "modality") if c in df.columns]
    return df.sort_values(keys).reset_index(drop=True)


def assert_same_features(got: pd.DataFrame, want: pd.DataFrame) -> None:
    assert len(got) == len(want) and len(want) > 0
    num = [c for c in want.columns if pd.api.types.is_numeric_dtype(want[c])]
    assert len(num) > 50  # the radiomic features themselves, not only ids
    pd.testing.assert_frame_equal(got[num], want[num], check_exact=True)
    ids = [c for c in ("patient_id", "study_uid", "roi", "modality") if c in want.columns]
    pd.testing.assert_frame_equal(got[ids], want[ids])


def received_files(site_received: Path) -> list[Path]:
    return sorted(site_received.rglob("*.dcm"))


def spooled_everywhere(spool: Path, received: Path) -> list[Path]:
    return sorted([*(spool / "incoming").rglob("*.dcm"), *received.rglob("*.dcm")])


def secret_free(text: str, files) -> list[str]:
    """Identifying values of ``files`` found in ``text`` (PatientID/Name, Study/Series/SOP UIDs, dates, paths)."""
    hits = []
    for f in files:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        vals = {str(ds.get(k, "")) for k in ("PatientID", "PatientName", "StudyInstanceUID", "SeriesInstanceUID",
                                              "SOPInstanceUID", "StudyDate", "AccessionNumber")}
        vals |= {str(f), str(f.parent), f.name}
        hits += [v for v in vals if len(v) >= 6 and v in text]
    return sorted(set(hits))


class StoreSCP:
    """dcmtk's storescp as the reference receiver, writing what it receives bit for bit (+B).

    storescp accepts one presentation context per SOP class, with its preferred transfer syntax;
    ``+xi`` makes that implicit VR little endian, the encoding of the STS files, which the gateway
    (accepting every proposed context) gets from senders too: both receive the same encoding."""

    def __init__(self, root: Path, aet: str = "REFSCP"):
        binary = need("storescp", "dcmtk")
        self.dir = root
        root.mkdir(parents=True, exist_ok=True)
        self.port, self.aet = free_port(), aet
        self.proc = subprocess.Popen([binary, "+B", "+xi", "-aet", aet, "-od", str(root), str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env())
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("storescp did not start")

    def received(self) -> dict[str, Path]:
        """SOP Instance UID -> file written."""
        return {sop_uid(p): p for p in self.dir.iterdir() if p.is_file()}

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
