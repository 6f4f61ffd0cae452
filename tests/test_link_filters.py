"""IBSI 2 filtered features end to end: extract (``ibsi: filters:``) -> link -> the modeling data loader.

The wide table keeps its layout (one row per ROI and filter, ``filter`` key column); ``link``
merges the filter rows of each ROI into one row (the feature columns already name their filter),
so the analysis table has one row per patient x series x ROI (series join) or per patient
(patient join), and the modelling loader selects the filtered columns by image type = filter id.
Expected values come from the long table (one row per feature, read by filter id and IBSI code),
an independent path through the tables.
"""

from __future__ import annotations

import re

import pandas as pd
import pytest
import SimpleITK as sitk
from test_clinical_fixtures import pseudonym, write_clinical

from biomarkers.cli import main
from biomarkers.clinical.link import link
from biomarkers.errors import InputError
from biomarkers.features.naming import (FILTER_COLUMN, KEY_COLUMNS, LONG_TABLE, WIDE_TABLE, FeatureName,
                                        merge_filter_rows)

#: the pseudonyms of STS_001..004 (the clinical fixtures' exports hold those patients)
PIDS = [pseudonym(f"STS_00{i}") for i in range(1, 5)]
PARAMS = """setting: {label: 1}
ibsi:
  pyradiomics: false
  families: [stat]
  reseg_range: [-1000, 400]
  filters:
    - {id: 2-mean, filter: mean, settings: {support: 5, boundary: mirror}}
    - {id: 3-log, filter: log, settings: {sigma_mm: 1.5, truncation: 4, boundary: mirror}}
"""


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    """Four patients: the IBSI CT phantom shifted by 0, 15, 30, 45 HU (so every patient's values differ)."""
    from biomarkers.features.extract import Extract
    from biomarkers.features.ibsi_check import data_dir
    from biomarkers.io import write_parquet
    from biomarkers.manifest import COLUMNS

    work = tmp_path_factory.mktemp("link-filters")
    ds = work / "ds"
    src = sitk.ReadImage(str(data_dir() / "ct_phantom_image.nii.gz"))
    arr = sitk.GetArrayFromImage(src).astype("float32")
    base = dict.fromkeys(COLUMNS, "")
    rows = []
    for i, pid in enumerate(PIDS):
        img_rel, msk_rel = f"images/{pid}/ct.nii.gz", f"masks/{pid}/gtv.nii.gz"
        for rel in (img_rel, msk_rel):
            (ds / rel).parent.mkdir(parents=True, exist_ok=True)
        img = sitk.GetImageFromArray(arr + 15.0 * i)
        img.CopyInformation(src)
        sitk.WriteImage(img, str(ds / img_rel))
        (ds / msk_rel).symlink_to(data_dir() / "ct_phantom_mask.nii.gz")
        rows += [
            {**base, "patient_id": pid, "study_uid": f"st-{pid}", "series_uid": f"se-{pid}", "modality": "CT",
             "kind": "image", "path": img_rel, "status": "converted"},
            {**base, "patient_id": pid, "study_uid": f"st-{pid}", "series_uid": f"se-{pid}-roi", "modality": "CT",
             "kind": "mask", "roi": "GTV", "source_series_uid": f"se-{pid}", "image_path": img_rel, "path": msk_rel,
             "status": "converted"},
        ]
    write_parquet(ds / "manifest.parquet", pd.DataFrame(rows))
    params = work / "filters.yaml"
    params.write_text(PARAMS)
    out = work / "features"
    report = Extract(ds, {"*": str(params)}, out, executor="serial").validate().run()
    assert [c.status for c in report.cases] == ["done"] * len(PIDS)
    return pd.read_parquet(out / LONG_TABLE), pd.read_parquet(out / WIDE_TABLE), out


@pytest.fixture()
def clinical():
    return pd.DataFrame({"patient_id": PIDS, "centre": ["a", "a", "b", "b"], "outcome": [0, 1, 0, 1]})


def _expected(long: pd.DataFrame, pid: str, filter_id: str, code: str) -> float:
    sel = long[(long.patient_id == pid) & (long[FILTER_COLUMN] == filter_id) & (long.ibsi_code == code)]
    assert len(sel) == 1
    return float(sel["value"].iloc[0])


def test_the_wide_table_keeps_one_row_per_roi_and_filter(extracted):
    _, wide, _ = extracted
    assert list(wide.columns[: len(KEY_COLUMNS) + 1]) == KEY_COLUMNS + [FILTER_COLUMN]
    assert len(wide) == len(PIDS) * 3  # '' (unfiltered statistics), 2-mean, 3-log
    assert sorted(wide[FILTER_COLUMN].unique()) == ["", "2-mean", "3-log"]


def test_series_join_has_one_row_per_roi_with_every_filter(extracted, clinical):
    long, wide, _ = extracted
    table, rep = link(wide, clinical, join="series")
    assert len(table) == len(PIDS) and table["patient_id"].tolist() == sorted(PIDS)
    assert FILTER_COLUMN not in table.columns
    assert rep.n_patients_linked == len(PIDS)
    for pid in PIDS:
        row = table.set_index("patient_id").loc[pid]
        assert row["roi"] == "GTV"
        assert row["original_ibsistat_mean"] == _expected(long, pid, "", "stat_mean")
        assert row["2-mean_ibsistat_mean"] == _expected(long, pid, "2-mean", "stat_mean")
        assert row["3-log_ibsistat_p90"] == _expected(long, pid, "3-log", "stat_p90")
    # the 15 HU shifts reach the unfiltered and mean-filtered means (the rows are not mixed up)
    means = table.set_index("patient_id")["2-mean_ibsistat_mean"]
    assert means[PIDS[3]] - means[PIDS[0]] == pytest.approx(45.0, abs=1.0)


def test_patient_join_prefixes_the_modality_and_parses(extracted, clinical):
    long, wide, _ = extracted
    table, _ = link(wide, clinical, join="patient")
    assert len(table) == len(PIDS) and table["patient_id"].is_unique
    col = "CT_3-log_ibsistat_mean"
    assert FeatureName.parse(col) == FeatureName("3-log", "ibsistat", "mean", "CT")
    assert table.set_index("patient_id").loc[PIDS[1], col] == _expected(long, PIDS[1], "3-log", "stat_mean")
    n_feat = sum(FeatureName.parse(c) is not None for c in table.columns)
    assert n_feat == 3 * 18  # 18 statistics of the image and of each of the 2 response maps


def test_the_modeling_loader_selects_filtered_columns_by_filter_id(extracted, clinical):
    from biomarkers.modeling.data import build_dataset
    from biomarkers.modeling.spec import ExperimentSpec

    long, wide, _ = extracted
    table, _ = link(wide, clinical, join="patient")
    spec = ExperimentSpec.model_validate({
        "name": "filters", "input": {"table": "unused.parquet", "centre_column": "centre"},
        "features": {"image_types": ["3-log"]},
        "pipelines": [{"name": "lr"}],
    })
    ds = build_dataset(table, spec)
    assert len(ds.feature_columns) == 18
    assert all(c.startswith("CT_3-log_ibsistat_") for c in ds.feature_columns)
    outcome = clinical.set_index("patient_id")["outcome"]
    assert list(ds.y) == [outcome[pid] for pid in ds.ids]
    i = ds.ids.tolist().index(PIDS[2])
    assert ds.X.loc[i, "CT_3-log_ibsistat_max"] == _expected(long, PIDS[2], "3-log", "stat_max")


def test_a_column_named_by_two_filter_rows_is_refused(extracted, clinical):
    _, wide, _ = extracted
    bad = wide.copy()
    i = bad.index[(bad.patient_id == PIDS[2]) & (bad[FILTER_COLUMN] == "2-mean")][0]
    bad.loc[i, "3-log_ibsistat_mean"] = 1.0  # the 2-mean row now also holds a 3-log value
    with pytest.raises(InputError, match=rf"'3-log_ibsistat_mean' has values in 2 filter rows of {re.escape(PIDS[2])}/st-"):
        link(bad, clinical, join="series")
    dup = pd.concat([wide, wide.iloc[[0]]], ignore_index=True)
    with pytest.raises(InputError, match=r"repeat a patient x series x ROI x filter"):
        merge_filter_rows(dup)


def test_an_roi_missing_a_filter_row_is_refused(extracted, clinical):
    """A wide table that lost one ROI's row of a filter (rows dropped by hand) would link with that
    filter's columns empty for the ROI: refused, naming the ROI, the filter and one of its columns."""
    _, wide, _ = extracted
    bad = wide[~((wide.patient_id == PIDS[1]) & (wide[FILTER_COLUMN] == "3-log"))]
    with pytest.raises(InputError, match=rf"{re.escape(PIDS[1])}/st-.*/GTV has no row of filter '3-log' "
                                         r"\(other CT ROIs have it, column '3-log_ibsistat_"):
        link(bad, clinical, join="series")
    # no ROI with that filter: consistent, merged (its columns stay empty, as in the table)
    merged = merge_filter_rows(wide[wide[FILTER_COLUMN] != "3-log"].reset_index(drop=True))
    assert len(merged) == len(PIDS) and merged["2-mean_ibsistat_mean"].notna().all()


def test_cli_link_of_a_filtered_features_folder(extracted, tmp_path):
    """``biomarkers link`` on the FEATURES folder: clinical exports validated and pseudonymised, one row per patient."""
    long, _, features = extracted
    p = write_clinical(tmp_path / "in")
    out = tmp_path / "out" / "analysis.parquet"
    rc = main(["link", "--features", str(features), "--clinical", str(p["a"]), str(p["b"]), "--clinical", str(p["c"]),
               "--schema", str(p["schema"]), "--out", str(out), "--join", "patient"])
    assert rc == 0
    t = pd.read_parquet(out).set_index("patient_id")
    assert set(PIDS) <= set(t.index) and t.index.is_unique
    for pid in PIDS:
        assert t.loc[pid, "CT_2-mean_ibsistat_median"] == _expected(long, pid, "2-mean", "stat_median")
        assert t.loc[pid, "CT_original_ibsistat_mean"] == _expected(long, pid, "", "stat_mean")


def test_tables_without_filters_are_unchanged():
    wide = pd.DataFrame({**{k: ["x"] for k in KEY_COLUMNS}, "original_firstorder_Mean": [1.0]})
    assert merge_filter_rows(wide) is wide
