"""Experiments can read a partner release folder instead of an analysis table."""

from __future__ import annotations

import pandas as pd
import pytest
from test_release_build import build, inputs  # noqa: F401 - pytest fixture

from biomarkers.errors import InputError
from biomarkers.release import read_table


def test_release_folder_is_verified_and_joined_per_patient(inputs, tmp_path):  # noqa: F811
    res = build(inputs, tmp_path / "releases")
    folder = res.path
    feats = pd.read_parquet(folder / "features.parquet")
    clin = pd.read_parquet(folder / "clinical.parquet")

    table = read_table(folder)
    # one row per patient, clinical variables as released, features prefixed by modality
    assert table["patient_id"].is_unique
    assert set(table["patient_id"]) == set(feats["patient_id"]) & set(clin["patient_id"])
    for col in clin.columns:
        assert col in table.columns
    pid = table["patient_id"].iloc[0]
    row = feats[(feats["patient_id"] == pid) & (feats["modality"] == "CT")].iloc[0]
    feature = next(c for c in feats.columns if c.startswith("original_"))
    assert table.loc[table["patient_id"] == pid, f"CT_{feature}"].iloc[0] == pytest.approx(row[feature])

    # a tampered release is refused with the file named
    (folder / "features.parquet").chmod(0o644)
    feats.iloc[:-1].to_parquet(folder / "features.parquet", index=False)
    with pytest.raises(InputError, match="features.parquet: checksum mismatch"):
        read_table(folder)
    with pytest.raises(InputError, match="not a table file nor a release folder"):
        read_table(tmp_path)
