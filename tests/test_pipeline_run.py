"""End-to-end pipeline on a tiny synthetic cohort: stage caching, incremental additions,
a real dask LocalCluster (separate worker processes) giving the same feature table as the
local process pool, and a run killed midway that resumes to the same result."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from biomarkers.deid import Pseudonymizer
from biomarkers.synth import synthesize
from biomarkers.pipeline import Pipeline, load_config
from biomarkers.pipeline.demo import DEMO_PARAMS, DEMO_SCHEMA

pytestmark = pytest.mark.slow  # ~1-2 min: several pipeline runs, a dask cluster and a killed subprocess

SECRET = os.environ.get("BIOMARKERS_TEST_SECRET", "test-secret-0123456789abcdef")
SYNTH = dict(centres=3, seed=5, executor="serial", pet=False, ct_size=64)


def _config(root: Path, out: str, executor: str = "local:2") -> Path:
    params = root / "params" / "ct.yaml"
    if not params.exists():
        params.parent.mkdir(parents=True, exist_ok=True)
        params.write_text(yaml.safe_dump(DEMO_PARAMS["ct"]))
    cfg = {
        "name": "test",
        "source": {"dicom": "cohort/dicom", "clinical": ["cohort/clinical/*.csv"]},
        "out": out,
        "executor": executor,
        "tracking": {"uri": "mlflow.db", "experiment": "test-pipeline"},
        "ingest": {"masks": {"rois": {"GTV": ["GTV", "GTV_primary", "gtv"]}}},
        "extract": {"params": {"CT": "params/ct.yaml"}},
        "clinical": {"schema": DEMO_SCHEMA},
    }
    path = root / f"{out}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _stage_cases(report, stage):
    return [c for c in report.cases if c.stage == stage]


def _computed(report, stage):
    return [c for c in _stage_cases(report, stage) if c.status == "done" and not c.cached]


def _wide(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / "features" / "features_wide.parquet")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The whole scenario, run once; tests below check one property each."""
    root = tmp_path_factory.mktemp("pipe")
    res: dict = {"root": root, "cache_dir": Path(os.environ["BIOMARKERS_CACHE_DIR"])}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BIOMARKERS_SECRET", SECRET)
        mp.delenv("BIOMARKERS_SECRET_FILE", raising=False)
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        synthesize(root / "cohort", patients=6, **SYNTH)
        cfg = _config(root, "out_local")
        res["cold"] = Pipeline(load_config(cfg)).run()
        res["cold_analysis"] = pd.read_parquet(root / "out_local" / "analysis.parquet")
        res["warm"] = Pipeline(load_config(cfg)).run()
        # without the stage-level cache, the item-level caches of ingest and extraction still apply
        for f in (root / "out_local" / ".pipeline").glob("state.json"):
            f.unlink()
        res["items_cached"] = Pipeline(load_config(cfg)).run()
        synthesize(root / "cohort", patients=8, **SYNTH)  # two new patients: C1-0003, C2-0003
        res["added"] = Pipeline(load_config(cfg)).run()
        res["local_wide"] = _wide(root / "out_local")

        # a real dask cluster with separate worker processes
        from distributed import LocalCluster

        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
            addr = cluster.scheduler_address.replace("tcp://", "dask://")
            res["dask"] = Pipeline(load_config(_config(root, "out_dask")), executor=addr).run()
        res["dask_wide"] = _wide(root / "out_dask")

        # kill `biomarkers run` after its first feature item is written, then rerun
        kcfg = _config(root, "out_kill")
        env = dict(os.environ, BIOMARKERS_SECRET=SECRET)
        proc = subprocess.Popen([sys.executable, "-m", "biomarkers", "run", str(kcfg), "--executor", "local:2"],
                                cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                start_new_session=True)
        items = root / "out_kill" / "features" / "items"
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None and not list(items.glob("[!.]*.parquet")):
            time.sleep(0.05)
        res["killed_while_running"] = proc.poll() is None
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        res["items_before_resume"] = len(list(items.glob("[!.]*.parquet")))
        res["resumed"] = Pipeline(load_config(kcfg)).run()
        res["kill_wide"] = _wide(root / "out_kill")
    return res


def _pseudo(pid: str) -> str:
    return Pseudonymizer(SECRET.encode()).patient_id(pid)


def test_cold_run_reports_every_patient_series_roi(runs):
    rep = runs["cold"]
    st = rep.extra["stages"]
    for s in ("ingest", "extract", "clinical", "link", "tracking"):
        assert st[s]["status"] == "ran", (s, st[s])
    assert st["experiments"]["status"] == "disabled"
    pseudos = {_pseudo(f"C{c}-{n:04d}") for c in (1, 2, 3) for n in (1, 2)}
    ingest = _stage_cases(rep, "ingest")
    for p in pseudos:  # one CT image and one GTV mask per patient, converted
        mine = [c for c in ingest if p in c.case]
        assert sorted(c.details.get("kind") for c in mine) == ["image", "mask"]
        assert all(c.status == "done" for c in mine)
    extract = _stage_cases(rep, "extract")
    assert len(extract) == 6 and all(c.status == "done" and not c.cached for c in extract)
    assert {c.case.split("/")[0] for c in extract} == pseudos
    # the clinical quirks are reported, not fatal: 3 rows without an id fail, 3 patients without imaging skipped
    assert sum(1 for c in _stage_cases(rep, "clinical") if c.status == "failed" and "missing patient id" in c.reason) == 3
    assert sum(1 for c in _stage_cases(rep, "link") if c.reason == "clinical row but no features") == 3
    # the analysis table joins outcome and CT features for the 6 patients; no original id in it
    table = runs["cold_analysis"]
    assert set(table["patient_id"]) == pseudos and table["outcome"].notna().all()
    assert any(c.startswith("CT_original_firstorder_") for c in table.columns)
    assert not table.astype(str).apply(lambda s: s.str.contains(r"C\d-\d{4}", case=False)).any().any()
    assert (runs["root"] / "out_local" / "run_report.json").is_file()


def test_pipeline_is_an_mlflow_run(runs):
    from mlflow import MlflowClient

    uri = f"sqlite:///{runs['root'] / 'mlflow.db'}"
    c = MlflowClient(tracking_uri=uri)
    run = c.get_run(runs["cold"].extra["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["config_hash"] == runs["cold"].extra["config_hash"][:16]
    assert "local" in run.data.params["executor"]
    assert run.data.tags["biomarkers.stage.extract"] == "ran"
    names = {i.dataset.name for i in run.inputs.dataset_inputs}
    assert {"test-features", "test-analysis"} <= names
    arts = {a.path for a in c.list_artifacts(run.info.run_id, "reports")}
    assert "reports/run_report.json" in arts


def test_rerun_with_nothing_changed_computes_nothing(runs):
    rep = runs["warm"]
    st = rep.extra["stages"]
    assert st["ingest"]["status"] == "cached" and st["extract"]["status"] == "cached"
    assert _computed(rep, "ingest") == [] and _computed(rep, "extract") == []
    # nothing new to track: no new MLflow run, the report names the last one
    assert st["tracking"]["status"] == "cached"
    assert rep.extra["mlflow_run_id"] == runs["cold"].extra["mlflow_run_id"]
    # every case is still listed (from the last report), marked cached
    assert len(_stage_cases(rep, "extract")) == 6
    assert len(_stage_cases(rep, "clinical")) == len(_stage_cases(runs["cold"], "clinical")) > 0
    assert all(c.cached for c in _stage_cases(rep, "ingest") + _stage_cases(rep, "extract"))


def test_item_level_caches_without_stage_state(runs):
    rep = runs["items_cached"]
    st = rep.extra["stages"]
    assert st["ingest"]["status"] == "ran" and st["extract"]["status"] == "ran"
    assert _computed(rep, "ingest") == [] and _computed(rep, "extract") == []


def test_adding_patients_processes_only_the_new_ones(runs):
    rep = runs["added"]
    new = {_pseudo("C1-0003"), _pseudo("C2-0003")}
    ing = _computed(rep, "ingest")
    ext = _computed(rep, "extract")
    assert ing and {c for c in ing if not any(p in c.case for p in new)} == set()
    assert len(ing) == 4  # image + mask of each new patient
    assert sorted(c.case.split("/")[0] for c in ext) == sorted(new)
    assert len(_stage_cases(rep, "extract")) == 8
    assert len(runs["local_wide"]) == 8


def test_dask_cluster_gives_the_same_feature_table(runs):
    rep = runs["dask"]
    assert "dask" in rep.extra["executor"]
    assert len(_computed(rep, "extract")) == 8
    pd.testing.assert_frame_equal(runs["dask_wide"], runs["local_wide"], check_exact=True)


def test_killed_run_resumes_to_the_same_result(runs):
    assert runs["killed_while_running"], "the run finished before it could be killed"
    assert runs["items_before_resume"] >= 1
    rep = runs["resumed"]
    assert rep.extra["stages"]["extract"]["status"] == "ran"
    # the items written before the kill are reused
    assert len(_computed(rep, "extract")) <= 8 - runs["items_before_resume"]
    pd.testing.assert_frame_equal(runs["kill_wide"], runs["local_wide"], check_exact=True)


def test_no_identifier_in_outputs_or_mlflow(runs):
    """Every output of the pipeline (including its caches) and the MLflow store are free of the
    synthetic patients' ids, names and birth dates (ground truth of the generator)."""
    from biomarkers.deid.scan import scan_files, scan_mlflow

    gt = pd.read_csv(runs["root"] / "cohort" / "ground_truth.csv", dtype=str)
    needles = {}
    for r in gt.itertuples():
        needles[f"id {r.patient_id}"] = (r.patient_id, "id")
        needles[f"name {r.patient_id}"] = (r.name, "name")
        needles[f"birth {r.patient_id}"] = (r.birth_date, "date")
    hits = scan_files([runs["root"] / "out_local"], needles)
    assert not hits, hits[:5]
    hits = scan_mlflow(f"sqlite:///{runs['root'] / 'mlflow.db'}", needles)
    assert not hits, hits[:5]


def test_source_file_hashes_stay_on_the_source_side(runs):
    """No SHA-256 of an original DICOM file is stored in OUT (it would confirm, to whoever holds
    the file, that it belongs to this dataset): the per-file hashes of the source tree live in
    the source-side cache folder, beside the index cache."""
    from biomarkers.io import sha256_file

    src_hashes = {sha256_file(p) for p in (runs["root"] / "cohort" / "dicom").rglob("*") if p.is_file()}
    assert len(src_hashes) > 50
    out = runs["root"] / "out_local"
    leaked = [p for p in out.rglob("*") if p.is_file() and p.stat().st_size < 50_000_000
              and any(h.encode() in p.read_bytes() for h in src_hashes)]
    assert not leaked, leaked[:5]
    side = list(runs["cache_dir"].glob("trees/*.json"))
    # the session's cache folder holds the trees of other tests' cohorts too: one of them is this one's
    assert side and any(h in s.read_text() for s in side for h in src_hashes)
