"""The MLflow helper process: jobs run out of process on a real SQLite store, errors are
reported with MLflow's message, and without the helper the same jobs run in-process."""

from __future__ import annotations

import os

import pandas as pd
import pytest
from mlflow import MlflowClient

from biomarkers.tracking import tracking_uri
from biomarkers.tracking.agent import Tracker, TrackingFailed, finish_run, open_run


def _pid(job: dict) -> int:
    return os.getpid()


def _job(tmp_path, started: bool):
    uri = tracking_uri(str(tmp_path / "mlflow.db"))
    table = tmp_path / "features.parquet"
    pd.DataFrame({"patient_id": ["P1", "P2"], "original_firstorder_Mean": [1.0, 2.0]}).to_parquet(table)
    report = tmp_path / "run_report.json"
    report.write_text("{}\n")
    t = Tracker()
    if started:
        t.start(force=True)  # this test process may have imported MLflow's store already
    try:
        if started:
            assert t.call(_pid, {}) != os.getpid()
        run_id = t.call(open_run, {"uri": uri, "experiment": "agent-test", "run_name": "r", "start_time_ms": 1000,
                                   "tags": {"biomarkers.run_kind": "pipeline"}})
        t.call(finish_run, {"uri": uri, "run_id": run_id, "params": {"pipeline": "p"},
                            "metrics": [["stage_extract_seconds", 1.5, 2000]], "tags": {"biomarkers.stage.extract": "ran"},
                            "datasets": [{"table_path": str(table), "name": "p-features"}], "artifacts": [[str(report), "reports"]],
                            "status": "FINISHED"})
        with pytest.raises(TrackingFailed, match="(?i)run"):
            t.call(finish_run, {"uri": uri, "run_id": "0" * 32, "status": "FINISHED"})  # no such run
    finally:
        t.close()
    return uri, run_id


@pytest.mark.parametrize("started", [True, False], ids=["helper-process", "in-process"])
def test_tracker_logs_the_run(tmp_path, started):
    uri, run_id = _job(tmp_path, started)
    c = MlflowClient(tracking_uri=uri)
    run = c.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.start_time == 1000
    assert run.data.params == {"pipeline": "p"}
    assert run.data.metrics["stage_extract_seconds"] == 1.5
    assert run.data.tags["biomarkers.stage.extract"] == "ran" and run.data.tags["biomarkers.run_kind"] == "pipeline"
    assert [i.dataset.name for i in run.inputs.dataset_inputs] == ["p-features"]
    assert [a.path for a in c.list_artifacts(run_id, "reports")] == ["reports/run_report.json"]
