"""Experiments land in real MLflow stores and are read back through the MLflow client.

* a temporary SQLite store (the default kind of store), in-process;
* a real ``mlflow server`` subprocess on 127.0.0.1 (free port) with its own SQLite backend
  and artifact folder (started once for this module, killed at the end);
* the logged model loads with ``mlflow.pyfunc.load_model`` and predicts like the in-process
  pipeline; the same experiment against the server gives the same numbers.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

from biomarkers import tracking
from biomarkers.cli import main
from biomarkers.modeling.experiment import leaderboard, predict_table, run_experiment
from biomarkers.modeling.simulate import synthetic_table

SPEC = {
    "name": "track-test",
    "input": {"table": "data/analysis.parquet", "id_column": "patient_id", "centre_column": "centre"},
    "target": {"column": "outcome", "positive": 1},
    "features": {"image_types": ["original", "wavelet-*"]},
    "pipelines": [
        {"name": "lr_combat", "harmonize": "combat", "redundancy": 0.9, "select": {"method": "univariate", "k": 5},
         "model": {"type": "logistic"}, "grid": {"model__C": [0.1, 1.0]}},
        {"name": "rf_mrmr", "harmonize": "none", "redundancy": 0.9, "select": {"method": "mrmr", "k": 5},
         "model": {"type": "random_forest", "params": {"n_estimators": 50}}},
    ],
    "validation": {"outer_folds": 3, "outer_repeats": 1, "inner_folds": 3, "bootstrap": 200,
                   "permutations": 2, "heldout_centre": "C3", "seed": 0},
    "registered_model": "track-test-model",
}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("project")
    df = synthetic_table(60, 60, n_centres=3, signal=1.5, n_signal=2, seed=5)
    (root / "data").mkdir()
    df.to_parquet(root / "data" / "analysis.parquet", index=False)
    (root / "experiments").mkdir()
    spec = dict(SPEC, input=dict(SPEC["input"], table="../data/analysis.parquet"))
    (root / "experiments" / "track.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return root


@pytest.fixture(scope="module")
def local_run(project):
    uri = f"sqlite:///{project / 'store' / 'mlflow.db'}"
    res = run_experiment(project / "experiments" / "track.yaml", tracking_uri=uri)
    return uri, res


# --------------------------------------------------------------------------- URIs


def test_tracking_uri_precedence(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.tracking_uri() == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    assert tracking.tracking_uri() == "http://127.0.0.1:9"
    assert tracking.tracking_uri("sqlite:////x/y.db") == "sqlite:////x/y.db"
    assert tracking.tracking_uri("sub/m.db") == f"sqlite:///{tmp_path.resolve() / 'sub' / 'm.db'}"
    assert tracking.artifact_location("sqlite:////data/ml/mlflow.db") == "file:///data/ml/mlartifacts"
    assert tracking.artifact_location("http://127.0.0.1:5000") is None


def test_safe_source_never_logs_absolute_paths(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert tracking.safe_source(tmp_path / "a" / "t.parquet") == "a/t.parquet"
    other = Path("/home/Jane^Doe/cohort/t.parquet")
    s = tracking.safe_source(other)
    assert s.endswith("/t.parquet") and "Jane" not in s and s.startswith("sha256-")


def test_import_configures_nothing():
    code = ("import os, sys, biomarkers.tracking, biomarkers.modeling.experiment; "
            "print('mlflow' in sys.modules, os.environ.get('MLFLOW_TRACKING_URI'))")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.split() == ["False", "None"]


# --------------------------------------------------------------------------- local SQLite store


def test_runs_are_read_back_through_the_client(local_run, project):
    uri, res = local_run
    c = MlflowClient(uri)
    exp = c.get_experiment_by_name("track-test")
    assert exp.artifact_location == (project / "store" / "mlartifacts").resolve().as_uri()
    parent = c.get_run(res.parent_run_id)
    assert parent.data.tags["biomarkers.run_kind"] == "experiment"
    # flattened spec as parameters
    p = parent.data.params
    assert p["validation.outer_folds"] == "3" and p["target.column"] == "outcome"
    assert p["features.image_types"] == "['original', 'wavelet-*']"
    children = c.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{res.parent_run_id}'")
    assert sorted(r.info.run_name for r in children) == ["lr_combat", "rf_mrmr"]
    by_name = {r.info.run_name: r for r in children}
    for pr in res.pipelines:
        m = by_name[pr.name].data.metrics
        # the numbers in the store are the ones computed in-process
        for k in ("auc", "auc_ci_low", "auc_ci_high", "balanced_accuracy", "sensitivity", "specificity", "brier",
                  "brier_ci_low", "permutation_p_value", "heldout_auc"):
            assert m[k] == pytest.approx(pr.metrics[k]), k
        assert m["auc_ci_low"] <= m["auc"] <= m["auc_ci_high"]
        assert m["n_patients"] == 40  # 60 minus held-out centre C3
        assert m["heldout_n_patients"] == 20
        # permutation p-value with 2 permutations is one of 1/3, 2/3, 1
        assert any(m["permutation_p_value"] == pytest.approx(v) for v in (1 / 3, 2 / 3, 1.0))
        arts = {a.path for a in c.list_artifacts(by_name[pr.name].info.run_id, "plots")}
        assert arts == {"plots/roc.png", "plots/calibration.png"}
        png = c.download_artifacts(by_name[pr.name].info.run_id, "plots/roc.png")
        assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        sel = pd.read_csv(c.download_artifacts(by_name[pr.name].info.run_id, "features/selected_features.csv"))
        assert list(sel.columns) == ["feature", "n_folds", "frequency", "in_final_model"]
        assert sel["frequency"].between(0, 1).all() and sel["in_final_model"].sum() == 5  # k = 5
        assert np.allclose(sel["frequency"], sel["n_folds"] / 3)
    spec_art = c.download_artifacts(res.parent_run_id, "spec/track.yaml")
    assert yaml.safe_load(Path(spec_art).read_text())["name"] == "track-test"


def test_dataset_logged_with_digest_and_safe_source(local_run, project):
    uri, res = local_run
    c = MlflowClient(uri)
    for run_id in [res.parent_run_id] + [p.run_id for p in res.pipelines]:
        inputs = c.get_run(run_id).inputs.dataset_inputs
        assert len(inputs) == 1
        d = inputs[0].dataset
        assert d.name == "analysis" and d.digest == res.dataset_digest and len(d.digest) >= 8
        import json

        src = json.loads(d.source)
        assert src["uri"].endswith("/analysis.parquet") and str(project) not in d.source
    # privacy: no patient id and no absolute path in any parameter or tag
    ids = pd.read_parquet(project / "data" / "analysis.parquet")["patient_id"].tolist()
    for run_id in [res.parent_run_id] + [p.run_id for p in res.pipelines]:
        r = c.get_run(run_id)
        values = list(r.data.params.values()) + [v for k, v in r.data.tags.items() if not k.startswith("mlflow.")]
        blob = "\n".join(values)
        assert str(project) not in blob
        assert not any(i in blob for i in ids)


def test_logged_model_predicts_like_in_process(local_run, project):
    uri, res = local_run
    import mlflow.pyfunc

    df = pd.read_parquet(project / "data" / "analysis.parquet")
    for pr in res.pipelines:
        with tracking.using_tracking(uri):
            model = mlflow.pyfunc.load_model(pr.model_uri)
        X = df[model.metadata.get_input_schema().input_names()]
        got = np.asarray(model.predict(X))[:, 1]
        want = pr.final_model.predict_proba(X)[:, 1]
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    # the best pipeline is registered under the spec's name
    c = MlflowClient(uri)
    mv = c.get_model_version("track-test-model", res.registered_version)
    assert mv.tags["pipeline"] == res.best


def test_compare_and_predict_cli(local_run, project, capsys, tmp_path):
    uri, res = local_run
    lb = leaderboard("track-test", uri)
    assert lb["pipeline"].tolist() == sorted(res.table()["pipeline"], key=lambda n: -res.table().set_index("pipeline").loc[n, "auc"])
    assert main(["compare", "track-test", "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out
    for pr in res.pipelines:
        line = next(x for x in out.splitlines() if x.startswith(pr.name))
        assert f"{pr.metrics['auc']:.3f} [{pr.metrics['auc_ci_low']:.3f}, {pr.metrics['auc_ci_high']:.3f}]" in line
    dest = tmp_path / "pred.csv"
    model_uri = f"models:/track-test-model/{res.registered_version}"
    assert main(["predict", model_uri, str(project / "data" / "analysis.parquet"), "--out", str(dest),
                 "--tracking-uri", uri]) == 0
    pred = pd.read_csv(dest)
    df = pd.read_parquet(project / "data" / "analysis.parquet")
    best = next(p for p in res.pipelines if p.name == res.best)
    assert pred["patient_id"].tolist() == df["patient_id"].tolist()
    np.testing.assert_allclose(pred["probability"], best.final_model.predict_proba(df)[:, 1], atol=1e-9)
    # a table without the model's columns: exit status 2 and the missing column named
    bad = tmp_path / "bad.csv"
    df.drop(columns=["centre"]).to_csv(bad, index=False)
    assert main(["predict", model_uri, str(bad), "--tracking-uri", uri]) == 2
    assert "missing columns the model needs: ['centre']" in capsys.readouterr().err
    assert main(["compare", "no-such-experiment", "--tracking-uri", uri]) == 2


def test_one_failing_pipeline_does_not_stop_the_others(tmp_path, capsys):
    df = synthetic_table(40, 20, n_centres=2, signal=1.5, seed=9)
    df.to_parquet(tmp_path / "t.parquet", index=False)
    spec = {
        "name": "fail-test", "input": {"table": str(tmp_path / "t.parquet")},
        "pipelines": [
            {"name": "broken", "model": {"type": "random_forest", "params": {"n_estimators": -1}}},
            {"name": "ok", "select": {"method": "univariate", "k": 3}},
        ],
        "validation": {"outer_folds": 3, "inner_folds": 2, "bootstrap": 50}, "log_models": False,
    }
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    res = run_experiment(tmp_path / "s.yaml", tracking_uri=uri)
    assert [p.name for p in res.pipelines] == ["ok"]
    cases = {c.case: c for c in res.report.cases}
    assert cases["broken"].status == "failed" and "n_estimators" in cases["broken"].reason
    assert cases["ok"].status == "done"
    lb = leaderboard("fail-test", uri).set_index("pipeline")
    assert lb.loc["broken", "status"] == "failed" and lb.loc["ok", "status"] == "done"
    c = MlflowClient(uri)
    assert c.get_run(lb.loc["broken", "run_id"]).info.status == "FAILED"
    assert "n_estimators" in c.get_run(lb.loc["broken", "run_id"]).data.tags["biomarkers.error"]
    assert main(["compare", "fail-test", "--tracking-uri", uri]) == 0
    assert "broken                   failed" in capsys.readouterr().out
    # a configuration error is reported before anything runs, naming the pipeline and key
    spec["pipelines"][1]["grid"] = {"model__gamma": [1]}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    assert main(["experiment", str(tmp_path / "s.yaml"), "--tracking-uri", uri]) == 2
    assert "pipeline ok: grid keys ['model__gamma']" in capsys.readouterr().err


def test_no_path_with_a_name_reaches_the_store(tmp_path):
    """A table kept in a folder named after a person: the name must not reach the store
    (params, tags, dataset source, spec artifact, model metadata...), checked with the
    de-identification scanner over the SQLite database and every artifact file."""
    from biomarkers.deid.scan import scan_mlflow

    folder = tmp_path / "Doe^Jane 1961-04-12"
    folder.mkdir()
    synthetic_table(36, 12, n_centres=2, signal=1.5, seed=4).to_parquet(folder / "t.parquet", index=False)
    spec = {"name": "privacy", "input": {"table": "t.parquet"}, "pipelines": [{"name": "lr", "select": {"k": 3}}],
            "validation": {"outer_folds": 3, "inner_folds": 2, "bootstrap": 20}, "registered_model": "privacy"}
    (folder / "spec.yaml").write_text(yaml.safe_dump(spec))
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    run_experiment(folder / "spec.yaml", tracking_uri=uri)
    assert (tmp_path / "store" / "mlartifacts").is_dir()
    hits = scan_mlflow(uri, {"patient": ("Doe^Jane", "name"), "birth": ("19610412", "date")})
    assert hits == []
    # the scanner does find the name when it is there (the check can fail)
    (tmp_path / "store" / "mlartifacts" / "planted.txt").write_text("DOE^JANE")
    assert scan_mlflow(uri, {"patient": ("Doe^Jane", "name")})


# --------------------------------------------------------------------------- real mlflow server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("server")
    port = _free_port()
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    cmd = [str(mlflow_bin), "server", "--host", "127.0.0.1", "--port", str(port),
           "--backend-store-uri", f"sqlite:///{root / 'backend.db'}",
           "--artifacts-destination", str(root / "artifacts"), "--workers", "1"]
    log = open(root / "server.log", "wb")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise RuntimeError(f"mlflow server did not start: {(root / 'server.log').read_text()[-2000:]}")
        time.sleep(0.5)
    yield url, root
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    log.close()


@pytest.mark.slow
def test_same_experiment_against_mlflow_server(mlflow_server, local_run, project, capsys):
    url, root = mlflow_server
    _, local = local_run
    assert main(["experiment", str(project / "experiments" / "track.yaml"), "--tracking-uri", url]) == 0
    capsys.readouterr()
    c = MlflowClient(url)
    exp = c.get_experiment_by_name("track-test")
    lb = leaderboard("track-test", url).set_index("pipeline")
    for pr in local.pipelines:  # same data, spec and seeds -> same numbers as the local store
        for k in ("auc", "auc_ci_low", "auc_ci_high", "brier", "heldout_auc", "permutation_p_value"):
            assert lb.loc[pr.name, k] == pytest.approx(pr.metrics[k], abs=1e-9), (pr.name, k)
    # artifacts went through the server into its artifact folder
    run_id = lb.loc[local.best, "run_id"]
    files = {p.relative_to(root / "artifacts").as_posix() for p in (root / "artifacts").rglob("*") if p.is_file()}
    assert any(f.endswith(f"{run_id}/artifacts/plots/roc.png") for f in files), sorted(files)[:20]
    assert exp.artifact_location.startswith("mlflow-artifacts:")
    # the registered model, served by the server, predicts like the in-process pipeline
    df = pd.read_parquet(project / "data" / "analysis.parquet")
    versions = c.search_model_versions("name='track-test-model'")
    assert versions
    newest = max(versions, key=lambda v: int(v.version))
    pred = predict_table(f"models:/track-test-model/{newest.version}", project / "data" / "analysis.parquet",
                         tracking_uri=url)
    best = next(p for p in local.pipelines if p.name == local.best)
    np.testing.assert_allclose(pred["probability"], best.final_model.predict_proba(df)[:, 1], atol=1e-9)
