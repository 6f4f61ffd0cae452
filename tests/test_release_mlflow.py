"""A release is logged to a real MLflow store (SQLite in tmp): datasets with digest, artifacts."""

from __future__ import annotations

import hashlib
import json

import mlflow
from mlflow import MlflowClient
from test_clinical_fixtures import features_wide, write_clinical

from biomarkers.clinical import load_schema
from biomarkers.deid.scan import scan_mlflow
from biomarkers.release import ReleaseConfig, build_release


def test_release_logged_to_mlflow_as_dataset_and_artifacts(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = write_clinical(tmp_path / "clinical")
    fdir = tmp_path / "FEATURES"
    fdir.mkdir()
    features_wide().to_parquet(fdir / "features_wide.parquet", index=False)
    uri = f"sqlite:///{(tmp_path / 'mlflow.db').as_posix()}"
    config = ReleaseConfig.model_validate({
        "name": "sts", "clinical_variables": ["sex", "histology"], "privacy": {"k": 2, "quasi_identifiers": ["sex"]},
        "mlflow_experiment": "partner-releases",
    })
    before = mlflow.get_tracking_uri()
    res = build_release(fdir, [p["a"], p["b"], p["c"]], config, tmp_path / "R", schema=load_schema(p["schema"]),
                        tracking_uri=uri)
    assert res.mlflow_run_id
    assert mlflow.get_tracking_uri() == before  # global MLflow state restored
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(res.mlflow_run_id)
    exp = client.get_experiment(run.info.experiment_id)
    assert exp.name == "partner-releases" and run.info.run_name == "sts-1.0.0"
    manifest = json.loads((res.path / "manifest.json").read_text())
    inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    assert set(inputs) == {"sts-1.0.0-features", "sts-1.0.0-clinical"}
    for f, name in (("features.parquet", "sts-1.0.0-features"), ("clinical.parquet", "sts-1.0.0-clinical")):
        ds = inputs[name].dataset
        assert ds.digest == manifest["files"][f]["sha256"][:32]
        assert json.loads(ds.profile)["num_rows"] == manifest["tables"][f]["rows"]
        assert str(tmp_path) not in ds.source  # no absolute path in MLflow
    assert run.data.params["release.version"] == "1.0.0" and run.data.params["cohort.n_patients"] == "6"
    assert run.data.tags["biomarkers.release.manifest_sha256"] == hashlib.sha256((res.path / "manifest.json").read_bytes()).hexdigest()
    # artifacts: the whole release folder, byte-identical
    arts = {a.path for a in client.list_artifacts(res.mlflow_run_id, "release/sts-1.0.0")}
    assert arts == {f"release/sts-1.0.0/{x.name}" for x in res.path.iterdir()}
    local = client.download_artifacts(res.mlflow_run_id, "release/sts-1.0.0/features.parquet", str(tmp_path / "dl"))
    assert hashlib.sha256(open(local, "rb").read()).hexdigest() == manifest["files"]["features.parquet"]["sha256"]
    # no original patient id anywhere in the store (deid scanner over DB and artifacts)
    needles = {f"id{i}": (f"STS_00{i}", "id") for i in range(1, 7)}
    assert scan_mlflow(uri, needles) == []
