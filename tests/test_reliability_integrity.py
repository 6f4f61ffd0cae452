"""Integrity on read (issue 14, item 1): a damaged output (truncated, deleted, overwritten image,
mask, item file or table) is reported with the file and the word, the step that wrote it redoes
it, and the features equal those of an untouched run; ``biomarkers verify`` finds each damage.

Reference values come from an untouched run of the same cohort (exact equality), not from the
checker under test; damage is done with plain file operations.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from biomarkers.cli.verify import tree_problems
from biomarkers.pipeline import Pipeline, load_config
from biomarkers.pipeline.demo import DEMO_PARAMS, DEMO_SCHEMA
from biomarkers.synth import synthesize

SECRET = "test-secret-0123456789abcdef-integrity"
WORDS = {"truncate": "truncated", "delete": "missing", "overwrite": "changed since written"}


def _cli(*args, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "BIOMARKERS_SECRET": SECRET}
    return subprocess.run([sys.executable, "-m", "biomarkers", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


def _config(root: Path, out: str) -> Path:
    params = root / "ct.yaml"
    params.write_text(yaml.safe_dump(DEMO_PARAMS["ct"]))
    cfg = {"name": "integrity", "source": {"dicom": "cohort/dicom", "clinical": ["cohort/clinical/*.csv"]},
           "out": out, "executor": "serial", "tracking": {"enabled": False}, "qc": {"enabled": False},
           "extract": {"params": {"CT": "ct.yaml"}}, "clinical": {"schema": DEMO_SCHEMA}}
    path = root / f"{out}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """A 3-patient CT cohort and the untouched reference run (``ref``)."""
    root = tmp_path_factory.mktemp("integrity")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BIOMARKERS_SECRET", SECRET)
        mp.delenv("BIOMARKERS_SECRET_FILE", raising=False)
        synthesize(root / "cohort", patients=3, centres=1, seed=11, executor="serial", pet=False, ct_size=64)
        Pipeline(load_config(_config(root, "ref"))).run()
    return root


def _wide(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / "features" / "features_wide.parquet")


def _copy(root: Path, name: str) -> Path:
    """A copy of the reference OUT (times kept, as after a backup restore) with its own config."""
    shutil.copytree(root / "ref", root / name, copy_function=shutil.copy2)
    _config(root, name)
    return root / name


def _target(out: Path, what: str) -> str:
    """A file of ``what`` kind, relative to OUT."""
    if what in ("features/features_long.parquet", "features/features_wide.parquet"):
        return what
    sub = {"image": "dataset/images", "mask": "dataset/masks", "item": "features/items"}[what]
    pattern = "*.parquet" if what == "item" else "*.nii.gz"
    return sorted(p.relative_to(out).as_posix() for p in (out / sub).rglob(pattern))[0]


def _damage(path: Path, how: str) -> None:
    if how == "truncate":
        os.truncate(path, path.stat().st_size // 2)
    elif how == "delete":
        path.unlink()
    else:  # overwrite in place: same size, other bytes in the middle
        data = bytearray(path.read_bytes())
        mid = len(data) // 2
        data[mid:mid + 16] = bytes(255 - b for b in data[mid:mid + 16])
        path.write_bytes(bytes(data))


CASES = [("image", h) for h in WORDS] + [("mask", h) for h in WORDS] + [("item", h) for h in WORDS] + [
    ("features/features_long.parquet", "truncate"), ("features/features_wide.parquet", "overwrite"),
    ("features/features_long.parquet", "delete")]


@pytest.mark.parametrize("what,how", CASES, ids=[f"{w.split('/')[-1]}-{h}" for w, h in CASES])
def test_damage_detected_and_redone(cohort, what, how, caplog, monkeypatch):
    """`biomarkers run` after damage: the file is named with the word, redone, and the features and the
    analysis table equal the untouched run's exactly; `biomarkers verify` then finds nothing."""
    monkeypatch.setenv("BIOMARKERS_SECRET", SECRET)
    name = f"{what.split('/')[-1].split('.')[0]}_{how}"
    out = _copy(cohort, name)
    rel = _target(out, what)
    before = (out / rel).read_bytes()
    _damage(out / rel, how)

    found = [str(p) for p in tree_problems(out)[0]]  # what `biomarkers verify` prints (CLI: test below)
    assert any(p.startswith(f"{rel}: {WORDS[how]}") for p in found), found

    with caplog.at_level(logging.WARNING, logger="biomarkers"):
        Pipeline(load_config(cohort / f"{name}.yaml")).run()
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert f"{rel}: {WORDS[how]}" in logged, logged  # named relative to OUT, with the word
    assert str(cohort) not in logged  # no absolute (source) path
    pd.testing.assert_frame_equal(_wide(out), _wide(cohort / "ref"), check_exact=True)
    pd.testing.assert_frame_equal(pd.read_parquet(out / "analysis.parquet"),
                                  pd.read_parquet(cohort / "ref" / "analysis.parquet"), check_exact=True)
    if what in ("image", "mask", "item"):
        assert (out / rel).read_bytes() == before  # redone: the same bytes as written first
    assert tree_problems(out)[0] == []


@pytest.mark.parametrize("how", ["truncate"])
def test_standalone_ingest_and_extract_redo(cohort, tmp_path, how, monkeypatch):
    """The commands alone: `extract` on a damaged image refuses that item naming the file and the word
    (no silently wrong row); `ingest` reconverts it; `extract` then gives the untouched features."""
    monkeypatch.setenv("BIOMARKERS_SECRET", SECRET)
    ds, ft = tmp_path / "ds", tmp_path / "ft"
    params = cohort / "ct.yaml"
    r = _cli("ingest", cohort / "cohort" / "dicom", ds, "-e", "serial")
    assert r.returncode == 0, r.stderr
    r = _cli("extract", ds, "--params", f"CT={params}", "--out", ft, "-e", "serial")
    assert r.returncode == 0, r.stderr
    ref = pd.read_parquet(ft / "features_wide.parquet")
    img = sorted((ds / "images").rglob("*.nii.gz"))[0]
    rel = img.relative_to(ds).as_posix()
    _damage(img, how)
    shutil.rmtree(ft)
    r = _cli("extract", ds, "--params", f"CT={params}", "--out", ft, "-e", "serial")
    assert f"{rel}: {WORDS[how]}" in r.stdout + r.stderr
    got = pd.read_parquet(ft / "features_wide.parquet")
    assert len(got) == len(ref) - 1  # the item on the damaged image failed: no row of mostly-zero features
    pd.testing.assert_frame_equal(got.reset_index(drop=True),
                                  ref[ref["series_uid"].isin(got["series_uid"])].reset_index(drop=True),
                                  check_exact=True)
    r = _cli("ingest", cohort / "cohort" / "dicom", ds, "-e", "serial")
    assert r.returncode == 0 and "1 computed" in r.stdout, r.stdout + r.stderr
    if how != "delete":
        assert f"{rel}: {WORDS[how]}" in r.stderr
    r = _cli("extract", ds, "--params", f"CT={params}", "--out", ft, "-e", "serial")
    assert r.returncode == 0, r.stderr
    pd.testing.assert_frame_equal(pd.read_parquet(ft / "features_wide.parquet"), ref, check_exact=True)


def test_mask_changed_by_other_settings_not_reused(cohort, tmp_path, monkeypatch):
    """A mask file rewritten after its manifest row (e.g. a run with other settings killed after writing
    masks) is not reused from the old manifest: it is reported and reconverted."""
    monkeypatch.setenv("BIOMARKERS_SECRET", SECRET)
    ds = tmp_path / "ds"
    assert _cli("ingest", cohort / "cohort" / "dicom", ds, "-e", "serial").returncode == 0
    masks = sorted((ds / "masks").rglob("*.nii.gz"))
    original = masks[0].read_bytes()
    shutil.copy2(masks[1], masks[0])  # a valid NIfTI, other content (the file a different run wrote)
    r = _cli("ingest", cohort / "cohort" / "dicom", ds, "-e", "serial")
    assert r.returncode == 0
    assert f"{masks[0].relative_to(ds).as_posix()}: changed since written" in r.stderr
    assert masks[0].read_bytes() == original


def test_verify_intact_trees_and_bad_input(cohort, tmp_path):
    """`verify` exits 0 on an intact pipeline OUT, its dataset and FEATURES folders, 2 on a folder
    without biomarkers output or a missing path."""
    r = _cli("verify", cohort / "ref")
    assert r.returncode == 0, r.stdout + r.stderr
    for tree in (cohort / "ref" / "dataset", cohort / "ref" / "features"):
        assert tree_problems(tree) == ([], 1)
    out = _copy(cohort, "verify_cli")
    damaged = [_target(out, "image"), _target(out, "mask"), _target(out, "item"), "features/features_wide.parquet"]
    for rel, how in zip(damaged, ["truncate", "delete", "overwrite", "truncate"]):
        _damage(out / rel, how)
    r = _cli("verify", out)
    assert r.returncode == 3, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    for rel, how in zip(damaged, ["truncate", "delete", "overwrite", "truncate"]):
        assert any(line.startswith(f"{rel}: {WORDS[how]}") for line in lines), (rel, lines)
    assert str(out) not in r.stdout.replace(f"{out}/", "")  # files named relative to OUT
    (tmp_path / "empty").mkdir()
    assert _cli("verify", tmp_path / "empty").returncode == 2
    assert _cli("verify", tmp_path / "nope").returncode == 2


def test_verify_release_folder(tmp_path):
    """A release folder: its manifest.json checksums; a changed file is reported, exit 3."""
    import json

    rel = tmp_path / "releases" / "r-1.0.0"
    rel.mkdir(parents=True)
    (rel / "features.parquet").write_bytes(b"x" * 100)
    (rel / "manifest.json").write_text(json.dumps({"files": {"features.parquet": {
        "sha256": __import__("hashlib").sha256(b"x" * 100).hexdigest(), "bytes": 100}}}))
    assert _cli("verify", tmp_path / "releases").returncode == 0
    (rel / "features.parquet").write_bytes(b"y" * 100)
    r = _cli("verify", tmp_path / "releases")
    assert r.returncode == 3 and "r-1.0.0/features.parquet: changed since written" in r.stdout, r.stdout


def test_verify_voxels_independent_of_records(cohort):
    """`verify --voxels` compares each NIfTI's voxels with the manifest's content_hash: a mask replaced by
    another one whose record was rewritten to match passes the record check, not the voxel check."""
    from biomarkers.integrity import Ledger

    out = _copy(cohort, "voxels")
    assert _cli("verify", "--voxels", out).returncode == 0
    masks = sorted((out / "dataset" / "masks").rglob("*.nii.gz"))
    shutil.copy2(masks[1], masks[0])
    led = Ledger(out / "dataset")
    rel = masks[0].relative_to(out / "dataset").as_posix()
    led.add(rel)
    led.save()
    assert _cli("verify", out).returncode == 0  # the records alone say nothing is wrong
    r = _cli("verify", "--voxels", out)
    assert r.returncode == 3 and f"dataset/{rel}: changed since written (voxels differ" in r.stdout, r.stdout


@pytest.mark.parametrize("lost", ["dataset/.integrity.json", "features/.integrity.json", ".pipeline/state.json"])
def test_lost_records(cohort, lost, caplog, monkeypatch):
    """The records themselves deleted: reported (`missing`) where a stage expected them, outputs whose
    content still checks (voxels against content_hash, item files read back) are adopted, not redone,
    and the result equals the untouched run; the records are written again."""
    monkeypatch.setenv("BIOMARKERS_SECRET", SECRET)
    name = "lost_" + lost.split("/")[0].strip(".")
    out = _copy(cohort, name)
    (out / lost).unlink()
    with caplog.at_level(logging.WARNING, logger="biomarkers"):
        rep = Pipeline(load_config(cohort / f"{name}.yaml")).run()
    logged = "\n".join(r.getMessage() for r in caplog.records)
    if lost != ".pipeline/state.json":
        assert f"{lost}: missing" in logged, logged
    assert not [c for c in rep.cases if c.stage in ("ingest", "extract") and c.status == "done" and not c.cached]
    pd.testing.assert_frame_equal(_wide(out), _wide(cohort / "ref"), check_exact=True)
    assert (out / lost).is_file() and tree_problems(out)[0] == []


def test_failed_mask_row_is_retried(cohort, tmp_path, monkeypatch):
    """A mask that failed in an earlier run (e.g. the run was interrupted while converting it) is not
    reused from the manifest as failed: the rerun converts it, as an uninterrupted run would."""
    from biomarkers.manifest import Manifest, Status

    monkeypatch.setenv("BIOMARKERS_SECRET", SECRET)
    ds = tmp_path / "ds"
    assert _cli("ingest", cohort / "cohort" / "dicom", ds, "-e", "serial").returncode == 0
    ref = Manifest.read(ds).to_arrow()
    m = Manifest.read(ds)
    mask = next(r for r in m.rows if r.kind == "mask" and r.status == Status.CONVERTED)
    mask.status, mask.reason, mask.path = Status.FAILED, "KeyboardInterrupt", ""
    m.write(ds)
    r = _cli("ingest", cohort / "cohort" / "dicom", ds, "-e", "serial")
    assert r.returncode == 0 and "0 failed" in r.stdout, r.stdout
    assert Manifest.read(ds).to_arrow().equals(ref)
