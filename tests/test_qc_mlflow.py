"""MLflow in the QC report and the model-training view.

* experiments biomarkers creates carry ``mlflow.experimentKind = custom_model_development``
  (older experiments get it when next used);
* an experiment's parent run stores a runs-table view (every metric a column, sorted by the ranking
  metric, so the child runs are listed); the report's links open MLflow's model-training view with
  that view, and the experiments' plots are embedded (re-encoded, metadata-free): checked on
  a real MLflow store with a parent run and child runs that logged real matplotlib figures;
* slow: the real ``mlflow server`` serves that link to headless Chromium, which shows the runs table
  (not the GenAI overview) with every child run and the metric column.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from biomarkers.qc import run_qc
from biomarkers.qc.render import png_chunks
from biomarkers.synth import synthesize
from biomarkers.tracking import child_run, client, get_or_create_experiment, parent_run
from biomarkers.tracking.store import ui_url

KIND = "mlflow.experimentKind"


def test_new_and_existing_experiments_are_model_training(tmp_path):
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    eid = get_or_create_experiment("fresh", uri)
    c = client(uri)
    assert c.get_experiment(eid).tags.get(KIND) == "custom_model_development"
    old = mlflow.MlflowClient(uri).create_experiment("made-elsewhere", artifact_location=(tmp_path / "a").as_uri())
    assert KIND not in c.get_experiment(old).tags
    assert get_or_create_experiment("made-elsewhere", uri) == old
    assert c.get_experiment(old).tags.get(KIND) == "custom_model_development"


def test_ui_url_asks_for_the_model_training_view():
    assert ui_url("http://127.0.0.1:5000/", "7") == (
        "http://127.0.0.1:5000/#/experiments/7/runs?workflowType=machine_learning&viewStateShareKey=biomarkers-runs")
    assert ui_url("http://h:1", "7", run_id="abc") == "http://h:1/#/experiments/7/runs/abc?workflowType=machine_learning"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """An ingest OUT of a two-patient cohort plus a real MLflow experiment (parent + 2 children with plots)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow

    from biomarkers.dicom.ingest import run_ingest

    root = tmp_path_factory.mktemp("qcml")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    synthesize(root / "cohort", patients=2, centres=2, seed=3, executor="serial", ct_size=64, pet=False)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BIOMARKERS_SECRET", "qc-mlflow-test-secret-0123456789")
        run_ingest(root / "cohort" / "dicom", root / "OUT", executor="serial")
    leaderboard = []
    with parent_run("qc-exp", uri, run_name="qc-exp") as parent:
        mlflow.log_metric("best_auc", 0.8)
        for name, auc in (("logistic_combat", 0.8), ("logistic_raw", 0.7)):
            with child_run(name) as child:
                mlflow.log_metrics({"auc": auc, "brier": 0.2})
                fig, ax = plt.subplots(figsize=(3, 3))
                ax.plot([0, 1], [0, auc])
                mlflow.log_figure(fig, "plots/roc.png")
                plt.close(fig)
                leaderboard.append({"pipeline": name, "auc": auc, "auc_ci_low": auc - 0.1, "auc_ci_high": auc + 0.1,
                                    "run_id": child.info.run_id})
    (root / "OUT" / "experiments.json").write_text(json.dumps(
        [{"name": "qc-exp", "run_id": parent.info.run_id, "leaderboard": leaderboard, "best": "logistic_combat"}]))
    return {"root": root, "uri": uri, "parent": parent, "leaderboard": leaderboard}


def test_parent_run_stores_a_runs_view_with_every_metric(store):
    tags = client(store["uri"]).get_experiment(store["parent"].info.experiment_id).tags
    view = json.loads(tags["mlflow.sharedViewState.biomarkers-runs"])
    assert {"metrics.`auc`", "metrics.`brier`", "metrics.`best_auc`"} <= set(view["selectedColumns"])
    assert view["orderByKey"] == "metrics.`auc`" and view["orderByAsc"] is False


def _report(store):
    # an ingest OUT does not look for experiments.json: point the layout at it
    from biomarkers.qc.report import Layout

    layout = Layout.find(store["root"] / "OUT")
    layout.experiments = store["root"] / "OUT" / "experiments.json"
    return run_qc(layout, executor="serial", tracking_uri=store["uri"])


def test_report_links_runs_and_embeds_their_plots(store):
    _report(store)
    qc = store["root"] / "OUT" / "qc"
    page = (qc / "index.html").read_text()
    exp_id = store["parent"].info.experiment_id
    assert ui_url("http://127.0.0.1:5000", exp_id).replace("&", "&amp;") in page
    for row in store["leaderboard"]:
        plot = qc / "assets" / f"{row['run_id']}_roc.png"
        assert plot.is_file() and f'src="assets/{plot.name}"' in page
        assert png_chunks(plot.read_bytes()) == ["IHDR", "PLTE", "IDAT", "IEND"] or \
            png_chunks(plot.read_bytes()) == ["IHDR", "IDAT", "IEND"]
        assert ui_url("http://127.0.0.1:5000", exp_id, row["run_id"]).replace("&", "&amp;") in page
    # a second build reads nothing from MLflow again (runs and plots are immutable)
    before = (qc / "assets" / "runs.json").stat().st_mtime_ns
    _report(store)
    assert (qc / "assets" / "runs.json").stat().st_mtime_ns == before


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_mlflow_ui_opens_the_link_in_the_model_training_view(store):
    chromium, driver_bin = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver_bin):
        pytest.skip("no Chromium/chromedriver on this machine (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    port = _free_port()
    mlflow_bin = str(Path(sys.executable).with_name("mlflow"))
    server = subprocess.Popen([mlflow_bin, "server", "--backend-store-uri", store["uri"], "--host", "127.0.0.1",
                               "--port", str(port), "--workers", "1"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True, cwd=store["root"])
    profile = tempfile.mkdtemp(prefix="qc-chromium-")
    driver = None
    try:
        import urllib.request

        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        opts = webdriver.ChromeOptions()
        for a in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=2600,900", f"--user-data-dir={profile}"):
            opts.add_argument(a)
        opts.binary_location = chromium
        driver = webdriver.Chrome(options=opts, service=Service(driver_bin))
        driver.get(ui_url(f"http://127.0.0.1:{port}", store["parent"].info.experiment_id))
        names = [r["pipeline"] for r in store["leaderboard"]]
        text = ""
        deadline = time.time() + 60
        while time.time() < deadline:
            text = driver.execute_script("return document.body.innerText")
            if all(n in text for n in names) and "auc" in text.split("Run Name", 1)[-1]:
                break
            time.sleep(0.5)
        folder = Path(os.environ.get("BIOMARKERS_ARTIFACTS") or store["root"])
        folder.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(folder / "mlflow_runs_view.png"))
        assert "Run Name" in text, text[:800]  # the runs table of the model-training view
        assert "Token Usage" not in text and "No data available for the selected time range" not in text
        assert all(n in text for n in names), text[:800]  # child runs listed, not folded under the parent
        assert "auc" in text.split("Run Name", 1)[-1], text[:800]  # the metric column
    finally:
        if driver is not None:
            driver.quit()
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
        shutil.rmtree(profile, ignore_errors=True)
