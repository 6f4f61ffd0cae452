"""Feature tables: the wide pivot against a plain loop, and incremental long-table assembly
equal to reading every item file."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from biomarkers.features.items import Item, write_item
from biomarkers.features.naming import KEY_COLUMNS, LONG_COLUMNS, PROVENANCE_COLUMNS
from biomarkers.features.tables import long_table, wide_table, write_tables


def _rows(key: str, patient: str, roi: str, features: list[tuple[str, str, str, float]]) -> list[dict]:
    return [
        {"patient_id": patient, "study_uid": "1.2.3", "series_uid": f"1.2.3.{patient}", "modality": "CT", "roi": roi,
         "image_type": a, "feature_class": b, "feature": c, "ibsi_code": "", "value": v, "ibsi_value": float("nan"),
         "source": "pyradiomics", "params_name": "ct", "params_hash": "h", "image_hash": "i", "mask_hash": "m",
         "item_key": key}
        for a, b, c, v in features
    ]


def _item(tmp_path, key: str, patient: str, roi: str, features) -> Item:
    path = tmp_path / "items" / f"{key}.parquet"
    path.parent.mkdir(exist_ok=True)
    write_item(path, _rows(key, patient, roi, features))
    return Item(key=key, patient_id=patient, study_uid="1.2.3", series_uid=f"1.2.3.{patient}", modality="CT", roi=roi,
                image_path="", mask_path="", params_name="ct", params={}, params_hash="h", image_hash="i",
                mask_hash="m", out_path=str(path))


def _reference_wide(long: pd.DataFrame) -> dict:
    """{row key: {column: value}} with a plain loop: the first value of a (row, column) wins."""
    out: dict = {}
    for r in long.to_dict("records"):
        k = tuple(r[c] for c in KEY_COLUMNS)
        col = f"{r['image_type']}_{r['feature_class']}_{r['feature']}"
        out.setdefault(k, {}).setdefault(col, r["value"])
    return out


def test_wide_table_matches_a_plain_loop():
    rng = np.random.default_rng(3)
    feats = [("original", "firstorder", f"F{i}", float(v)) for i, v in enumerate(rng.normal(size=6))]
    rows = (_rows("a", "P2", "GTV", feats)  # first-appearance order: P2 before P1
            + _rows("b", "P1", "GTV", feats[2:] + [("wavelet-LLH", "glcm", "Idm", 0.5)])
            + _rows("c", "P1", "NODE", [("original", "firstorder", "F0", float("nan"))])
            + _rows("a", "P2", "GTV", [("original", "firstorder", "F1", 99.0)]))  # duplicate: first value wins
    long = pd.DataFrame(rows)[LONG_COLUMNS + PROVENANCE_COLUMNS]
    wide = wide_table(long)
    ref = _reference_wide(long)
    assert list(wide.columns[: len(KEY_COLUMNS)]) == KEY_COLUMNS
    assert [tuple(r) for r in wide[KEY_COLUMNS].itertuples(index=False)] == list(ref)
    cols = list(dict.fromkeys(f"{r['image_type']}_{r['feature_class']}_{r['feature']}" for r in rows))
    assert list(wide.columns[len(KEY_COLUMNS):]) == cols
    for i, (k, vals) in enumerate(ref.items()):
        for c in cols:
            got, want = wide.iloc[i][c], vals.get(c, float("nan"))
            assert (math.isnan(got) and math.isnan(want)) or got == want, (k, c, got, want)
    assert wide.loc[0, "original_firstorder_F1"] == feats[1][3]


def test_long_table_reuses_previous_rows_and_equals_a_full_read(tmp_path):
    feats = [("original", "firstorder", "Mean", 1.0), ("original", "shape", "VoxelVolume", 2.0)]
    items = [_item(tmp_path, f"k{i}", f"P{i}", "GTV", [(a, b, c, v + i) for a, b, c, v in feats]) for i in range(4)]
    out = tmp_path / "features"
    write_tables(out, items[:3])
    # the previous table answers k0..k2: change their item files to prove they are not read again
    for it in items[:3]:
        write_item(it.out_path, _rows(it.key, it.patient_id, "GTV", [("original", "firstorder", "Mean", -1.0)]))
    plan = [items[3], items[1], items[0]]  # k2 dropped, k3 new; plan order
    inc = long_table(plan, previous=out / "features_long.parquet")
    assert list(inc["item_key"].unique()) == ["k3", "k1", "k0"]
    assert (inc.loc[inc["item_key"] == "k1", "value"] == [2.0, 3.0]).all()  # from the previous table
    assert set(inc.loc[inc["item_key"] == "k3", "value"]) == {4.0, 5.0}  # read from its file
    assert list(inc.columns) == LONG_COLUMNS + PROVENANCE_COLUMNS

    # restore the item files: with the same files, incremental == full read
    for i, it in enumerate(items[:3]):
        write_item(it.out_path, _rows(it.key, it.patient_id, "GTV", [(a, b, c, v + i) for a, b, c, v in feats]))
    pd.testing.assert_frame_equal(inc, long_table(plan))

    # a previous table with other columns is ignored (everything read from the item files)
    pd.DataFrame({"x": [1]}).to_parquet(out / "features_long.parquet")
    pd.testing.assert_frame_equal(long_table(plan, previous=out / "features_long.parquet"), long_table(plan))


def test_an_empty_previous_table_is_no_obstacle(tmp_path):
    """A run that produced no features (images before their masks) writes an empty long table
    with null-typed columns; the next run, with items, assembles from the item files."""
    out = tmp_path / "features"
    write_tables(out, [])
    items = [_item(tmp_path, "k0", "P0", "GTV", [("original", "firstorder", "Mean", 7.0)])]
    inc = long_table(items, previous=out / "features_long.parquet")
    assert inc["value"].tolist() == [7.0]
    pd.testing.assert_frame_equal(inc, long_table(items))
