"""Shared test fixtures: paths to the read-only reference data in ../shared/data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("BIOMARKERS_SHARED_DATA", REPO.parent / "shared" / "data"))
STS_PATIENTS = [f"STS_00{i}" for i in range(1, 7)]
STS_MODALITIES = ["CT", "MR_T1", "PET"]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (read-only). Missing reference data is an error, not a skip."""
    if not SHARED.is_dir():
        raise RuntimeError(f"reference data not found at {SHARED}; set BIOMARKERS_SHARED_DATA")
    return SHARED


@pytest.fixture(autouse=True)
def _no_secret_leak_env(monkeypatch):
    """Tests get a fixed test secret unless they set their own."""
    monkeypatch.setenv("BIOMARKERS_SECRET", os.environ.get("BIOMARKERS_TEST_SECRET", "test-secret-0123456789abcdef"))
    monkeypatch.delenv("BIOMARKERS_SECRET_FILE", raising=False)


@pytest.fixture(scope="session", autouse=True)
def _session_cache_dir(tmp_path_factory):
    """Module- and session-scoped fixtures (set up before any test's own fixtures) also keep
    the hospital-side caches in a temporary folder."""
    old = os.environ.get("BIOMARKERS_CACHE_DIR")
    os.environ["BIOMARKERS_CACHE_DIR"] = str(tmp_path_factory.mktemp("biomarkers-cache-session"))
    yield
    if old is None:
        os.environ.pop("BIOMARKERS_CACHE_DIR", None)
    else:
        os.environ["BIOMARKERS_CACHE_DIR"] = old


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path_factory, monkeypatch):
    """Each test's hospital-side index cache goes to its own temporary folder, never ~/.cache."""
    monkeypatch.setenv("BIOMARKERS_CACHE_DIR", str(tmp_path_factory.mktemp("biomarkers-cache")))
