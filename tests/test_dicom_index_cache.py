"""The hospital-side index cache: unchanged files are not read again, changes are seen,
the result equals a fresh index, and the cache never lands in the output folder."""

from __future__ import annotations

import json
import os
import shutil
import stat
import time
from pathlib import Path

import pandas as pd
import pydicom
import pytest

from biomarkers.dicom.index import index_folder
from biomarkers.dicom.index_cache import IndexCache, resolve_cache_path
from biomarkers.dicom.ingest import Ingest, IngestSettings
from biomarkers.errors import InputError
from test_dicom_index import messy_src  # noqa: F401 - fixture

PAST = time.time() - 3600


def _age(root: Path, when: float = PAST) -> None:
    """Set every file's mtime an hour back (fresh files are not cached: see IndexCache.update)."""
    for p in root.rglob("*"):
        if p.is_file():
            os.utime(p, (when, when))


def _same(a, b) -> None:
    assert a.files == b.files
    assert a.segmentations == b.segmentations
    assert a.unused == b.unused
    assert a.unsupported == b.unsupported
    assert a.n_files == b.n_files


def test_cached_index_equals_fresh_and_sees_changes(messy_src, tmp_path):  # noqa: F811
    _age(messy_src)
    fresh = index_folder(messy_src)
    db = tmp_path / "cache" / "index.sqlite"
    first = index_folder(messy_src, cache=IndexCache(db))
    assert first.n_cached == 0
    _same(first, fresh)
    second = index_folder(messy_src, cache=IndexCache(db))
    # every file is answered from the cache except those that failed with an I/O-like error
    unreadable = sum(u.reason.startswith("unreadable") for u in fresh.unused)
    assert second.n_cached == fresh.n_files - unreadable
    _same(second, fresh)
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    assert stat.S_IMODE(db.parent.stat().st_mode) == 0o700

    # a rewritten slice (same size, other mtime) is read again; a deleted file disappears; a new file is read
    slices = sorted((messy_src / "a" / "b").iterdir())
    ds = pydicom.dcmread(slices[0])
    ds.InstanceNumber = 4242
    ds.save_as(slices[0])
    os.utime(slices[0], (PAST + 10, PAST + 10))
    slices[1].unlink()
    shutil.copyfile(slices[2], messy_src / "new_copy")
    os.utime(messy_src / "new_copy", (PAST, PAST))
    third = index_folder(messy_src, cache=IndexCache(db))
    assert third.n_cached == second.n_cached - 2  # the rewritten and the deleted file
    _same(third, index_folder(messy_src))
    assert 4242 in {f.instance_number for f in third.files}
    assert any(u.rel == "new_copy" and u.reason.startswith("duplicate") for u in third.unused)


def test_recently_modified_files_are_not_cached(messy_src, tmp_path):  # noqa: F811
    _age(messy_src)
    now = time.time()
    slices = sorted((messy_src / "a" / "b").iterdir())
    os.utime(slices[0], (now, now))  # within the racy window: its read may not be trusted later
    db = tmp_path / "index.sqlite"
    first = index_folder(messy_src, cache=IndexCache(db))
    second = index_folder(messy_src, cache=IndexCache(db))
    unreadable = sum(u.reason.startswith("unreadable") for u in first.unused)
    assert second.n_cached == first.n_files - unreadable - 1


def test_cache_with_loose_permissions_is_ignored_not_fatal(messy_src, tmp_path, caplog):  # noqa: F811
    _age(messy_src)
    db = tmp_path / "index.sqlite"
    index_folder(messy_src, cache=IndexCache(db))
    os.chmod(db, 0o644)
    res = index_folder(messy_src, cache=IndexCache(db))
    assert res.n_cached == 0
    assert "not usable" in caplog.text
    _same(res, index_folder(messy_src))


def _sts_src(shared_data, tmp_path) -> Path:
    src = tmp_path / "src"
    for part in ("image", "mask"):
        shutil.copytree(shared_data / "sts" / "dicom" / "STS_002" / "PET" / part, src / "STS_002" / "PET" / part)
    _age(src)
    return src


def test_ingest_reuses_the_cache_and_writes_it_outside_out(shared_data, tmp_path, monkeypatch):
    cache_dir = tmp_path / "hospital-cache"
    monkeypatch.setenv("BIOMARKERS_CACHE_DIR", str(cache_dir))
    src = _sts_src(shared_data, tmp_path)
    settings = IngestSettings(masks={"rois": {"GTV": ["GTV_Mass*"]}})
    Ingest(src, tmp_path / "out1", settings, executor="serial").run()
    r1 = json.loads((tmp_path / "out1" / "report.json").read_text())
    assert r1["files"]["headers_from_cache"] == 0
    caches = list(cache_dir.rglob("*.sqlite"))
    assert len(caches) == 1 and stat.S_IMODE(caches[0].stat().st_mode) == 0o600
    assert not any(p.suffix == ".sqlite" for p in (tmp_path / "out1").rglob("*"))

    Ingest(src, tmp_path / "out2", settings, executor="serial").run()
    r2 = json.loads((tmp_path / "out2" / "report.json").read_text())
    assert r2["files"]["headers_from_cache"] == r2["files"]["indexed"] > 0
    m1 = pd.read_parquet(tmp_path / "out1" / "manifest.parquet")
    m2 = pd.read_parquet(tmp_path / "out2" / "manifest.parquet")
    pd.testing.assert_frame_equal(m1, m2)
    assert set(m1["status"]) == {"converted"} and (m1["kind"] == "mask").sum() == 1

    off = IngestSettings(masks={"rois": {"GTV": ["GTV_Mass*"]}}, index_cache="off")
    Ingest(src, tmp_path / "out3", off, executor="serial").run()
    r3 = json.loads((tmp_path / "out3" / "report.json").read_text())
    assert r3["files"]["headers_from_cache"] == 0


def test_cache_inside_out_or_src_is_refused(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    with pytest.raises(InputError, match="inside the output folder.*original identifiers"):
        resolve_cache_path(str(out / "cache"), src, out)
    with pytest.raises(InputError, match="inside the source folder"):
        resolve_cache_path(str(src / ".cache"), src, out)
    assert resolve_cache_path("off", src, out) is None
    p = resolve_cache_path(str(tmp_path / "c"), src, out)
    assert p.parent == tmp_path / "c" / "index" and str(src) not in p.name
    ing = Ingest(src, out, IngestSettings(index_cache=str(out / "c")), executor="serial")
    with pytest.raises(InputError, match="inside the output folder"):
        ing.validate()
