"""Extraction on the six shared STS patients (CT, MR_T1, PET): reproducible, parallel, incremental;
failure isolation; parameter files. Datasets are small ingest-style folders (manifest + links
to the IBSI team's reference NIfTI conversions in ../shared/data/sts/nifti)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from biomarkers.cli import main
from biomarkers.errors import ConfigError
from biomarkers.features import Extract, parse_params, run_extract
from biomarkers.io import write_parquet
from biomarkers.manifest import COLUMNS

from conftest import REPO, STS_PATIENTS

CFG = REPO / "configs" / "radiomics"
PARAMS = [f"CT={CFG / 'ct.yaml'}", f"MR={CFG / 'mr.yaml'}", f"PT={CFG / 'pet.yaml'}"]
MODS = {"CT": "CT", "MR_T1": "MR", "PET": "PT"}


def make_dataset(root: Path, cases: list[tuple[str, str, Path, Path]]) -> Path:
    """An ingest-style folder: manifest.parquet + images/ and masks/ (symlinks to the given files).

    cases: (patient, manifest modality, image file, mask file).
    """
    rows = []
    for patient, mod, img, msk in cases:
        irel, mrel = f"images/{patient}/{mod}.nii.gz", f"masks/{patient}/{mod}__GTV.nii.gz"
        for rel, src in ((irel, img), (mrel, msk)):
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).symlink_to(src)
        base = dict.fromkeys(COLUMNS, "")
        rows.append({**base, "patient_id": patient, "study_uid": f"st-{patient}", "series_uid": f"se-{patient}-{mod}",
                     "modality": mod, "kind": "image", "path": irel, "status": "converted"})
        rows.append({**base, "patient_id": patient, "study_uid": f"st-{patient}", "series_uid": f"rs-{patient}-{mod}",
                     "modality": mod, "kind": "mask", "roi": "GTV", "source_series_uid": f"se-{patient}-{mod}",
                     "image_path": irel, "path": mrel, "status": "converted"})
    write_parquet(root / "manifest.parquet", pd.DataFrame(rows))
    return root


@pytest.fixture(scope="module")
def sts_dataset(tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp("sts") / "dataset"
    cases = [
        (p, MODS[m], shared_data / "sts/nifti" / p / f"{m}_image.nii.gz", shared_data / "sts/nifti" / p / f"{m}_mask.nii.gz")
        for p in STS_PATIENTS for m in MODS
    ]
    return make_dataset(root, cases)


@pytest.fixture(scope="module")
def sts_reference(sts_dataset, tmp_path_factory):
    """Serial extraction of the reference NIfTI dataset: (folder, report, long table, wide table)."""
    out = tmp_path_factory.mktemp("sts_features") / "serial"
    r = run_extract(sts_dataset, PARAMS, out, executor="serial")
    return out, r, pd.read_parquet(out / "features_long.parquet"), pd.read_parquet(out / "features_wide.parquet")


@pytest.mark.slow
def test_sts_from_own_ingest_equals_reference_nifti(shared_data, sts_reference, tmp_path):
    """Ingest the STS DICOM with biomarkers, extract, and compare with the reference NIfTI extraction."""
    import os

    from biomarkers.dicom.ingest import IngestSettings, run_ingest
    from biomarkers.dicom.masks import MaskSettings
    from biomarkers.geometry import read_nifti
    from biomarkers.manifest import read_manifest

    src, ds = tmp_path / "dicom", tmp_path / "ingested"
    sts = shared_data / "sts" / "dicom"
    for root, _dirs, names in os.walk(sts):
        rel = Path(root).relative_to(sts)
        (src / rel).mkdir(parents=True, exist_ok=True)
        for n in names:
            (src / rel / n).symlink_to(Path(root) / n)
    ing = run_ingest(src, ds, IngestSettings(masks=MaskSettings(rois={"GTV_Mass": []})), executor="serial")
    assert ing.counts()["failed"] == 0
    r = run_extract(ds, PARAMS, tmp_path / "features", executor="local:2")
    assert r.counts() == {"done": 18, "skipped": 0, "failed": 0}
    wide_i = pd.read_parquet(tmp_path / "features" / "features_wide.parquet")
    wide_r = sts_reference[3]
    man = read_manifest(ds)
    refs = {(p, MODS[m]): (read_nifti(shared_data / "sts/nifti" / p / f"{m}_image.nii.gz"),
                           read_nifti(shared_data / "sts/nifti" / p / f"{m}_mask.nii.gz"))
            for p in STS_PATIENTS for m in MODS}
    feats = [c for c in wide_r.columns if c.startswith("original_")]
    matched = set()
    for _, row in wide_i.iterrows():
        mrow = man[(man["kind"] == "mask") & (man["source_series_uid"] == row["series_uid"])].iloc[0]
        img, grid = read_nifti(ds / mrow["image_path"])
        msk, _ = read_nifti(ds / mrow["path"])
        (key,) = [k for k, ((_a, g), _m) in refs.items() if k[1] == row["modality"] and g.mismatch(grid) is None]
        matched.add(key)
        (ref_img, _), (ref_msk, _) = refs[key]
        assert np.array_equal(msk > 0, ref_msk > 0), key  # the same mask voxels
        ref_row = wide_r[(wide_r.patient_id == key[0]) & (wide_r.modality == key[1])].iloc[0]
        a, b = row[feats].astype(float), ref_row[feats].astype(float)
        if np.array_equal(img.astype(np.float64), ref_img.astype(np.float64)):
            # same voxels (CT, MR): the same numbers, bit for bit
            assert (a.values == b.values).all(), (key, a[a.values != b.values])
        else:
            # PET: SUVs differ in the last float32 digit between the two conversions (slope x value)
            assert np.abs(img.astype(np.float64) - ref_img.astype(np.float64)).max() < 1e-5
            assert np.allclose(a.values, b.values, rtol=1e-6, atol=0), key
            tex = [c for c in feats if c.split("_")[1] in ("glcm", "glrlm", "glszm", "gldm", "ngtdm", "shape")]
            assert (a[tex].values == b[tex].values).all(), key  # same grey levels: identical texture
    assert len(matched) == 18


@pytest.mark.slow
def test_sts_reproducible_parallel_incremental(sts_dataset, sts_reference, shared_data, tmp_path):
    out1, r1, long1, wide1 = sts_reference
    out2 = tmp_path / "parallel"
    assert r1.counts() == {"done": 18, "skipped": 0, "failed": 0}
    assert r1.n_computed() == 18
    assert list(long1.columns[:10]) == ["patient_id", "study_uid", "series_uid", "modality", "roi", "image_type",
                                        "feature_class", "feature", "ibsi_code", "value"]
    assert len(wide1) == 18 and list(wide1.columns[:5]) == ["patient_id", "study_uid", "series_uid", "modality", "roi"]
    assert wide1.shape[1] == 5 + 107  # pyradiomics' default features, Original image
    assert "original_firstorder_Mean" in wide1.columns and "original_glcm_Contrast" in wide1.columns
    assert len(list((out1 / "items").glob("*.parquet"))) == 18

    # values checked by hand on one case: volume by voxel counting and mean CT number in the ROI
    img = nib.load(shared_data / "sts/nifti/STS_002/CT_image.nii.gz")
    msk = np.asarray(nib.load(shared_data / "sts/nifti/STS_002/CT_mask.nii.gz").dataobj) > 0
    arr = np.asarray(img.dataobj, dtype=np.float64)
    row = wide1[(wide1.patient_id == "STS_002") & (wide1.modality == "CT")].iloc[0]
    assert row["original_shape_VoxelVolume"] == pytest.approx(msk.sum() * float(np.prod(img.header.get_zooms()[:3])), rel=1e-6)
    assert row["original_firstorder_Mean"] == pytest.approx(arr[msk].mean(), rel=1e-9)
    # MR: z-score over the whole image x 100 (mr.yaml normalize: true, normalizeScale: 100), by hand
    mr = np.asarray(nib.load(shared_data / "sts/nifti/STS_002/MR_T1_image.nii.gz").dataobj, dtype=np.float64)
    mr_roi = np.asarray(nib.load(shared_data / "sts/nifti/STS_002/MR_T1_mask.nii.gz").dataobj) > 0
    z = (mr - mr.mean()) / mr.std(ddof=1) * 100
    mrow = wide1[(wide1.patient_id == "STS_002") & (wide1.modality == "MR")].iloc[0]
    assert mrow["original_firstorder_Mean"] == pytest.approx(z[mr_roi].mean(), rel=1e-4)
    kurt = long1[(long1.feature == "Kurtosis") & (long1.patient_id == "STS_002") & (long1.modality == "CT")].iloc[0]
    assert kurt["ibsi_code"] == "stat_kurt" and kurt["ibsi_value"] == pytest.approx(kurt["value"] - 3)

    prov = json.loads((out1 / "provenance.json").read_text())
    assert {"pyradiomics", "SimpleITK", "numpy"} <= set(prov["versions"])
    assert {p["modality"] for p in prov["params"]} == {"CT", "MR", "PT"}
    assert all(len(v["image_sha256"]) == 64 and len(v["mask_sha256"]) == 64 for v in prov["items"].values())

    # parallel (2 worker processes) gives identical tables
    r2 = run_extract(sts_dataset, PARAMS, out2, executor="local:2")
    assert r2.counts()["done"] == 18 and r2.n_computed() == 18
    pd.testing.assert_frame_equal(pd.read_parquet(out2 / "features_long.parquet"), long1)
    pd.testing.assert_frame_equal(pd.read_parquet(out2 / "features_wide.parquet"), wide1)

    # a rerun extracts nothing and writes the same tables
    r3 = run_extract(sts_dataset, PARAMS, out1, executor="serial")
    assert r3.n_computed() == 0 and sum(c.cached for c in r3.cases) == 18
    pd.testing.assert_frame_equal(pd.read_parquet(out1 / "features_long.parquet"), long1)

    # changing one patient's mask re-extracts only that patient's item
    link = sts_dataset / "masks/STS_002/CT__GTV.nii.gz"
    m = nib.load(link)
    data = np.asarray(m.dataobj).copy()
    edge = np.argwhere(data > 0)[0]
    data[tuple(edge)] = 0
    link.unlink()
    nib.save(nib.Nifti1Image(data, m.affine, m.header), link)
    r4 = run_extract(sts_dataset, PARAMS, out1, executor="serial")
    recomputed = [c.case for c in r4.cases if c.status == "done" and not c.cached]
    assert recomputed == ["STS_002/CT/se-STS_002-CT/GTV/ct"]
    assert sum(c.cached for c in r4.cases) == 17
    assert r4.extra["stale_item_files"] == 1  # the old STS_002 CT item: kept on disk, not in the tables
    wide4 = pd.read_parquet(out1 / "features_wide.parquet")
    assert len(wide4) == 18
    new = wide4[(wide4.patient_id == "STS_002") & (wide4.modality == "CT")].iloc[0]
    voxel_ml = float(np.prod(m.header.get_zooms()[:3]))
    assert new["original_shape_VoxelVolume"] == pytest.approx(row["original_shape_VoxelVolume"] - voxel_ml)
    others = wide4[~((wide4.patient_id == "STS_002") & (wide4.modality == "CT"))].reset_index(drop=True)
    pd.testing.assert_frame_equal(others, wide1[~((wide1.patient_id == "STS_002") & (wide1.modality == "CT"))].reset_index(drop=True))

    # a changed parameter file recomputes exactly the items it applies to (PET)
    pet2 = tmp_path / "pet2.yaml"
    pet2.write_text((CFG / "pet.yaml").read_text().replace("binWidth: 0.25", "binWidth: 0.5"))
    r5 = Extract(sts_dataset, [f"CT={CFG / 'ct.yaml'}", f"MR={CFG / 'mr.yaml'}", f"PT={pet2}"], out1).validate().plan(dry_run=True)
    assert len(r5.todo) == 6 and {i.modality for i in r5.todo} == {"PT"}


def test_pet_bin_width_default_degenerates(shared_data):
    """pyradiomics' default bin width (25) leaves one grey level on SUV images; pet.yaml does not."""
    import SimpleITK as sitk

    from biomarkers.features.items import compute_rows
    from biomarkers.features.params import load_params

    img = sitk.ReadImage(str(shared_data / "sts/nifti/STS_003/PET_image.nii.gz"))
    msk = sitk.ReadImage(str(shared_data / "sts/nifti/STS_003/PET_mask.nii.gz"))
    suv = sitk.GetArrayViewFromImage(img)[sitk.GetArrayViewFromImage(msk) > 0]
    assert np.floor(suv.max() / 25) == np.floor(suv.min() / 25)  # all SUVs in one bin of width 25

    default = {"setting": {"label": 1}, "featureClass": {"firstorder": ["Uniformity"], "glcm": ["JointEntropy"]}}
    rows, _ = compute_rows(img, msk, default, 1)
    vals = {r["feature"]: r["value"] for r in rows}
    assert vals["Uniformity"] == pytest.approx(1.0) and vals["JointEntropy"] == pytest.approx(0.0, abs=1e-12)

    pet = load_params(CFG / "pet.yaml").params
    rows, _ = compute_rows(img, msk, pet, 1)
    vals = {(r["feature_class"], r["feature"]): r["value"] for r in rows}
    n_levels = len(np.unique(np.floor(suv / 0.25)))
    assert n_levels >= 10
    assert vals[("firstorder", "Uniformity")] < 0.3 and vals[("glcm", "JointEntropy")] > 3


def _write_mask(path: Path, like: Path, fn) -> Path:
    ref = nib.load(like)
    data = fn(np.zeros(ref.shape, dtype=np.uint8))
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, ref.affine, ref.header), path)
    return path


def test_failure_isolation_and_retry(shared_data, tmp_path):
    img = shared_data / "sts/nifti/STS_003/PET_image.nii.gz"
    good = shared_data / "sts/nifti/STS_003/PET_mask.nii.gz"
    src = tmp_path / "src"
    empty = _write_mask(src / "empty.nii.gz", good, lambda a: a)

    def one(a):
        a[10, 10, 10] = 1
        return a

    def line(a):
        a[10, 10, 10:20] = 1  # a 1-D ROI: pyradiomics refuses it (minimumROIDimensions 2)
        return a

    onevox = _write_mask(src / "one.nii.gz", good, one)
    linear = _write_mask(src / "line.nii.gz", good, line)
    ref = nib.load(good)
    shifted_aff = ref.affine.copy()
    shifted_aff[:3, 3] += 2.0
    shifted = src / "shifted.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(ref.dataobj), shifted_aff), shifted)
    cases = [("P1", "PT", img, good), ("P2", "PT", img, empty), ("P3", "PT", img, onevox),
             ("P4", "PT", img, shifted), ("P5", "PT", img, linear)]
    ds = make_dataset(tmp_path / "ds", cases)
    out = tmp_path / "features"
    r = run_extract(ds, CFG / "pet.yaml", out, executor="serial")
    by = {c.case.split("/")[0]: c for c in r.cases}
    assert by["P1"].status == "done"
    assert by["P2"].status == "failed" and "empty mask: empty.nii.gz has no voxel with label 1" in by["P2"].reason
    assert by["P3"].status == "failed" and "one-voxel ROI" in by["P3"].reason
    assert by["P4"].status == "failed" and "geometry mismatch" in by["P4"].reason and "origin" in by["P4"].reason
    assert by["P5"].status == "failed" and "pyradiomics failed" in by["P5"].reason
    wide = pd.read_parquet(out / "features_wide.parquet")
    assert wide["patient_id"].tolist() == ["P1"]
    report = json.loads((out / "report.json").read_text())
    assert report["counts"] == {"done": 1, "skipped": 0, "failed": 4}
    # a rerun keeps the good item and retries the failed ones
    r2 = run_extract(ds, CFG / "pet.yaml", out, executor="serial")
    assert r2.n_computed() == 0 and r2.counts()["failed"] == 4 and sum(c.cached for c in r2.cases) == 1


def test_params_parsing_and_errors(tmp_path, sts_dataset):
    p = parse_params(PARAMS)
    assert p.for_modality("PT").name == "pet" and p.for_modality("MR").name == "mr"
    assert p.for_modality("US") is None
    p2 = parse_params({"CT": CFG / "ct.yaml", "default": CFG / "mr.yaml"})
    assert p2.for_modality("PET").name == "mr"
    with pytest.raises(ConfigError, match="already given"):
        parse_params([f"CT={CFG / 'ct.yaml'}", f"CT={CFG / 'pet.yaml'}"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("setting:\n  binWidth: abc\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        parse_params(bad)
    bad.write_text("settings:\n  binWidth: 25\n")
    with pytest.raises(ConfigError, match="bad.yaml: unknown top-level key"):
        parse_params(bad)
    # a modality without a parameter file is skipped with its reason
    plan = Extract(sts_dataset, [f"CT={CFG / 'ct.yaml'}"], tmp_path / "f").validate().plan(dry_run=True)
    assert len(plan.items) == 6 and len(plan.problems) == 12
    assert all(p.status == "skipped" and "no parameter file for modality" in p.reason for p in plan.problems)
    assert not (tmp_path / "f").exists()  # dry run writes nothing


def test_cli_extract_dry_run_and_errors(sts_dataset, tmp_path, capsys):
    out = tmp_path / "features"
    rc = main(["extract", str(sts_dataset), "--params", f"PT={CFG / 'pet.yaml'}", "--out", str(out), "--dry-run"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "6 items (6 to extract, 0 cached), 12 skipped" in text
    assert not out.exists()
    rc = main(["extract", str(sts_dataset), "--params", f"PET={CFG / 'pet.yaml'}", "--out", str(out), "--executor", "serial"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "extract: 6 done (6 computed), 0 skipped, 0 failed" not in text  # the 12 CT/MR items are skipped
    assert "6 done (6 computed), 12 skipped, 0 failed" in text and "(6 rows, 107 features)" in text
    assert main(["extract", str(tmp_path / "nope"), "--params", str(CFG / "pet.yaml"), "--out", str(out)]) == 2
    assert "not an ingest output" in capsys.readouterr().err


def test_dask_executor_same_values(shared_data, tmp_path):
    """The dask.distributed path (a real local scheduler and worker process) gives the same table."""
    from distributed import LocalCluster

    cases = [("P1", "PT", shared_data / "sts/nifti/STS_003/PET_image.nii.gz", shared_data / "sts/nifti/STS_003/PET_mask.nii.gz"),
             ("P2", "PT", shared_data / "sts/nifti/STS_002/PET_image.nii.gz", shared_data / "sts/nifti/STS_002/PET_mask.nii.gz")]
    ds = make_dataset(tmp_path / "ds", cases)
    serial = run_extract(ds, CFG / "pet.yaml", tmp_path / "serial", executor="serial")
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        rd = run_extract(ds, CFG / "pet.yaml", tmp_path / "dask", executor=cluster.scheduler_address.replace("tcp://", "dask://"))
    assert serial.counts()["done"] == 2 and rd.counts()["done"] == 2 and rd.n_computed() == 2
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "dask/features_long.parquet"),
                                  pd.read_parquet(tmp_path / "serial/features_long.parquet"))
    shutil.rmtree(tmp_path / "dask")


def test_filtered_image_types_naming(shared_data, tmp_path):
    """LoG and Wavelet features keep pyradiomics' names in the wide table; the long table splits them."""
    import yaml

    pet = yaml.safe_load((CFG / "pet.yaml").read_text())
    pet["imageType"] = {"Original": {}, "LoG": {"sigma": [2.0]}, "Wavelet": {}}
    pet["featureClass"] = {"firstorder": ["Mean", "Kurtosis"], "glcm": ["Contrast"]}
    f = tmp_path / "pet_filters.yaml"
    f.write_text(yaml.safe_dump(pet))
    ds = make_dataset(tmp_path / "ds", [("P1", "PT", shared_data / "sts/nifti/STS_003/PET_image.nii.gz",
                                          shared_data / "sts/nifti/STS_003/PET_mask.nii.gz")])
    r = run_extract(ds, f, tmp_path / "features", executor="serial")
    assert r.counts()["done"] == 1
    wide = pd.read_parquet(tmp_path / "features" / "features_wide.parquet")
    long = pd.read_parquet(tmp_path / "features" / "features_long.parquet")
    assert {"original_firstorder_Mean", "log-sigma-2-0-mm-3D_firstorder_Mean", "wavelet-LLH_glcm_Contrast",
            "wavelet-HHH_firstorder_Kurtosis"} <= set(wide.columns)
    assert wide.shape[1] == 5 + 3 * (1 + 1 + 8)  # 3 features x (original + LoG + 8 wavelet bands)
    k = long[(long.image_type == "wavelet-LLH") & (long.feature == "Kurtosis")].iloc[0]
    assert k["feature_class"] == "firstorder" and k["ibsi_code"] == "stat_kurt"
    assert k["ibsi_value"] == pytest.approx(k["value"] - 3)


def test_interrupted_run_resumes(sts_dataset, tmp_path):
    """A run killed after two items keeps their files; the next run extracts only the rest."""
    from biomarkers.executors import SerialExecutor

    class Crash(SerialExecutor):
        def map_unordered(self, func, items):
            for i, o in enumerate(super().map_unordered(func, items)):
                if i == 2:
                    raise KeyboardInterrupt("simulated crash")
                yield o

    out = tmp_path / "features"
    with pytest.raises(KeyboardInterrupt):
        run_extract(sts_dataset, f"PT={CFG / 'pet.yaml'}", out, executor=Crash())
    assert len(list((out / "items").glob("*.parquet"))) == 3  # the third finished before the crash
    assert not list((out / "items").glob(".*"))  # no temporary files left behind
    assert not (out / "features_wide.parquet").exists()
    r = run_extract(sts_dataset, f"PT={CFG / 'pet.yaml'}", out, executor="serial")
    assert r.n_computed() == 3 and sum(c.cached for c in r.cases) == 3
    assert len(pd.read_parquet(out / "features_wide.parquet")) == 6
