"""Ingest resume (issue 16, item 1): one mechanism reuses rows of an earlier run, images and masks alike
(:meth:`biomarkers.manifest.Manifest.reusable` over :meth:`~biomarkers.manifest.Manifest.previous`), each
only after its files verify.

Expected results come from an uninterrupted run of the same cohort into another folder (the
pseudonyms are keyed, so the manifests are equal row for row), not from the code under test; runs
are interrupted with SIGKILL and outputs damaged with plain file operations.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from biomarkers.cli.verify import tree_problems
from biomarkers.dicom.ingest import run_ingest
from biomarkers.synth import synthesize


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """A 3-patient CT+PET cohort with RTSTRUCT masks, and an uninterrupted ingest of it (``ref``)."""
    root = tmp_path_factory.mktemp("resume")
    synthesize(root / "cohort", patients=3, centres=1, seed=5, executor="serial", ct_size=64, pet_size=32)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BIOMARKERS_SECRET", os.environ.get("BIOMARKERS_TEST_SECRET", "test-secret-0123456789abcdef"))
        rep = run_ingest(root / "cohort" / "dicom", root / "ref", executor="serial")
    assert rep.counts()["failed"] == 0, rep.summary()
    return root


def _manifest(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / "manifest.parquet")


def _copy(cohort: Path, name: str) -> Path:
    """A copy of the reference output (times kept, as after a backup restore)."""
    shutil.copytree(cohort / "ref", cohort / name, copy_function=shutil.copy2)
    return cohort / name


def _sidecars(out: Path) -> list[Path]:
    """The image sidecars written (not the temporaries of writes in progress: ``.<name>.<random>.tmp.json``)."""
    return [s for s in out.glob("images/*/*.json") if not s.name.startswith(".")]


def _computed(rep, kind: str) -> list[str]:
    return sorted(c.case for c in rep.cases if c.details.get("kind") == kind and c.status == "done" and not c.cached)


def _cached(rep, kind: str) -> list[str]:
    return sorted(c.case for c in rep.cases if c.details.get("kind") == kind and c.cached)


def _assert_as_uninterrupted(out: Path, cohort: Path) -> None:
    pd.testing.assert_frame_equal(_manifest(out), _manifest(cohort / "ref"), check_exact=True)
    assert tree_problems(out)[0] == []  # every file recorded and as written


def test_killed_run_resumes(cohort, tmp_path):
    """`biomarkers ingest` killed (SIGKILL) after some images were written, before its manifest: the rerun
    reuses those images (from their sidecars, after they verify) and ends with the uninterrupted manifest."""
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    p = subprocess.Popen([sys.executable, "-m", "biomarkers", "ingest", str(cohort / "cohort" / "dicom"), str(out),
                          "-e", "serial"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while p.poll() is None and time.monotonic() < deadline and not _sidecars(out):
        time.sleep(0.005)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert p.returncode == -signal.SIGKILL, "the ingest finished before it could be killed"
    assert not (out / "manifest.parquet").exists()
    written = {s.relative_to(out).as_posix()[:-5] for s in _sidecars(out)}
    assert written
    rep = run_ingest(cohort / "cohort" / "dicom", out, executor="serial")
    assert set(_cached(rep, "image")) >= written
    assert not _cached(rep, "mask")  # no manifest was written: no mask row is guessed
    _assert_as_uninterrupted(out, cohort)


def test_lost_manifest_and_records(cohort):
    """The state of a run killed before it wrote its manifest and its records: every image is adopted from
    its sidecar (the sidecar names the inputs, the voxels hash to its content hash), every mask is converted
    again (no row without a manifest), and the result is the uninterrupted one."""
    out = _copy(cohort, "lost")
    for f in ("manifest.parquet", "manifest.csv", ".integrity.json"):
        (out / f).unlink()
    side = _sidecars(out)[0]  # the temporary of a sidecar being written when the run was killed: not a row
    shutil.copy2(side, side.with_name(f".{side.name.split('.')[0]}.k1ll3d.tmp.json"))
    rep = run_ingest(cohort / "cohort" / "dicom", out, executor="serial")
    ref = _manifest(cohort / "ref")
    assert len(_cached(rep, "image")) == (ref.kind == "image").sum() and not _computed(rep, "image")
    assert len(_computed(rep, "mask")) == ((ref.kind == "mask") & (ref.status == "converted")).sum() > 0
    _assert_as_uninterrupted(out, cohort)


@pytest.mark.parametrize("how,word", [("overwrite", "changed since written"), ("truncate", "truncated")])
def test_damaged_manifest_is_not_reused(cohort, how, word, caplog):
    """A damaged manifest is reported (file and word) and none of its rows is reused: the masks are converted
    again, the images are reused only through their own verified sidecars; the result is the uninterrupted one."""
    out = _copy(cohort, f"damaged_{how}")
    path = out / "manifest.parquet"
    if how == "truncate":
        os.truncate(path, path.stat().st_size // 2)
    else:
        data = bytearray(path.read_bytes())
        mid = len(data) // 2
        data[mid:mid + 16] = bytes(255 - b for b in data[mid:mid + 16])
        path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="biomarkers"):
        rep = run_ingest(cohort / "cohort" / "dicom", out, executor="serial")
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert f"manifest.parquet: {word}" in logged, logged
    assert not _cached(rep, "mask") and _computed(rep, "mask")
    assert not _computed(rep, "image")
    _assert_as_uninterrupted(out, cohort)


def test_changed_input_is_recomputed(cohort, tmp_path):
    """One CT file of one patient changed (mtime): that image and that patient's masks are converted again;
    every other image and mask is reused from the earlier run's rows."""
    src = tmp_path / "dicom"
    shutil.copytree(cohort / "cohort" / "dicom", src, copy_function=shutil.copy2)
    out = _copy(cohort, "changed")
    ref = _manifest(cohort / "ref")
    rep = run_ingest(src, out, executor="serial")  # the copied source: nothing changed yet
    assert not _computed(rep, "image") and not _computed(rep, "mask"), rep.summary()
    f = sorted(src.rglob("CT/*.dcm"))[0]  # a slice of one patient's CT series
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10**9))
    rep = run_ingest(src, out, executor="serial")
    images = _computed(rep, "image")
    assert len(images) == 1 and "/CT_" in images[0], images
    patient = images[0].split("/")[1]
    masks = _computed(rep, "mask")
    assert masks and all(patient in m for m in masks), masks
    assert all(patient not in m for m in _cached(rep, "mask")) and _cached(rep, "mask")
    assert len(_cached(rep, "image")) == (ref.kind == "image").sum() - 1
    got = _manifest(out)
    assert sorted(got.content_hash) == sorted(ref.content_hash)  # the same voxels, converted again
    assert sorted(got.path) == sorted(ref.path)
    assert tree_problems(out)[0] == []


def test_copied_output_is_reused_and_rerecorded(cohort):
    """An output copied without its times (``cp -r``): every row is reused after its files hash as recorded,
    and the records take the copies' times, so the next rerun checks each file with one ``stat`` again."""
    from biomarkers.integrity import Ledger

    out = cohort / "copied"
    shutil.copytree(cohort / "ref", out, copy_function=shutil.copyfile)  # new modification times
    rep = run_ingest(cohort / "cohort" / "dicom", out, executor="serial")
    assert not _computed(rep, "image") and not _computed(rep, "mask"), rep.summary()
    led = Ledger(out)
    stale = [rel for rel, rec in led.files.items() if rec.mtime_ns != (out / rel).stat().st_mtime_ns]
    assert len(led.files) > 3 and not stale, stale
    _assert_as_uninterrupted(out, cohort)
