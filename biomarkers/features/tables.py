"""Long and wide feature tables, assembled from the item files of one plan."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from ..io import write_parquet
from .items import Item
from .naming import (FILTER_COLUMN, FLOAT_COLUMNS, LONG_TABLE, VOLUME_COLUMN, WIDE_TABLE, key_columns, long_columns,
                     long_schema, wide_names)


def long_table(items: Iterable[Item], previous: Path | None = None) -> pd.DataFrame:
    """Concatenate item files (in the given order) into the long table.

    ``previous``: the long table of an earlier run. The rows of items it already holds
    (matched by ``item_key``, which hashes the inputs, parameters and library versions,
    so equal keys mean equal rows) are taken from it, and only the other items' files
    are read: assembling after adding a few patients costs what the new items cost.
    A previous table with other columns, or unreadable, is ignored.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    items = list(items)
    cols = long_columns()
    if not items:
        return pd.DataFrame({c: pd.Series(dtype="float64" if c in FLOAT_COLUMNS else "object") for c in cols})
    keys = [it.key for it in items]
    old = None
    if previous is not None and Path(previous).is_file():
        try:
            old = pq.read_table(previous)
        except (OSError, pa.ArrowException):
            old = None
        if old is not None and old.column_names not in [long_columns(f, v) for f in (False, True) for v in (False, True)]:
            old = None
        if old is not None and old.num_rows == 0:  # an empty table (a run without features) has null-typed columns
            old = None
    tables: list = []
    have: set[str] = set()
    if old is not None:
        old = old.filter(pc.is_in(old["item_key"], value_set=pa.array(keys, pa.string())))
        have = set(old["item_key"].to_pylist())
        tables.append(old)
    tables += [pq.read_table(it.out_path) for it in items if it.key not in have]
    # optional key columns (IBSI 2 filters, volumes of 4-D images): '' / volume 0 where a table lacks them
    filtered = any(FILTER_COLUMN in t.column_names for t in tables)
    volumes = any(VOLUME_COLUMN in t.column_names for t in tables)
    for c, on, v, typ in ((FILTER_COLUMN, filtered, "", pa.string()), (VOLUME_COLUMN, volumes, 0, pa.int64())):
        if on:
            tables = [t if c in t.column_names else t.append_column(c, pa.array([v] * t.num_rows, typ)) for t in tables]
    schema = long_schema(filtered, volumes)
    table = pa.concat_tables([t.select(schema.names).cast(schema) for t in tables])
    # item order of the plan; rows of one item keep their order (stable sort)
    order = {k: i for i, k in enumerate(keys)}
    pos = np.fromiter((order[k] for k in table["item_key"].to_pylist()), dtype=np.int64, count=table.num_rows)
    return table.take(pa.array(np.argsort(pos, kind="stable"))).to_pandas()


def wide_table(long: pd.DataFrame) -> pd.DataFrame:
    """One row per patient x series x ROI (key columns first), one column per feature (pyradiomics values).

    Columns are named as :class:`~biomarkers.features.naming.FeatureName` formats them
    (``<image_type>_<feature_class>_<feature>``, as pyradiomics does: ``original_firstorder_Mean``).

    Rows and columns keep the order of their first appearance in ``long``; a feature listed
    twice for the same row keeps its first value.
    """
    keys_ = key_columns(long.columns)  # + the filter column of IBSI 2 response maps
    if long.empty:
        return pd.DataFrame(columns=keys_)
    rows = long.groupby(keys_, sort=False, dropna=False).ngroup().to_numpy()
    cols, order = pd.factorize(wide_names(long), sort=False)
    n_rows, n_cols = int(rows.max()) + 1, len(order)
    cell = rows.astype(np.int64) * n_cols + cols
    _, first = np.unique(cell, return_index=True)  # first occurrence of every (row, feature)
    values = np.full(n_rows * n_cols, np.nan)
    values[cell[first]] = long["value"].to_numpy(dtype=float)[first]
    _, first_row = np.unique(rows, return_index=True)  # group numbers follow first appearance
    keys = long[keys_].iloc[first_row].reset_index(drop=True).astype(object)
    feats = pd.DataFrame(values.reshape(n_rows, n_cols), columns=list(order))
    return pd.concat([keys, feats], axis=1)


def write_tables(out: Path, items: list[Item], reuse_previous: bool = True) -> dict:
    """Write the long and wide tables (:data:`LONG_TABLE`, :data:`WIDE_TABLE`); return their row counts.

    Rows of items already in the existing long table are reused from it (see :func:`long_table`)
    when ``reuse_previous`` (the caller verified that table against its integrity record).
    """
    long = long_table(items, previous=Path(out) / LONG_TABLE if reuse_previous else None)
    wide = wide_table(long)
    write_parquet(Path(out) / LONG_TABLE, long)
    write_parquet(Path(out) / WIDE_TABLE, wide)
    return {LONG_TABLE: int(len(long)), WIDE_TABLE: int(len(wide)),
            "feature_columns": int(wide.shape[1] - len(key_columns(wide.columns))) if len(wide) else 0}
