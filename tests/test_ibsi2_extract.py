"""IBSI 2 filters through the extraction (``ibsi: filters:``) and ``biomarkers ibsi --standard 2``.

The shipped phase 2 parameter file of configuration A runs like a cohort (Extract on a one-item
dataset of the CT phantom); its long table's values, read back by the ``filter`` key column and
IBSI codes, pass the IBSI 2 consensus values. Configuration B goes through the same function
(:func:`~biomarkers.features.filters.features.filter_values`) in test_ibsi2_phase2.py.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from biomarkers.cli import main
from biomarkers.features.filters.check import run_phase2_extract
from biomarkers.features.naming import FILTER_COLUMN, KEY_COLUMNS, LONG_TABLE, WIDE_TABLE, long_columns


@pytest.fixture(scope="module")
def phase2_a(tmp_path_factory):
    work = tmp_path_factory.mktemp("ibsi2-extract")
    df, longs = run_phase2_extract(("A",), workdir=work)
    return df, longs["A"], work


def test_phase2_a_values_from_the_long_table_pass(phase2_a):
    df, _long, _ = phase2_a
    assert len(df) == 9 * 18
    assert (df.status == "pass").all(), df[df.status != "pass"].to_string()


def test_long_table_has_the_filter_key_column_and_ibsi_codes(phase2_a):
    _, long, _ = phase2_a
    assert list(long.columns) == long_columns(filtered=True)
    assert long.columns.get_loc(FILTER_COLUMN) == len(KEY_COLUMNS)  # right after the key columns
    assert sorted(long[FILTER_COLUMN].unique()) == ["1-none", "2-mean", "3-log", "4-laws", "5-gabor", "6-db3",
                                                    "7-db3", "8-simoncelli", "9-simoncelli"]
    assert (long["image_type"] == long[FILTER_COLUMN]).all()
    assert (long["feature_class"] == "ibsistat").all() and long["ibsi_code"].str.startswith("stat_").all()
    assert (long.groupby(FILTER_COLUMN).size() == 18).all()
    assert (long["source"] == "biomarkers.filters").all()


def test_wide_table_has_one_row_per_filter(phase2_a):
    _, _, work = phase2_a
    wide = pd.read_parquet(work / "ibsi2_A" / "features" / WIDE_TABLE)
    assert list(wide.columns[: len(KEY_COLUMNS) + 1]) == KEY_COLUMNS + [FILTER_COLUMN]
    assert len(wide) == 9 and wide[FILTER_COLUMN].is_unique
    row = wide.set_index(FILTER_COLUMN).loc["3-log"]
    assert row["3-log_ibsistat_mean"] == pytest.approx(-2.44, abs=0.12)  # IBSI 2 consensus 3.A mean
    assert pd.isna(row["2-mean_ibsistat_mean"])  # another filter's feature is not in this row


def test_without_filters_the_tables_are_unchanged(tmp_path):
    """A parameter file without ``filters:`` writes no filter column (outputs as before)."""
    from biomarkers.features.extract import Extract
    from biomarkers.features.ibsi_check import _phantom_dataset

    ds = _phantom_dataset(tmp_path / "ds", "config_A", "ct_phantom_image.nii.gz", "ct_phantom_mask.nii.gz")
    params = tmp_path / "stat.yaml"
    params.write_text("setting: {label: 1}\nibsi: {pyradiomics: false, families: [stat], reseg_range: [-1000, 400]}\n")
    out = tmp_path / "features"
    report = Extract(ds, {"*": str(params)}, out, executor="serial").validate().run()
    assert [c.status for c in report.cases] == ["done"]
    long = pd.read_parquet(out / LONG_TABLE)
    wide = pd.read_parquet(out / WIDE_TABLE)
    assert list(long.columns) == long_columns() and FILTER_COLUMN not in wide.columns
    # the unfiltered image's IBSI statistics equal filter set 1 (no filter) of the filtered run
    assert long.set_index("ibsi_code").loc["stat_mean", "value"] == pytest.approx(-47, abs=4.6)


def test_bad_filter_entry_is_refused_at_load_naming_file_and_key(tmp_path):
    from biomarkers.errors import ConfigError
    from biomarkers.features.params import load_params

    p = tmp_path / "bad.yaml"
    p.write_text("ibsi:\n  filters:\n    - {id: log, filter: log, settings: {sigma_mm: 1, boundary: reflect}}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: ibsi.filters\[0\]: boundary"):
        load_params(p)


def test_cli_standard_2(tmp_path, capsys):
    out = tmp_path / "ibsi2.json"
    rc = main(["ibsi", "--standard", "2", "--case", "1.a.3", "--case", "8.a.2", "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "TOTAL phase 1       pass 2  deviating 0  of 2 reference maps" in text
    assert "pass       1.a.3" in text and "pass       8.a.2" in text
    data = json.loads(out.read_text())
    assert data["standard"] == 2 and [r["status"] for r in data["rows"]] == ["pass", "pass"]
    assert main(["ibsi", "--standard", "2", "--case", "nope"]) == 2
