"""Reliability at the edges of every writing command (issue 14): an output nested in an input (or the
reverse) refused by the one check, ``biomarkers.io.check_apart``; a second writer into a folder another
run holds refused by the one lock, ``biomarkers.locks.output_lock``. Nothing here needs real inputs:
both refusals come before any input is read, so the tests build only paths."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from biomarkers.cli import main
from biomarkers.locks import LOCK, output_lock

REPO = Path(__file__).resolve().parents[1]
RELEASE_CFG = REPO / "configs" / "release.yaml"


def _nested(t: Path) -> dict[str, tuple[list[str], str]]:
    """command -> (arguments with an output nested in an input or the reverse, expected message)."""
    return {
        "deid-export: OUT inside SRC": (
            ["deid-export", t / "src", t / "src" / "out", "--demo"],
            f"{t / 'src' / 'out'}: the export folder is inside the source folder {t / 'src'}"),
        "deid-export: SRC inside OUT": (
            ["deid-export", t / "o" / "src", t / "o", "--demo"],
            f"{t / 'o' / 'src'}: the source folder is inside the export folder {t / 'o'}"),
        "release: FEATURES inside OUT": (
            ["release", "--features", t / "R" / "features", "--clinical", t / "c.csv", "--config", RELEASE_CFG,
             "--out", t / "R", "--no-mlflow"],
            f"{t / 'R' / 'features'}: the features folder is inside the releases folder {t / 'R'}"),
        "release: clinical file inside OUT": (
            ["release", "--features", t / "F", "--clinical", t / "R" / "c.csv", "--config", RELEASE_CFG,
             "--out", t / "R", "--no-mlflow"],
            f"{t / 'R' / 'c.csv'}: the clinical file is inside the releases folder {t / 'R'}"),
        "link: OUT inside FEATURES": (
            ["link", "--features", t / "F", "--clinical", t / "c.csv", "--schema", t / "s.yaml",
             "--out", t / "F" / "analysis.parquet"],
            f"{t / 'F' / 'analysis.parquet'}: the analysis table is inside the features {t / 'F'}"),
        "link: OUT is a clinical file": (
            ["link", "--features", t / "F", "--clinical", t / "c.parquet", "--schema", t / "s.yaml",
             "--out", t / "c.parquet"],
            f"{t / 'c.parquet'}: the analysis table must differ from the clinical file {t / 'c.parquet'}"),
        "qc: OUT/qc inside FEATURES": (
            ["qc", t / "o", "--features", t / "o"],
            f"{t / 'o' / 'qc'}: the QC folder is inside the features folder {t / 'o'}"),
        "qc: clinical table inside OUT/qc": (
            ["qc", t / "o", "--clinical", t / "o" / "qc" / "c.parquet"],
            f"{t / 'o' / 'qc' / 'c.parquet'}: the clinical table is inside the QC folder {t / 'o' / 'qc'}"),
        "contribute: BUNDLE inside OUT": (
            ["contribute", t / "o", "--site", "a", "--out", t / "o" / "b"],
            f"{t / 'o' / 'b'}: the bundle folder is inside the pipeline output folder {t / 'o'}"),
        "lake snapshot: OUT inside LAKE": (
            ["lake", "snapshot", t / "L", "--version", "1", "--config", RELEASE_CFG, "--out", t / "L" / "rel",
             "--no-mlflow"],
            f"{t / 'L' / 'rel'}: the releases folder is inside the lake {t / 'L'}"),
        "lake add: LAKE inside BUNDLE": (
            ["lake", "add", t / "b" / "lake", t / "b"],
            f"{t / 'b' / 'lake'}: the lake is inside the bundle folder {t / 'b'}"),
        "lake add: BUNDLE inside LAKE": (
            ["lake", "add", t / "L", t / "L" / "b"],
            f"{t / 'L' / 'b'}: the bundle folder is inside the lake {t / 'L'}"),
    }


NESTED = list(_nested(Path("/x")))


@pytest.mark.parametrize("case", NESTED)
def test_nested_output_and_input_refused(case, tmp_path, capsys):
    """Each writing command: exit 2 before anything is written, the message naming both paths and why."""
    args, message = _nested(tmp_path)[case]
    before = sorted(tmp_path.rglob("*"))
    rc = main([str(a) for a in args])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert message in err, err
    assert sorted(tmp_path.rglob("*")) == before  # nothing created: no folder, no lock, no report


def _concurrent(t: Path) -> dict[str, tuple[list[str], Path]]:
    """command -> (arguments, the folder its run locks)."""
    return {
        "link": (["link", "--features", t / "F", "--clinical", t / "c.csv", "--schema", t / "s.yaml",
                  "--out", t / "held" / "analysis.parquet"], t / "held"),
        "contribute": (["contribute", t / "o", "--site", "a", "--out", t / "held" / "bundle"], t / "held"),
        "synth": (["synth", t / "held", "--patients", "2", "--centres", "1", "--executor", "serial"], t / "held"),
        "release": (["release", "--features", t / "F", "--clinical", t / "c.csv", "--config", RELEASE_CFG,
                     "--out", t / "held", "--no-mlflow"], t / "held"),
        "lake snapshot": (["lake", "snapshot", t / "L", "--version", "1", "--config", RELEASE_CFG,
                           "--out", t / "held", "--no-mlflow"], t / "held"),
        "ibsi": (["ibsi", "--case", "digital_phantom", "--json", t / "held" / "ibsi.json"], t / "held"),
    }


@pytest.mark.parametrize("command", list(_concurrent(Path("/x"))))
def test_second_writer_refused_naming_holder(command, tmp_path):
    """A folder this test holds (``output_lock``, as a running command would): the command, another process,
    is refused at once, exit 2, naming this process as the holder; nothing of its own is written there."""
    args, folder = _concurrent(tmp_path)[command]
    with output_lock(folder, "biomarkers test-holder"):
        before = sorted(folder.iterdir())
        r = subprocess.run([sys.executable, "-m", "biomarkers", *map(str, args)], capture_output=True, text=True,
                           timeout=120, env={**os.environ, "BIOMARKERS_SECRET": "test-secret-0123456789abcdef-edges"})
        assert r.returncode == 2, r.stdout + r.stderr
        assert "another biomarkers run is writing this folder" in r.stderr, r.stderr
        assert f"pid {os.getpid()} on host {socket.gethostname()}" in r.stderr and "test-holder" in r.stderr
        assert sorted(folder.iterdir()) == before
    assert not (folder / LOCK).exists()


def test_lock_of_a_file_folder_removes_only_its_own_temporaries(tmp_path):
    """``link --out T.parquet`` locks T's folder, which may hold other runs' folders: taking the lock with
    ``tree=False`` removes the interrupted temporaries directly in it, none of a sub-folder's (whose own
    writer may be running); a folder lock (``tree=True``, the default) removes those below it too."""
    own, below = tmp_path / ".analysis.abcd1234.tmp.parquet", tmp_path / "run" / ".manifest.wxyz5678.tmp.parquet"
    below.parent.mkdir()
    own.write_bytes(b"partial")
    below.write_bytes(b"live writer")
    with output_lock(tmp_path, "biomarkers link", tree=False):
        assert not own.exists() and below.exists()
    with output_lock(tmp_path, "biomarkers ingest"):
        assert not below.exists()
