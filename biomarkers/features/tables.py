"""Long and wide feature tables, assembled from the item files of one plan."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import pandas as pd

from ..io import write_parquet
from .items import KEY_COLUMNS, LONG_COLUMNS, PROVENANCE_COLUMNS, Item


def feature_column(image_type: str, feature_class: str, feature: str) -> str:
    """Wide-table column name, exactly as pyradiomics names the feature (``original_firstorder_Mean``)."""
    return f"{image_type}_{feature_class}_{feature}"


def long_table(items: Iterable[Item]) -> pd.DataFrame:
    """Concatenate item files (in the given order) into the long table."""
    frames = [pd.read_parquet(it.out_path) for it in items]
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype="float64" if c in ("value", "ibsi_value") else "object")
                             for c in LONG_COLUMNS + PROVENANCE_COLUMNS})
    df = pd.concat(frames, ignore_index=True)
    return df[LONG_COLUMNS + PROVENANCE_COLUMNS]


def wide_table(long: pd.DataFrame) -> pd.DataFrame:
    """One row per patient x series x ROI (key columns first), one column per feature (pyradiomics values)."""
    if long.empty:
        return pd.DataFrame(columns=KEY_COLUMNS)
    df = long.copy()
    df["_col"] = [feature_column(a, b, c) for a, b, c in zip(df["image_type"], df["feature_class"], df["feature"])]
    df = df.drop_duplicates(subset=KEY_COLUMNS + ["_col"], keep="first")
    order = list(dict.fromkeys(df["_col"]))
    rows = list(dict.fromkeys(map(tuple, df[KEY_COLUMNS].itertuples(index=False, name=None))))
    wide = df.pivot(index=KEY_COLUMNS, columns="_col", values="value")
    wide = wide.reindex(index=pd.MultiIndex.from_tuples(rows, names=KEY_COLUMNS), columns=order)
    wide.columns.name = None
    return wide.reset_index()


def write_tables(out: Path, items: list[Item]) -> dict:
    """Write ``features_long.parquet`` and ``features_wide.parquet``; return their row counts."""
    long = long_table(items)
    wide = wide_table(long)
    write_parquet(Path(out) / "features_long.parquet", long)
    write_parquet(Path(out) / "features_wide.parquet", wide)
    return {"features_long.parquet": int(len(long)), "features_wide.parquet": int(len(wide)),
            "feature_columns": int(wide.shape[1] - len(KEY_COLUMNS)) if len(wide) else 0}
