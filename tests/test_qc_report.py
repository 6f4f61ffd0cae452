"""The QC report of a real pipeline output, opened in real headless Chromium (Selenium + the system
chromedriver): no console errors, one card per mask with every image loaded, filters by centre and
flag, a sortable table; thumbnails rendered in executor workers and cached by content (a rerun
renders only new or changed cases).

The cohort is a small synthetic PET/CT cohort (real DICOM + RTSTRUCT) with one CT series missing
a slice (ingested with ``allow_gaps``, so its cards carry the ``missing_slices`` flag). Expected
values come from the manifest and the clinical table, not from the report code.

A screenshot of the index is written to ``$BIOMARKERS_ARTIFACTS`` when set (CI keeps that
folder), else to the test's temporary folder.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml

from biomarkers.qc import QcSettings, run_qc
from biomarkers.synth import synthesize

SECRET = os.environ.get("BIOMARKERS_TEST_SECRET", "test-secret-0123456789abcdef")
SYNTH = dict(centres=3, seed=11, executor="serial", ct_size=64, pet_size=32)
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
CHROMEDRIVER = shutil.which("chromedriver")
CHROME_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1400,1000")


def _config(root: Path) -> Path:
    from biomarkers.pipeline.demo import DEMO_PARAMS, DEMO_SCHEMA

    for name in ("ct", "pet"):
        (root / "params").mkdir(exist_ok=True)
        (root / "params" / f"{name}.yaml").write_text(yaml.safe_dump(DEMO_PARAMS[name]))
    cfg = {
        "name": "qctest",
        "source": {"dicom": "cohort/dicom", "clinical": ["cohort/clinical/*.csv"]},
        "out": "out",
        "executor": "local:2",
        "tracking": {"uri": "mlflow.db", "experiment": "qc-test"},
        "ingest": {"allow_gaps": True, "masks": {"rois": {"GTV": ["GTV", "GTV_primary", "gtv"]}}},
        "extract": {"params": {"CT": "params/ct.yaml", "PT": "params/pet.yaml"}},
        "clinical": {"schema": DEMO_SCHEMA},
    }
    path = root / "pipeline.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _drop_middle_slice(cohort: Path) -> None:
    ct = sorted(p for p in (cohort / "dicom").glob("C2/*/CT") if p.is_dir())[0]
    files = sorted(ct.glob("*.dcm"))
    files[len(files) // 2].unlink()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Pipeline run (its stage qc renders cold on the pipeline's 2 workers), ``run_qc`` warm; two new
    patients, pipeline again (stage qc renders the new cards), ``run_qc`` warm again."""
    from biomarkers.pipeline import Pipeline, load_config

    root = tmp_path_factory.mktemp("qc")
    res: dict = {"root": root, "out": root / "out"}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BIOMARKERS_SECRET", SECRET)
        mp.delenv("BIOMARKERS_SECRET_FILE", raising=False)
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.chdir(root)
        synthesize(root / "cohort", patients=6, **SYNTH)
        _drop_middle_slice(root / "cohort")
        cfg = _config(root)
        res["pipeline"] = Pipeline(load_config(cfg)).run()  # stage qc renders every card (cold)
        res["thumbs_cold"] = {p.name: p.stat().st_mtime_ns for p in (res["out"] / "qc" / "thumbs").iterdir()}
        res["warm"] = run_qc(res["out"], executor="local:2", tracking_uri=str(root / "mlflow.db"))
        res["thumbs_warm"] = {p.name: p.stat().st_mtime_ns for p in (res["out"] / "qc" / "thumbs").iterdir()}
        res["manifest6"] = pd.read_parquet(res["out"] / "dataset" / "manifest.parquet")
        synthesize(root / "cohort", patients=8, **SYNTH)  # two new patients (same seed: the others unchanged)
        res["pipeline8"] = Pipeline(load_config(cfg)).run()
        res["added"] = run_qc(res["out"], executor="local:2", tracking_uri=str(root / "mlflow.db"))
    res["manifest"] = pd.read_parquet(res["out"] / "dataset" / "manifest.parquet")
    res["clinical"] = pd.read_parquet(res["out"] / "clinical" / "clinical.parquet")
    return res


def _cards_expected(manifest: pd.DataFrame) -> tuple[list[str], list[str]]:
    masks = manifest[(manifest.kind == "mask") & (manifest.path.fillna("") != "")]
    masked = set(manifest.loc[manifest.kind == "mask", "image_path"].fillna(""))
    images = manifest[(manifest.kind == "image") & (manifest.path.fillna("") != "") & ~manifest.path.isin(masked)]
    return sorted(masks.path), sorted(images.path)


def _qc_stage(report) -> dict:
    return report.extra["stages"]["qc"]


def test_pipeline_stage_qc_on_by_default(built):
    assert built["pipeline"].counts()["failed"] <= 3  # the clinical files have one id-less row per centre
    m = built["manifest6"]
    assert (m.kind == "mask").sum() >= 6 and m.qc_flags.fillna("").str.contains("missing_slices").any()
    st = _qc_stage(built["pipeline"])
    assert st["status"] == "ran" and st["counts"]["failed"] == 0, st
    assert (built["out"] / "qc" / "index.html").is_file()
    qc_cases = [c for c in built["pipeline"].cases if c.stage == "qc"]
    masks, images = _cards_expected(m)
    assert len(qc_cases) == len(masks) + len(images)


def test_mlflow_run_holds_the_qc_report(built):
    from biomarkers.tracking import client

    run_id = built["pipeline"].extra["mlflow_run_id"]
    c = client(f"sqlite:///{built['root'] / 'mlflow.db'}")
    names = {a.path for a in c.list_artifacts(run_id, "qc")}
    assert {"qc/index.html", "qc/thumbs"} <= names, names
    thumbs = [a.path for a in c.list_artifacts(run_id, "qc/thumbs")]
    masks, images = _cards_expected(built["manifest6"])  # the first run's cards
    assert len([t for t in thumbs if t.endswith(".png")]) == 4 * len(masks) + 3 * len(images)


def test_thumbnails_rendered_in_parallel_workers(built):
    infos = [json.loads(p.read_text()) for p in (built["out"] / "qc" / "thumbs").glob("*.json")]
    pids = {i["pid"] for i in infos}
    assert os.getpid() not in pids and len(pids) >= 2, pids  # rendered in (several) worker processes
    masks, images = _cards_expected(built["manifest6"])
    assert _qc_stage(built["pipeline"])["details"]["rendered"] == len(masks) + len(images)


def test_warm_rerun_renders_nothing(built):
    assert built["warm"].extra["rendered"] == 0
    assert built["warm"].n_computed() == 0 and all(c.cached for c in built["warm"].cases if c.status == "done")
    assert built["thumbs_warm"] == built["thumbs_cold"]  # not one file rewritten


def test_added_patients_render_only_their_cards(built):
    old_m, old_i = _cards_expected(built["manifest6"])
    new_m, new_i = _cards_expected(built["manifest"])
    n_new = len(set(new_m) - set(old_m)) + len(set(new_i) - set(old_i))
    assert n_new >= 2
    assert _qc_stage(built["pipeline8"])["details"]["rendered"] == n_new
    assert built["added"].extra["rendered"] == 0


def test_changed_mask_rerenders_only_that_card(built, tmp_path):
    """A mask re-segmented in place (as a rerun of ingest writes it: new voxels, new content hash)."""
    from biomarkers.io import sha256_array

    out = tmp_path / "copy"
    shutil.copytree(built["out"] / "dataset", out / "dataset")
    shutil.copytree(built["out"] / "qc", out / "qc")
    m = pd.read_parquet(out / "dataset" / "manifest.parquet")
    i = m.index[(m.kind == "mask") & (m.path.fillna("") != "")][0]
    img = nib.load(str(out / "dataset" / m.at[i, "path"]))
    arr = np.asanyarray(img.dataobj).copy()
    arr[tuple(np.argwhere(arr > 0)[0])] = 0  # one voxel less
    nib.save(nib.Nifti1Image(arr, img.affine, img.header), str(out / "dataset" / m.at[i, "path"]))
    m.at[i, "content_hash"] = sha256_array(arr)
    m.to_parquet(out / "dataset" / "manifest.parquet")
    rep = run_qc(out, executor="serial")
    assert rep.extra["rendered"] == 1
    assert rep.extra["pruned"] == 5  # the old card's 4 PNGs and its JSON
    changed = [c for c in rep.cases if not c.cached]
    assert [c.case for c in changed] == [f"qc/{m.at[i, 'path']}"]


# ----------------------------------------------------------------------------- browser
@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("no Chromium/chromedriver on this machine (apt-get install chromium chromium-driver; "
                    ".ci/run installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="qc-chromium-")
    opts = webdriver.ChromeOptions()
    for a in CHROME_FLAGS:
        opts.add_argument(a)
    opts.add_argument(f"--user-data-dir={profile}")
    opts.binary_location = CHROMIUM
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=opts, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def page(built, browser):
    browser.get((built["out"] / "qc" / "index.html").resolve().as_uri())
    browser.execute_script("return document.readyState")
    deadline = time.time() + 20
    while time.time() < deadline and not browser.execute_script(
            "return Array.from(document.images).every(i => i.complete)"):
        time.sleep(0.1)
    return browser


def _visible(driver, selector: str) -> list:
    return driver.execute_script(
        f"return Array.from(document.querySelectorAll({json.dumps(selector)})).filter(e => !e.hidden)"
        ".map(e => e.getAttribute('data-mask') || e.getAttribute('data-image'))")


def _select(driver, name: str, value: str) -> None:
    driver.execute_script(
        "const s = document.getElementById(arguments[0]); s.value = arguments[1];"
        "s.dispatchEvent(new Event('change'));", f"filter-{name}", value)


def test_no_console_errors(page):
    logs = page.get_log("browser")
    assert [entry for entry in logs if entry["level"] in ("SEVERE", "ERROR")] == [], logs


def test_one_card_per_mask_every_image_loaded(page, built):
    masks, images = _cards_expected(built["manifest"])
    got_m = page.execute_script("return Array.from(document.querySelectorAll('[data-mask]')).map(e => "
                                "e.getAttribute('data-mask'))")
    got_i = page.execute_script("return Array.from(document.querySelectorAll('[data-image]')).map(e => "
                                "e.getAttribute('data-image'))")
    assert sorted(got_m) == masks  # exactly one element per mask row
    assert sorted(got_i) == images
    per_card = page.execute_script(
        "return Array.from(document.querySelectorAll('[data-mask]')).map(e => e.querySelectorAll('img').length)")
    assert set(per_card) == {4}  # 3 orthogonal slices + largest-area axial slice
    widths = page.execute_script("return Array.from(document.images).map(i => [i.getAttribute('src'), "
                                 "i.naturalWidth])")
    assert len(widths) >= 4 * len(masks) + 3 * len(images)
    assert [w for w in widths if w[1] <= 0] == []


def test_screenshot_where_ci_keeps_artifacts(page, tmp_path):
    folder = Path(os.environ.get("BIOMARKERS_ARTIFACTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    shot = folder / "qc_index.png"
    page.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000


def test_filter_by_centre(page, built):
    clin = built["clinical"]
    m = built["manifest"]
    masks, images = _cards_expected(m)
    centre_of = dict(zip(clin.patient_id.astype(str), clin.centre.astype(str)))
    pid_of = dict(zip(m.path.fillna(""), m.patient_id.astype(str)))
    for centre in sorted(set(centre_of.values())):
        _select(page, "centre", centre)
        want = sorted(p for p in masks + images if centre_of.get(pid_of[p]) == centre)
        assert want and sorted(_visible(page, "article[data-mask], article[data-image]")) == want, centre
        rows = page.execute_script("return Array.from(document.querySelectorAll('#cohort tbody tr'))"
                                   ".filter(r => !r.hidden).map(r => r.getAttribute('data-centre'))")
        assert rows and set(rows) == {centre}
    _select(page, "centre", "")
    assert len(_visible(page, "article[data-mask], article[data-image]")) == len(masks) + len(images)


def test_filter_by_flag(page, built):
    m = built["manifest"]
    flagged_images = set(m.loc[(m.kind == "image") & m.qc_flags.fillna("").str.contains("missing_slices"), "path"])
    masks, images = _cards_expected(m)
    mk = m[m.path.isin(masks)]
    want = sorted(set(mk.loc[mk.image_path.isin(flagged_images) | mk.qc_flags.fillna("").str.contains(
        "missing_slices"), "path"]) | (flagged_images & set(images)))
    assert want
    _select(page, "flag", "missing_slices")
    assert sorted(_visible(page, "article[data-mask], article[data-image]")) == want
    _select(page, "flag", "__none__")
    assert not set(_visible(page, "article[data-mask], article[data-image]")) & set(want)
    _select(page, "flag", "")


def test_table_sorts_by_volume(page, built):
    from selenium.webdriver.common.by import By

    m = built["manifest"]
    vols = sorted(float(v) for v in m.loc[(m.kind == "mask") & (m.path.fillna("") != ""), "volume_ml"])
    th = [h for h in page.find_elements(By.CSS_SELECTOR, "#cohort th[data-sort]") if h.text.startswith("volume")][0]
    idx = page.execute_script("return Array.prototype.indexOf.call(arguments[0].parentNode.children, arguments[0])", th)

    def column() -> list[float]:
        vals = page.execute_script("return Array.from(document.querySelectorAll('#cohort tbody tr')).map(r => "
                                   "r.cells[arguments[0]].getAttribute('data-value'))", idx)
        return [float(v) for v in vals if v]

    th.click()
    assert th.get_attribute("aria-sort") == "ascending"
    assert column() == pytest.approx(vols)
    th.click()
    assert th.get_attribute("aria-sort") == "descending"
    assert column() == pytest.approx(vols[::-1])


def test_a_mask_that_cannot_be_shown_fails_alone_with_its_reason(built, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(built["out"] / "dataset", out / "dataset")
    m = pd.read_parquet(out / "dataset" / "manifest.parquet")
    masks, images = _cards_expected(m)
    (out / "dataset" / masks[0]).unlink()  # e.g. deleted by hand after ingest
    rep = run_qc(out, executor="serial")
    failed = [c for c in rep.cases if c.status == "failed"]
    assert [c.case for c in failed] == [f"qc/{masks[0]}"]
    assert masks[0] in failed[0].reason and str(tmp_path) not in failed[0].reason  # relative, no absolute path
    assert rep.counts()["done"] == len(masks) + len(images) - 1
    page = (out / "qc" / "index.html").read_text()
    assert page.count(f'data-mask="{masks[0]}"') == 1 and str(tmp_path) not in page
    assert f'data-case="{masks[0]}"' in page  # listed with the skipped and failed cases
