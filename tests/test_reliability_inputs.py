"""Issue 14 item 4: wrong input is refused at the edge with exit 2 and a message naming the path or key
and the reason (each case succeeded, or printed a traceback, before)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pandas as pd
import pytest
import yaml

SECRET = "inputs-test-secret-0123456789abcdef"


@pytest.fixture(autouse=True)
def _cli_env(monkeypatch):
    monkeypatch.setenv("BIOMARKERS_SECRET", SECRET)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    # main() installs the interruption handlers for the command and restores the previous ones
    assert {s: signal.getsignal(s) for s in handlers} == handlers


def cli(capsys, *args) -> tuple[int, str]:
    from biomarkers.cli import main

    capsys.readouterr()
    rc = main([str(a) for a in args])
    got = capsys.readouterr()
    return rc, got.out + got.err


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    from biomarkers.synth import synthesize

    root = tmp_path_factory.mktemp("inputs")
    synthesize(root / "cohort", patients=2, centres=1, seed=5, executor="serial")
    return root


@pytest.fixture(scope="module")
def dataset(cohort) -> Path:
    from biomarkers.dicom.ingest import run_ingest
    from biomarkers.pipeline.demo import DEMO_PARAMS

    os.environ.setdefault("BIOMARKERS_SECRET", SECRET)
    rep = run_ingest(cohort / "cohort" / "dicom", cohort / "dataset", executor="serial")
    assert rep.counts()["failed"] == 0
    (cohort / "ct.yaml").write_text(yaml.safe_dump(DEMO_PARAMS["ct"]))
    return cohort / "dataset"


def test_empty_src_refused(capsys, tmp_path):
    (tmp_path / "src" / "notes").mkdir(parents=True)
    (tmp_path / "src" / "notes" / "readme.txt").write_text("not DICOM")
    rc, out = cli(capsys, "ingest", tmp_path / "src", tmp_path / "out", "-e", "serial")
    assert rc == 2 and "no DICOM file found under the source folder" in out and str(tmp_path / "src") in out
    rc, out = cli(capsys, "ingest", tmp_path / "src" / "notes", tmp_path / "out2", "--dry-run")
    assert rc == 2 and "no DICOM file found" in out


def test_symlinked_patient_folders_followed_once(capsys, cohort, tmp_path):
    """Decision: symlinked folders are followed; each real folder once (a loop link is not re-entered)."""
    from biomarkers.manifest import read_manifest

    src = tmp_path / "src"
    src.mkdir()
    for d in sorted((cohort / "cohort" / "dicom").iterdir()):
        (src / d.name).symlink_to(d, target_is_directory=True)
    (src / "loop").symlink_to(src, target_is_directory=True)       # a link to SRC itself
    (src / "again").symlink_to(next(iter(sorted((cohort / "cohort" / "dicom").iterdir()))))  # a folder twice
    rc, out = cli(capsys, "ingest", src, tmp_path / "out", "-e", "serial")
    assert rc == 0, out
    m = read_manifest(tmp_path / "out")
    assert m["patient_id"].nunique() == 2 and (m["kind"] == "image").sum() == 4  # CT + PT per patient, once


def test_out_inside_src_and_src_inside_out_refused(capsys, cohort, tmp_path):
    import shutil

    src = tmp_path / "src"
    shutil.copytree(cohort / "cohort" / "dicom", src)
    rc, out = cli(capsys, "ingest", src, src / "out", "-e", "serial")
    assert rc == 2 and "is inside the source folder" in out and not (src / "out").exists()
    rc, out = cli(capsys, "ingest", src, tmp_path, "-e", "serial", "--dry-run")
    assert rc == 2 and "the source folder is inside the output folder" in out


def test_extract_paths_modalities_and_executor(capsys, dataset, cohort, tmp_path):
    ct = cohort / "ct.yaml"
    rc, out = cli(capsys, "extract", dataset, "--params", f"CTT={ct}", "--out", tmp_path / "f", "--dry-run")
    assert rc == 2 and f"--params CTT={ct}: the dataset has no modality CTT (it has CT, PT)" in out
    rc, out = cli(capsys, "extract", dataset, "--params", ct, "--out", dataset / "features", "--dry-run")
    assert rc == 2 and "the features folder is inside the dataset folder" in out
    for spec, words in (("local:0", "local:N needs N >= 1"), ("locl", "unknown executor 'locl'"),
                        ("dask://nohost", "expected dask://HOST:PORT")):
        rc, out = cli(capsys, "extract", dataset, "--params", ct, "--out", tmp_path / "f", "-e", spec, "--dry-run")
        assert rc == 2 and words in out, (spec, out)
    assert not (tmp_path / "f").exists()


def test_run_dry_run_checks_executor_before_tracking(capsys, cohort, tmp_path):
    from biomarkers.pipeline.demo import DEMO_SCHEMA

    db = tmp_path / "mlflow.db"
    cfg = {"name": "inputs", "source": {"dicom": str(cohort / "cohort" / "dicom"),
                                        "clinical": [str(cohort / "cohort" / "clinical" / "*.csv")]},
           "out": str(tmp_path / "out"), "executor": "local:0", "qc": {"enabled": False},
           "tracking": {"enabled": True, "uri": f"sqlite:///{db}"},
           "extract": {"params": {"CT": str(cohort / "ct.yaml")}}, "clinical": {"schema": DEMO_SCHEMA}}
    (cohort / "ct.yaml").write_text(yaml.safe_dump({"setting": {"binWidth": 25}}))
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(cfg))
    for extra in (["--dry-run"], []):
        rc, out = cli(capsys, "run", path, *extra)
        assert rc == 2 and "local:N needs N >= 1" in out, out
        rc, out = cli(capsys, "run", path, "--executor", "dask:/x", *extra)
        assert rc == 2 and "unknown executor 'dask:/x'" in out, out
    assert not db.exists()  # refused before any MLflow run (or store) was created
    cfg.update(executor="serial", out=str(cohort / "cohort" / "dicom" / "out"))
    path.write_text(yaml.safe_dump(cfg))
    rc, out = cli(capsys, "run", path, "--dry-run")
    assert rc == 2 and "is inside the source.dicom folder" in out


def test_read_only_commands_never_create_a_store(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    t = tmp_path / "t.csv"
    pd.DataFrame({"patient_id": ["a"], "x": [1.0]}).to_csv(t, index=False)
    for args in (["compare", "demo"], ["predict", "models:/demo-outcome/1", t]):
        rc, out = cli(capsys, *args, "--tracking-uri", "sqlite:///missing/x.db")
        assert rc == 2 and "sqlite:///missing/x.db: no MLflow store there" in out, out
        rc, out = cli(capsys, *args, "--tracking-uri", str(tmp_path / "mlruns"))
        assert rc == 2 and "no MLflow store there" in out, out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv"]


def test_scan_of_a_missing_path(capsys, tmp_path):
    needles = tmp_path / "n.json"
    needles.write_text('{"patient": "Doe^John"}')
    rc, out = cli(capsys, "scan", tmp_path / "nope", "--needles", needles)
    assert rc == 2 and f"{tmp_path / 'nope'}: no such file or folder to scan" in out and "Traceback" not in out
