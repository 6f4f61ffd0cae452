"""The multicentre datalake end to end: three synthetic sites contribute signed bundles; the lake checks,
merges, versions and serves them (real DICOM, real pipeline, real Delta tables, real MLflow store).

Each site is its own ``biomarkers synth`` cohort (own seed; the patients of one centre profile: site k
keeps centre Ck of a k-centre cohort), its own secret and key pair, and runs ``biomarkers run`` once
(module fixture, 16 patients a site). Expected values come from the sites' own pipeline outputs,
read independently with pandas, never from the lake code.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from biomarkers.cli import main
from biomarkers.lake import Lake
from biomarkers.lake.bundle import bundle_id

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SITES = {"north": 1, "east": 2, "south": 3}  # site -> centre profile
PATIENTS = 16
SECRETS = {s: f"secret-of-{s}-site-0123456789" for s in SITES}


def _run(args: list[str], capsys) -> tuple[int, str]:
    capsys.readouterr()
    code = main(args)
    cap = capsys.readouterr()
    return code, cap.out + cap.err


def _site_config(site_dir: Path, qc: bool) -> Path:
    from biomarkers.pipeline.demo import DEMO_PARAMS

    cfg = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    for name, params in DEMO_PARAMS.items():
        (site_dir / "params").mkdir(parents=True, exist_ok=True)
        (site_dir / "params" / f"{name}.yaml").write_text(yaml.safe_dump(params))
    cfg.update(source={"dicom": "cohort/dicom", "clinical": ["cohort/clinical/*.csv"]}, out="out", executor="serial",
               tracking={"enabled": False}, deid={"demo": False}, qc={"enabled": qc})
    cfg["extract"] = {"params": {"CT": "params/ct.yaml", "PT": "params/pet.yaml"}}
    cfg.pop("experiments", None)
    path = site_dir / "site.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Three sites, each synthesised, processed with its own secret, with its own key pair and bundle."""
    from biomarkers.synth import synthesize

    root = tmp_path_factory.mktemp("lake-world")
    saved = os.environ.get("BIOMARKERS_SECRET")
    w: dict = {"root": root, "sites": {}}
    try:
        for seed, (site, centre) in enumerate(SITES.items(), start=11):
            d = root / site
            synthesize(d / "cohort", patients=PATIENTS * centre, centres=centre, seed=seed)
            for sub in (d / "cohort" / "dicom").iterdir():  # the site holds one centre's patients only
                if sub.name != f"C{centre}":
                    shutil.rmtree(sub)
            for csv in (d / "cohort" / "clinical").iterdir():
                if csv.stem != f"C{centre}":
                    csv.unlink()
            cfg = _site_config(d, qc=site == "north")  # the QC report at one site (it costs a few seconds)
            os.environ["BIOMARKERS_SECRET"] = SECRETS[site]
            assert main(["-q", "run", str(cfg)]) == 0
            assert main(["-q", "lake", "keygen", "--site", site, "--keys", str(d / "keys")]) == 0
            assert main(["-q", "contribute", str(d / "out"), "--site", site, "--out", str(d / "bundle1"),
                         "--schema", str(cfg), "--keys", str(d / "keys")]) == 0
            w["sites"][site] = {"dir": d, "cfg": cfg, "out": d / "out", "bundle": d / "bundle1", "keys": d / "keys"}
    finally:
        if saved is None:
            os.environ.pop("BIOMARKERS_SECRET", None)
        else:
            os.environ["BIOMARKERS_SECRET"] = saved
    w["lake"] = root / "lake"
    return w


def _out_table(w, site: str, rel: str) -> pd.DataFrame:
    return pd.read_parquet(w["sites"][site]["out"] / rel)


def _resign(bundle: Path, key_path: Path, edit=None) -> None:
    """Re-list checksums and re-sign a bundle with the site's real key (a site whose own checks were bypassed)."""
    import hashlib

    from biomarkers.lake.keys import load_private_key

    m = json.loads((bundle / "bundle.json").read_text())
    if edit:
        edit(m)
    for f in m["files"]:
        p = bundle / f["path"]
        f["sha256"], f["size"] = hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_size
    data = json.dumps(m, indent=1, sort_keys=True).encode()
    (bundle / "bundle.json").write_bytes(data)
    (bundle / "bundle.json.sig").write_text(base64.b64encode(load_private_key(key_path).sign(data)).decode())


# ----------------------------------------------------------------------------- site side
def test_bundle_is_signed_complete_and_free_of_site_paths(world):
    from biomarkers.lake.bundle import open_bundle, verify_bundle
    from biomarkers.lake.keys import load_public_key

    s = world["sites"]["north"]
    b = s["bundle"]
    priv = s["keys"] / "north.key"
    assert oct(priv.stat().st_mode & 0o777) == "0o600"
    m = json.loads((b / "bundle.json").read_text())
    listed = {f["path"] for f in m["files"]}
    for rel in ("tables/features_long.parquet", "tables/features_wide.parquet", "tables/manifest.parquet",
                "tables/clinical.parquet", "provenance/extraction.json", "provenance/params/ct.yaml",
                "provenance/clinical_schema.yaml", "provenance/software.json", "scan.json"):
        assert rel in listed
    assert not any(p.startswith(("images/", "masks/")) for p in listed)  # no --with-images
    assert json.loads((b / "scan.json").read_text())["findings"] == []
    # the bundle's tables are the site's own tables
    pd.testing.assert_frame_equal(pd.read_parquet(b / "tables/features_wide.parquet"),
                                  _out_table(world, "north", "features/features_wide.parquet"))
    # no path of the site (its folders, its parameter files) anywhere in the bundle
    site_root = str(world["root"])
    for p in b.rglob("*"):
        if p.is_file() and p.suffix in (".json", ".yaml", ".sig"):
            assert site_root not in p.read_text(), p
    assert m["definitions"]["features"]["params"]["CT"]["params"]["setting"]["binWidth"] == 25
    assert len(m["definitions"]["clinical"]["schema_version"]) == 16
    # the signature verifies with the site's public key
    pub = load_public_key((s["keys"] / "north.pub").read_bytes())
    verify_bundle(open_bundle(b), [pub])


def test_contribute_refuses_an_identifier_at_the_site(world, tmp_path, capsys):
    s = world["sites"]["north"]
    out = tmp_path / "out"
    shutil.copytree(s["out"], out)
    c = pd.read_parquet(out / "clinical/clinical.parquet")
    c.loc[2, "smoking"] = "DOE^JOHN"
    c.to_parquet(out / "clinical/clinical.parquet")
    code, text = _run(["contribute", str(out), "--site", "north", "--out", str(tmp_path / "b"),
                       "--schema", str(s["cfg"]), "--keys", str(s["keys"])], capsys)
    assert code == 2 and "smoking" in text and "person name" in text and "DOE" not in text
    assert not (tmp_path / "b").exists()


def test_with_images_and_the_qc_summary(world, tmp_path, capsys):
    """North ran the QC stage (OUT/qc: report.json, index.html, thumbs/): its summary is in every bundle,
    the page and thumbnails only with --with-images; east has no QC folder; images and masks land in the
    lake's objects byte for byte."""
    import hashlib

    s = world["sites"]["north"]
    out = s["out"]
    assert (out / "qc" / "report.json").is_file() and not (world["sites"]["east"]["out"] / "qc").exists()
    east = {f["path"] for f in json.loads((world["sites"]["east"]["bundle"] / "bundle.json").read_text())["files"]}
    assert not any(p.startswith("qc/") for p in east)
    for flag, name in (([], "plain"), (["--with-images"], "images")):
        code, text = _run(["contribute", str(out), "--site", "north", "--out", str(tmp_path / name),
                           "--schema", str(s["cfg"]), "--keys", str(s["keys"]), *flag], capsys)
        assert code == 0, text
    listed = {n: {f["path"] for f in json.loads((tmp_path / n / "bundle.json").read_text())["files"]}
              for n in ("plain", "images")}
    assert "qc/report.json" in listed["plain"] and "qc/report.json" in {
        f["path"] for f in json.loads((s["bundle"] / "bundle.json").read_text())["files"]}
    assert not any(p.startswith("qc/thumbs/") or p.endswith((".html", ".png")) for p in listed["plain"])
    pngs = {f"qc/{p.relative_to(out / 'qc').as_posix()}" for p in (out / "qc").rglob("*.png")}
    assert pngs and pngs | {"qc/report.json", "qc/index.html"} <= listed["images"]
    nii = sorted(p.relative_to(out / "dataset").as_posix() for p in (out / "dataset").rglob("*.nii.gz"))
    assert nii and set(nii) <= listed["images"] and not set(nii) & listed["plain"]
    lake = Lake.init(tmp_path / "lake")
    lake.register("north", (s["keys"] / "north.pub").read_bytes())
    res = lake.add(tmp_path / "images")
    kept = tmp_path / "lake" / "objects" / "north" / res.bundle_id
    for rel in nii[:4]:
        assert hashlib.sha256((kept / rel).read_bytes()).digest() == hashlib.sha256((out / "dataset" / rel).read_bytes()).digest()
    assert lake.ledger()["with_images"].tolist() == [True]


# ----------------------------------------------------------------------------- central side
def test_lake_merges_three_sites(world, capsys):
    lake = world["lake"]
    ks = {s: world["sites"][s]["keys"] / f"{s}.pub" for s in SITES}
    code, _ = _run(["lake", "init", str(lake), "--site-key", f"north={ks['north']}", "--site-key", f"east={ks['east']}"],
                   capsys)
    assert code == 0
    assert _run(["lake", "register", str(lake), "--site", "south", "--key", str(ks["south"])], capsys)[0] == 0
    lk = Lake(lake)
    assert lk.version() == 0
    for i, site in enumerate(SITES, start=1):
        code, text = _run(["lake", "add", str(lake), str(world["sites"][site]["bundle"])], capsys)
        assert code == 0, text
        assert lk.version() == i
        if i == 1:
            world["v1"] = {t: lk.read(t, 1) for t in ("features_wide", "features_long", "clinical", "manifest")}
    world["v_merged"] = lk.version()
    st = lk.status()
    expect = {s: _out_table(world, s, "features/features_wide.parquet")["patient_id"].nunique() for s in SITES}
    assert {x["site"]: x["patients"] for x in st["sites"]} == expect
    assert st["patients"] == sum(expect.values()) and st["version"] == 3
    # every site's rows, exactly as the site computed them, keyed by (site, patient)
    wide = lk.read("features_wide")
    for site in SITES:
        mine = wide[wide["site"] == site].drop(columns=["site", "bundle_id"])
        ref = _out_table(world, site, "features/features_wide.parquet")
        key = ["patient_id", "series_uid", "roi"]
        pd.testing.assert_frame_equal(mine.sort_values(key).reset_index(drop=True),
                                      ref.sort_values(key).reset_index(drop=True), check_dtype=False)
    code, text = _run(["lake", "status", str(lake)], capsys)
    assert code == 0 and "version 3" in text and all(s in text for s in SITES)


def test_query_per_site_aggregate_matches_the_sites(world, capsys):
    sql = ("select site, count(*) as n, avg(original_firstorder_Mean) as mean from features_wide "
           "where modality = 'CT' group by site order by site")
    csv = world["root"] / "q.csv"
    code, text = _run(["lake", "query", str(world["lake"]), sql, "--csv", str(csv)], capsys)
    assert code == 0, text
    got = pd.read_csv(csv).set_index("site")
    for site in SITES:
        ref = _out_table(world, site, "features/features_wide.parquet")
        ref = ref[ref["modality"] == "CT"]
        assert got.loc[site, "n"] == len(ref)
        assert got.loc[site, "mean"] == pytest.approx(ref["original_firstorder_Mean"].mean(), rel=1e-12)
    code, text = _run(["lake", "query", str(world["lake"]), "select * from no_such_table"], capsys)
    assert code == 2 and "query failed" in text


def test_readd_changes_nothing(world, capsys):
    lk = Lake(world["lake"])
    before_v, before = lk.version(), lk.ledger()
    code, text = _run(["lake", "add", str(world["lake"]), str(world["sites"]["east"]["bundle"])], capsys)
    assert code == 0 and "nothing changed" in text
    assert lk.version() == before_v
    pd.testing.assert_frame_equal(lk.ledger(), before)


def _copy_bundle(world, site: str, tmp_path: Path) -> Path:
    dest = tmp_path / f"{site}-copy"
    shutil.copytree(world["sites"][site]["bundle"], dest)
    return dest


def _refused(world, bundle: Path, capsys) -> str:
    v = Lake(world["lake"]).version()
    code, text = _run(["lake", "add", str(world["lake"]), str(bundle)], capsys)
    assert code == 2, text
    assert "bundle refused" in text
    assert Lake(world["lake"]).version() == v
    return text


def test_refuses_one_changed_byte(world, tmp_path, capsys):
    b = _copy_bundle(world, "north", tmp_path)
    p = b / "tables" / "clinical.parquet"
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0x01
    p.write_bytes(bytes(data))
    text = _refused(world, b, capsys)
    assert "tables/clinical.parquet" in text and "checksum" in text
    # one byte of the signed manifest itself: the signature no longer verifies
    b2 = _copy_bundle(world, "east", tmp_path)
    raw = (b2 / "bundle.json").read_bytes().replace(b'"site": "east"', b'"site": "east" ', 1)
    (b2 / "bundle.json").write_bytes(raw)
    assert "signature does not verify" in _refused(world, b2, capsys)


def test_refuses_an_unsigned_bundle(world, tmp_path, capsys):
    b = _copy_bundle(world, "north", tmp_path)
    (b / "bundle.json.sig").unlink()
    assert "unsigned bundle" in _refused(world, b, capsys)


def test_refuses_an_unregistered_site(world, tmp_path, capsys):
    s = world["sites"]["north"]
    keys = tmp_path / "keys"
    assert _run(["lake", "keygen", "--site", "west", "--keys", str(keys)], capsys)[0] == 0
    code, text = _run(["contribute", str(s["out"]), "--site", "west", "--out", str(tmp_path / "west"),
                       "--schema", str(s["cfg"]), "--keys", str(keys)], capsys)
    assert code == 0, text
    assert "site 'west' is not registered" in _refused(world, tmp_path / "west", capsys)
    # signed by another site's key: does not verify with north's registered key
    b = _copy_bundle(world, "north", tmp_path)
    _resign(b, keys / "west.key")
    assert "signature does not verify" in _refused(world, b, capsys)


def test_refuses_an_identifier_in_a_clinical_column(world, tmp_path, capsys):
    b = _copy_bundle(world, "south", tmp_path)
    c = pd.read_parquet(b / "tables/clinical.parquet")
    c.loc[3, "sex"] = "1961-04-02"  # a birth date typed into a coded column
    c.to_parquet(b / "tables/clinical.parquet")
    _resign(b, world["sites"]["south"]["keys"] / "south.key")  # validly signed: only the scan can catch it
    text = _refused(world, b, capsys)
    assert "identifier scan" in text and "tables/clinical.parquet" in text and "sex" in text
    assert "1961" not in text  # the finding never repeats the value


def test_refuses_an_incompatible_parameter_file_with_the_report(world, tmp_path, capsys):
    from biomarkers.features import extract as fx

    s = world["sites"]["east"]
    out = tmp_path / "out"
    shutil.copytree(s["out"], out, ignore=shutil.ignore_patterns("features"))
    ct = yaml.safe_load((s["dir"] / "params" / "ct.yaml").read_text())
    ct["setting"]["binWidth"] = 10
    (tmp_path / "ct10.yaml").write_text(yaml.safe_dump(ct))
    fx.run_extract(out / "dataset", {"CT": tmp_path / "ct10.yaml", "PT": s["dir"] / "params" / "pet.yaml"},
                   out / "features", executor="serial")
    code, text = _run(["contribute", str(out), "--site", "east", "--out", str(tmp_path / "b"),
                       "--schema", str(s["cfg"]), "--keys", str(s["keys"])], capsys)
    assert code == 0, text
    text = _refused(world, tmp_path / "b", capsys)
    assert "incompatible" in text
    assert "features.params.CT.params.setting.binWidth: lake 25, bundle 10" in text
    assert "features.params.CT.param_hash" in text
    assert "PT" not in text.split("what differs:")[1].split("give --allow")[0]  # only what differs is reported
    # accepted with --allow-schema-change in another lake, the differences recorded in its ledger
    other = tmp_path / "other"
    Lake.init(other).register("east", (s["keys"] / "east.pub").read_bytes())
    Lake(other).add(s["bundle"])
    code, text = _run(["lake", "add", str(other), str(tmp_path / "b"), "--allow-schema-change"], capsys)
    assert code == 0 and "binWidth" in text
    led = Lake(other).ledger()
    assert any("binWidth" in x for x in json.loads(led.iloc[-1]["schema_change"]))


def test_concurrent_adds_land_exactly_once(world, tmp_path, capsys):
    """Two `lake add` processes at once, each adding both bundles (in opposite order)."""
    bundles = []
    for site in ("east", "south"):
        s = world["sites"][site]
        dest = tmp_path / f"{site}-2"
        code, text = _run(["contribute", str(s["out"]), "--site", site, "--out", str(dest), "--schema", str(s["cfg"]),
                           "--keys", str(s["keys"])], capsys)
        assert code == 0, text
        bundles.append(str(dest))
    lk = Lake(world["lake"])
    v0 = lk.version()
    cmd = [sys.executable, "-m", "biomarkers", "lake", "add", str(world["lake"])]
    procs = [subprocess.Popen(cmd + order, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for order in (bundles, bundles[::-1])]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert lk.version() == v0 + 2
    led = lk.ledger()
    ids = [bundle_id(Path(b, "bundle.json").read_bytes()) for b in bundles]
    assert all((led["bundle_id"] == i).sum() == 1 for i in ids)
    wide = lk.read("features_wide")
    for site, bid in zip(("east", "south"), ids):
        ref = _out_table(world, site, "features/features_wide.parquet")
        assert (wide["bundle_id"] == bid).sum() == len(ref) == (wide["site"] == site).sum()
    world["v_concurrent"] = lk.version()


def test_resubmission_supersedes_and_history_keeps_both(world, tmp_path, capsys):
    s = world["sites"]["north"]
    out = tmp_path / "out"
    shutil.copytree(s["out"], out)
    c = pd.read_parquet(out / "clinical/clinical.parquet")
    fixed = c["patient_id"].iloc[0]
    c.loc[0, "age"] = 71.0  # the site corrects one patient's age
    c.to_parquet(out / "clinical/clinical.parquet")
    code, text = _run(["contribute", str(out), "--site", "north", "--out", str(tmp_path / "b2"), "--schema", str(s["cfg"]),
                       "--keys", str(s["keys"])], capsys)
    assert code == 0, text
    lk = Lake(world["lake"])
    before = lk.version()
    code, text = _run(["lake", "add", str(world["lake"]), str(tmp_path / "b2")], capsys)
    assert code == 0 and "supersedes" in text
    v = lk.version()
    assert v == before + 1
    led = lk.ledger()
    north = led[led["site"] == "north"]
    assert len(north) == 2 and north["live"].tolist() == [False, True]
    assert north["lake_version"].tolist() == [1, v]
    now = lk.read("clinical", v)
    then = lk.read("clinical", before)
    assert now.loc[(now["site"] == "north") & (now["patient_id"] == fixed), "age"].item() == 71.0
    old_age = pd.read_parquet(s["out"] / "clinical/clinical.parquet").set_index("patient_id").loc[fixed, "age"]
    assert then.loc[(then["site"] == "north") & (then["patient_id"] == fixed), "age"].item() == old_age
    assert (now["site"] == "north").sum() == len(c)  # superseded rows are not counted twice
    code, text = _run(["lake", "status", str(world["lake"])], capsys)
    assert "superseded" in text and text.count("site north") >= 2
    # a bundle the site made earlier, arriving late, goes to the history and does not replace the newer one
    code, text = _run(["contribute", str(s["out"]), "--site", "north", "--out", str(tmp_path / "stale"),
                       "--schema", str(s["cfg"]), "--keys", str(s["keys"])], capsys)
    assert code == 0, text
    _resign(tmp_path / "stale", s["keys"] / "north.key", edit=lambda d: d.update(created="2001-01-01T00:00:00.000000Z"))
    code, text = _run(["lake", "add", str(world["lake"]), str(tmp_path / "stale")], capsys)
    assert code == 0 and "NOT live" in text
    pd.testing.assert_frame_equal(lk.read("clinical", lk.version()), now)


def test_time_travel_returns_an_earlier_version_exactly(world):
    lk = Lake(world["lake"])
    assert lk.version() > 1
    for name, df in world["v1"].items():
        pd.testing.assert_frame_equal(lk.read(name, 1), df)
    # version 1 is north's first bundle and nothing else
    v1 = world["v1"]["clinical"].drop(columns=["site", "bundle_id"]).sort_values("patient_id").reset_index(drop=True)
    ref = _out_table(world, "north", "clinical/clinical.parquet").sort_values("patient_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(v1, ref, check_dtype=False)
    with pytest.raises(Exception, match="does not exist"):
        lk.read("clinical", lk.version() + 5)


def test_experiment_on_the_lake_finds_the_biomarker_with_combat_by_site(world, tmp_path):
    from biomarkers.modeling import run_experiment
    from biomarkers.tracking import client

    lk = Lake(world["lake"])
    v = world["v_merged"]
    spec = {
        "name": "lake-outcome",
        "input": {"lake": f"{world['lake']}@{v}"},
        "target": {"column": "outcome", "positive": 1},
        "features": {"modalities": ["CT", "PT"], "image_types": ["original"],
                     "feature_classes": ["shape", "firstorder", "glcm", "glszm"]},
        "pipelines": [{"name": "logistic_combat", "harmonize": "combat", "redundancy": 0.9,
                       "select": {"method": "univariate", "k": 8}, "model": {"type": "logistic"}}],
        "validation": {"outer_folds": 4, "inner_folds": 3, "bootstrap": 300, "seed": 0},
        "log_models": False,
    }
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    res = run_experiment(tmp_path / "spec.yaml", tracking_uri=uri)
    m = res.pipelines[0].metrics
    expect = 0
    for site in SITES:  # patients with features and an outcome, from the sites' own tables
        c = _out_table(world, site, "clinical/clinical.parquet")
        imaged = set(_out_table(world, site, "features/features_wide.parquet")["patient_id"])
        expect += int((c["patient_id"].isin(imaged) & c["outcome"].notna()).sum())
    assert m["n_patients"] == expect
    assert m["auc_ci_low"] > 0.5, m
    c = client(uri)
    run = c.get_run(res.parent_run_id)
    assert run.data.params["input.centre_column"] == "site"
    inputs = run.inputs.dataset_inputs
    assert len(inputs) == 1
    ds = inputs[0].dataset
    assert ds.digest == lk.digest(v) and ds.digest.startswith(f"v{v}-")
    assert json.loads(ds.source)["uri"].endswith(f"@{v}") if ds.source.startswith("{") else ds.source.endswith(f"@{v}")
    assert str(world["root"]) not in json.dumps(run.data.params) + ds.source


def test_snapshot_builds_a_release_from_a_lake_version(world, tmp_path, capsys):
    from biomarkers.release import verify_release

    v = world["v_merged"]
    cfg = yaml.safe_load((REPO / "configs" / "release.yaml").read_text())
    cfg.update(name="lake-release", clinical_schema=None, clinical_variables=["age_band", "sex", "site", "outcome"],
               # "*_glcm_Id": the release's identifier scan takes GLCM's inverse difference "Id" for an id
               # column (a release-builder issue, reported); left out so that the snapshot itself is tested
               features={"include": ["original_*"], "exclude": ["*_glcm_Id"], "modalities": None, "rois": None,
                         "key_columns": ["patient_id", "series_uid", "modality", "roi"]},
               privacy={"k": 5, "quasi_identifiers": ["site"], "age_variable": "age", "age_band_years": 20})
    (tmp_path / "release.yaml").write_text(yaml.safe_dump(cfg))
    code, text = _run(["lake", "snapshot", str(world["lake"]), "--version", str(v), "--config", str(tmp_path / "release.yaml"),
                       "--out", str(tmp_path / "releases"), "--no-mlflow"], capsys)
    assert code == 0, text
    folder = tmp_path / "releases" / "lake-release-1.0.0"
    assert verify_release(folder) == []
    feats = pd.read_parquet(folder / "features.parquet")
    clin = pd.read_parquet(folder / "clinical.parquet")
    lk = Lake(world["lake"])
    assert set(clin["site"]) == set(SITES)
    assert set(feats["patient_id"]) == set(lk.read("features_wide", v)["patient_id"]) & set(clin["patient_id"])
    assert f"lake version {v}" in (folder / "README.md").read_text()
