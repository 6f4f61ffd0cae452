"""IBSI 1 digital phantom: every reference value, family by family (reference table from IBSI)."""

from __future__ import annotations

import pandas as pd
import pytest

from biomarkers.features.ibsi.reference import compare, load_reference, run_dataset

REF = "ibsi1_reference"


@pytest.fixture(scope="module")
def result(shared_data):
    values = run_dataset("digital_phantom", data_dir=shared_data)
    return compare(values, "digital_phantom", reference_dir=shared_data / REF)


def _families():
    import os
    from pathlib import Path

    root = Path(os.environ.get("BIOMARKERS_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    return sorted(load_reference("digital_phantom", root / REF)["family"].unique())


@pytest.mark.parametrize("family", _families())
def test_family_matches_reference(result: pd.DataFrame, family: str):
    rows = result[(result.family == family) & (result.status != "no reference")]
    assert len(rows) > 0
    bad = rows[rows.status != "pass"]
    assert bad.empty, bad[["tag", "value", "reference", "tolerance", "status"]].to_string()


def test_all_482_reference_values_pass(result: pd.DataFrame):
    counts = result.status.value_counts().to_dict()
    assert counts.get("pass", 0) == 482, counts
    # the 5 rows without a reference (OMBB, MVEE densities, ...) are the only ones not checked
    assert counts.get("no reference", 0) == 5
