"""Secrets (issue 15): weak secrets refused, never from the command line, the demo secret on synthetic data only."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from biomarkers.deid.keys import SYNTHETIC_MARKER, load_secret, require_synthetic, secret_strength_bits
from biomarkers.errors import SecretError


@pytest.mark.parametrize("weak", ["a" * 16, "0" * 40, "ab" * 12, "0123456789012345", "passwordpassword",
                                  "abcdefghabcdefgh"])
def test_weak_secret_refused(monkeypatch, weak):
    monkeypatch.delenv("BIOMARKERS_SECRET_FILE", raising=False)
    monkeypatch.setenv("BIOMARKERS_SECRET", weak)
    with pytest.raises(SecretError, match="too easy to guess|too short"):
        load_secret()


def test_strong_secret_accepted(monkeypatch):
    # 24 base64 characters of 18 random bytes (fixed here): about 100 bits
    monkeypatch.setenv("BIOMARKERS_SECRET", "q7Zr2Kx9Lm4Tb8Vw1Np6Hs3D")
    assert load_secret() == b"q7Zr2Kx9Lm4Tb8Vw1Np6Hs3D"
    # hand-computed: 16 identical characters have zero entropy; "ab"*8: 16 x (1 + 1/(32 ln 2)) bits
    assert secret_strength_bits(b"a" * 16) == 0
    assert abs(secret_strength_bits(b"ab" * 8) - 16 * (1 + 1 / (32 * 0.6931471805599453))) < 1e-9


def test_weak_secret_file_refused(monkeypatch, tmp_path):
    f = tmp_path / "secret"
    f.write_text("x" * 32 + "\n")
    monkeypatch.delenv("BIOMARKERS_SECRET", raising=False)
    monkeypatch.setenv("BIOMARKERS_SECRET_FILE", str(f))
    with pytest.raises(SecretError, match="BIOMARKERS_SECRET_FILE"):
        load_secret()


@pytest.mark.parametrize("cmd", [["ingest", "--secret", "s3cr3t-value-0123456789", "a", "b"],
                                 ["deid-export", "--secret=s3cr3t-value-0123456789", "a", "b"],
                                 ["run", "--secret", "x"]])
def test_secret_on_command_line_is_a_usage_error(cmd):
    p = subprocess.run([sys.executable, "-m", "biomarkers", *cmd], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr
    assert "BIOMARKERS_SECRET" in p.stderr and "s3cr3t" not in p.stderr + p.stdout


def test_unknown_option_is_a_usage_error():
    p = subprocess.run([sys.executable, "-m", "biomarkers", "ingest", "--no-such-option", "a", "b"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "Traceback" not in p.stderr


def test_demo_refused_on_non_synthetic_data(tmp_path, monkeypatch, shared_data):
    """--demo on a folder synth did not write (a real STS series): exit 2 naming the reason, nothing written."""
    src = tmp_path / "Doe_Jane"  # a source folder named after a patient
    shutil.copytree(shared_data / "sts" / "dicom" / "STS_001" / "PET", src / "s")
    monkeypatch.delenv("BIOMARKERS_SECRET", raising=False)
    monkeypatch.delenv("BIOMARKERS_SECRET_FILE", raising=False)
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("BIOMARKERS_SECRET")}
    for cmd in (["ingest", str(src), str(tmp_path / "out"), "--demo"],
                ["deid-export", str(src), str(tmp_path / "exp"), "--demo"]):
        p = subprocess.run([sys.executable, "-m", "biomarkers", *cmd], capture_output=True, text=True, env=env,
                           timeout=120)
        assert p.returncode == 2, p.stderr
        assert "biomarkers synth" in p.stderr and "Traceback" not in p.stderr
        assert "Doe_Jane" not in p.stderr, "the source folder's name (possibly a patient's) was printed"
        assert not (tmp_path / "out" / "manifest.parquet").exists()
    # a folder with synth's marker (text and name) is accepted; a copied marker with other text is not
    (src / SYNTHETIC_MARKER).write_text("anything\n")
    with pytest.raises(SecretError):
        require_synthetic(src / "s")


def test_synth_marks_its_output(tmp_path):
    from biomarkers.synth import synthesize

    synthesize(tmp_path / "c", patients=1, centres=1, seed=3, pet=False)
    require_synthetic(tmp_path / "c" / "dicom")  # no error
