"""``biomarkers ingest`` on the command line: exit status, de-identification switches, config errors."""

from __future__ import annotations

import csv
import json

import pandas as pd

from biomarkers.cli import main


def test_cli_ingest_phantom(shared_data, tmp_path, capsys):
    src = shared_data / "ibsi1_ct_phantom" / "dicom"
    out = tmp_path / "out"
    link = tmp_path / "keys" / "linkage.csv"
    rc = main(["ingest", str(src), str(out), "--linkage-table", str(link)])  # default executor: auto
    assert rc == 0
    printed = capsys.readouterr().out
    assert "ingest: 2 done" in printed
    rep = json.loads((out / "report.json").read_text())
    assert rep["deidentified"] is True and rep["counts"] == {"done": 2, "skipped": 0, "failed": 0}
    assert rep["executor"].startswith("serial")  # auto: 7 MB of pixel data convert in-process
    df = pd.read_parquet(out / "manifest.parquet")
    rows = list(csv.DictReader(link.open()))
    assert len(rows) == 1 and rows[0]["pseudonym"] == df.patient_id.iloc[0] != rows[0]["original_id"]
    assert (link.stat().st_mode & 0o777) == 0o600
    # dry run on the finished output: everything is current, nothing written
    before = sorted(p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file())
    assert main(["ingest", str(src), str(out), "--dry-run", "--executor", "serial"]) == 0
    assert "1 up to date" in capsys.readouterr().out
    assert sorted(p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()) == before


def test_cli_no_deid_is_recorded(shared_data, tmp_path):
    out = tmp_path / "out"
    assert main(["ingest", str(shared_data / "ibsi1_ct_phantom" / "dicom"), str(out), "--no-deid", "--executor", "serial"]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["deidentified"] is False
    df = pd.read_parquet(out / "manifest.parquet")
    assert not df.patient_id.iloc[0].startswith("BM-")


def test_cli_errors_exit_2(shared_data, tmp_path, capsys, monkeypatch):
    src = shared_data / "ibsi1_ct_phantom" / "dicom"
    out = tmp_path / "out"
    # linkage table inside OUT is refused before any work
    assert main(["ingest", str(src), str(out), "--linkage-table", str(out / "k.csv")]) == 2
    assert "must not be written inside the output folder" in capsys.readouterr().err
    assert not out.exists()
    # so is an index cache (original identifiers) inside OUT
    assert main(["ingest", str(src), str(out), "--index-cache", str(out / "cache")]) == 2
    assert "inside the output folder" in capsys.readouterr().err
    assert not out.exists()
    # unknown config key: the message names the file and the key
    cfg = tmp_path / "ingest.yaml"
    cfg.write_text("allow_gapz: true\n")
    assert main(["ingest", str(src), str(out), "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert str(cfg) in err and "allow_gapz" in err
    # missing source folder
    assert main(["ingest", str(tmp_path / "nope"), str(out)]) == 2
    assert "source folder not found" in capsys.readouterr().err
    # no secret: clear error, exit 2
    monkeypatch.delenv("BIOMARKERS_SECRET")
    assert main(["ingest", str(src), str(out)]) == 2
    assert "BIOMARKERS_SECRET" in capsys.readouterr().err


def test_example_config_is_valid():
    from pathlib import Path

    from biomarkers.config import load_yaml
    from biomarkers.dicom.ingest import IngestSettings

    s = load_yaml(Path(__file__).resolve().parent.parent / "configs" / "ingest.yaml", IngestSettings)
    assert s.allow_gaps is False and s.deid.enabled is True


def test_cli_demo_secret_recorded(shared_data, tmp_path, monkeypatch):
    monkeypatch.delenv("BIOMARKERS_SECRET")
    out = tmp_path / "out"
    # the demo secret only on data biomarkers synth wrote (issue 15): refused on the phantom, accepted on synth's
    assert main(["ingest", str(shared_data / "ibsi1_ct_phantom" / "dicom"), str(out), "--demo", "--executor", "serial"]) == 2
    from biomarkers.synth import synthesize

    synthesize(tmp_path / "cohort", patients=1, centres=1, seed=1, pet=False)
    assert main(["ingest", str(tmp_path / "cohort" / "dicom"), str(out), "--demo", "--executor", "serial"]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["deidentified"] is True and rep["demo_secret"] is True


def test_ingest_on_a_dask_cluster(shared_data, tmp_path):
    """The same conversion through a real dask scheduler and worker (in-process cluster)."""
    from distributed import Client, LocalCluster

    from biomarkers.dicom.ingest import run_ingest
    from biomarkers.executors import DaskExecutor

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, Client(cluster) as client:
        report = run_ingest(shared_data / "ibsi1_ct_phantom" / "dicom", tmp_path / "out", executor=DaskExecutor(client=client))
    assert report.counts() == {"done": 2, "skipped": 0, "failed": 0}, report.summary()
    assert json.loads((tmp_path / "out" / "report.json").read_text())["executor"].startswith("dask")
    ref = tmp_path / "ref"
    run_ingest(shared_data / "ibsi1_ct_phantom" / "dicom", ref, executor="serial")
    a, b = pd.read_parquet(tmp_path / "out" / "manifest.parquet"), pd.read_parquet(ref / "manifest.parquet")
    assert list(a.content_hash) == list(b.content_hash)


def test_cli_source_report_keeps_paths_at_the_site(shared_data, tmp_path, capsys):
    """Unused files: report.json in OUT lists them by reference only; --source-report writes
    their paths relative to SRC (with the same references) outside OUT, mode 0600."""
    import shutil

    src = tmp_path / "src"
    shutil.copytree(shared_data / "ibsi1_ct_phantom" / "dicom", src / "DOE_JOHN_12345")
    (src / "DOE_JOHN_12345" / "notes.txt").write_text("not dicom")
    out, site = tmp_path / "out", tmp_path / "site" / "unused.json"
    assert main(["ingest", str(src), str(out), "--source-report", str(out / "x.json")]) == 2  # inside OUT: refused
    assert main(["ingest", str(src), str(out), "--executor", "serial", "--source-report", str(site)]) == 0
    assert "DOE_JOHN" not in capsys.readouterr().out  # console names files by keyed reference (issue 15)
    assert main(["ingest", str(src), str(out), "--executor", "serial", "--show-paths"]) == 0
    assert "DOE_JOHN_12345/notes.txt" in capsys.readouterr().out  # printed for the operator who asks
    assert b"DOE_JOHN" not in (out / "report.json").read_bytes()
    rep = json.loads((out / "report.json").read_text())
    (ref,) = [u["ref"] for u in rep["unused_files"] if u["reason"] == "not a DICOM file"]
    local = json.loads(site.read_text())["unused_files"]
    (entry,) = [u for u in local if u["ref"] == ref]
    assert entry["path"] == "DOE_JOHN_12345/notes.txt" and entry["reason"] == "not a DICOM file"
    assert (site.stat().st_mode & 0o777) == 0o600
