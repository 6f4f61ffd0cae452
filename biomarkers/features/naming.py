"""Feature naming and the layout of the feature tables: the one owner of both.

A feature is ``(image_type, feature_class, feature)``, named as pyradiomics names its results:
``<image_type>_<feature_class>_<feature>`` (``wavelet-LLH_glcm_Contrast``; the IBSI module's classes
are ``ibsi<family>``). The analysis table's ``patient`` layout prefixes the modality
(``CT_original_firstorder_Mean``; a modality may contain ``_``, e.g. ``MR_T1``).
FEATURES holds :data:`LONG_TABLE` (one row per feature: :data:`LONG_COLUMNS` + :data:`PROVENANCE_COLUMNS`)
and :data:`WIDE_TABLE` (one row per :data:`KEY_COLUMNS` value, one column per feature). Adding a key
column (e.g. an IBSI 2 ``filter``) is one entry in :data:`KEY_COLUMNS`. No pandas/pyarrow at import.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError

#: Identity columns of every table row (one wide-table row per distinct value).
KEY_COLUMNS = ["patient_id", "study_uid", "series_uid", "modality", "roi"]
#: Extra key column of tables with IBSI 2 filter responses (``ibsi: filters:``): the filter entry's
#: id ('' for the unfiltered image). Tables of parameter files without filters do not have it.
FILTER_COLUMN = "filter"
#: Extra key column of tables with 4-D images: the 0-based volume index features were computed on
#: (0 for the rows of 3-D images; the parameter file's ``volumes:`` selects volumes). Tables whose
#: images are all 3-D do not have it.
VOLUME_COLUMN = "volume"
#: Optional key columns, in table order after :data:`KEY_COLUMNS` (each only in tables that use it).
OPTIONAL_KEY_COLUMNS = [VOLUME_COLUMN, FILTER_COLUMN]
#: Columns naming a feature in the long table.
NAME_COLUMNS = ["image_type", "feature_class", "feature"]
#: Long-table columns (issue 5), followed by :data:`PROVENANCE_COLUMNS`.
LONG_COLUMNS = KEY_COLUMNS + NAME_COLUMNS + ["ibsi_code", "value"]
PROVENANCE_COLUMNS = ["ibsi_value", "source", "params_name", "params_hash", "image_hash", "mask_hash", "item_key"]
FLOAT_COLUMNS = ("value", "ibsi_value")

LONG_TABLE = "features_long.parquet"
WIDE_TABLE = "features_wide.parquet"

#: pyradiomics' feature classes (``radiomics.getFeatureClasses()``, checked by a test); the IBSI
#: module's classes are ``ibsi<family>``. Image types are any token without ``_``.
PYRADIOMICS_CLASSES = ("firstorder", "shape", "shape2D", "glcm", "glrlm", "glszm", "gldm", "ngtdm")
_NAME_RE = re.compile(
    r"^(?:(?P<modality>.+?)_)??(?P<image_type>[^_]+)_(?P<feature_class>"
    + "|".join(PYRADIOMICS_CLASSES) + r"|ibsi[a-z0-9]+)_(?P<feature>.+)$"
)


@dataclass(frozen=True)
class FeatureName:
    """One feature's identity; ``modality`` only for modality-prefixed (patient layout) columns."""

    image_type: str
    feature_class: str
    feature: str
    modality: str | None = None

    @classmethod
    def parse(cls, column: str, prefixed: bool = True) -> "FeatureName | None":
        """Split a feature column name; None when ``column`` is not one (``age``, ``patient_id``).

        ``prefixed``: accept a modality prefix (``MR_T1_wavelet-LLH_glcm_Contrast``).

        >>> FeatureName.parse("MR_T1_wavelet-LLH_glcm_Contrast")
        FeatureName(image_type='wavelet-LLH', feature_class='glcm', feature='Contrast', modality='MR_T1')
        """
        m = _NAME_RE.match(str(column))
        if m is None or (m["modality"] is not None and not prefixed):
            return None
        return cls(m["image_type"], m["feature_class"], m["feature"], m["modality"])

    def format(self) -> str:
        """The column name (``[<MODALITY>_]<image_type>_<feature_class>_<feature>``)."""
        return prefixed(self.modality, f"{self.image_type}_{self.feature_class}_{self.feature}")


def prefixed(modality: str | None, column: str) -> str:
    """``column`` with its modality prefix (the analysis table's ``patient`` layout)."""
    return f"{modality}_{column}" if modality else column


def wide_names(long):
    """Wide-table column names of the rows of a long table (vectorised :meth:`FeatureName.format`)."""
    it, fc, f = (long[c].astype(str) for c in NAME_COLUMNS)
    return it + "_" + fc + "_" + f


def feature_columns(wide) -> list[str]:
    """The feature columns of a wide table (every column that is not a key)."""
    return [c for c in wide.columns if c not in KEY_COLUMNS and c not in OPTIONAL_KEY_COLUMNS]


def value_columns(df, provenance: dict | None = None) -> set[str]:
    """The columns of ``df`` that hold radiomics values, exempt from identifier detection
    (pyradiomics' ``original_glcm_Id``, GLCM's inverse difference, is not an identifier).

    A value column is numeric and named as a feature (:meth:`FeatureName.parse`, with or without a
    modality prefix). With the extraction's ``provenance`` (``FEATURES/provenance.json``) a
    modality-prefixed column must also name a modality of one of its parameter files, so a
    clinical ``XX_original_glcm_Id`` column is still inspected. The one rule used by the release
    builder and the datalake bundle scan.
    """
    import pandas as pd

    modalities = {str(p.get("modality")) for p in (provenance or {}).get("params", []) or [] if p.get("modality")}
    out = set()
    for c in df.columns:
        name = FeatureName.parse(str(c))
        if name is None or not pd.api.types.is_numeric_dtype(df[c]) or pd.api.types.is_bool_dtype(df[c]):
            continue
        if name.modality is not None and modalities and name.modality not in modalities:
            continue
        out.add(str(c))
    return out


def merge_filter_rows(wide):
    """The wide table with one row per ROI: the rows of its IBSI 2 filters merged, the ``filter`` key dropped.

    The wide table of a parameter file with ``ibsi: filters:`` has one row per ROI and filter
    (:data:`FILTER_COLUMN`: the entry's id, '' for the unfiltered features). Its feature columns
    already name the filter (the :class:`FeatureName` image type is the filter id:
    ``3-log_ibsistat_mean``), so the rows of one ROI hold disjoint columns; this puts them on one
    row, keeping the columns' order (the layout ``biomarkers link`` and everything after it read).
    A table without the filter column is returned unchanged.

    Raises:
        InputError: two rows of one ROI and filter, or a feature column with values in two rows
            of one ROI (two filters naming the same column: the merge would have to drop one), or
            an ROI without a filter row the other ROIs of its modality have (its columns would be empty);
            the message names the ROI and the filter or column.
    """
    if FILTER_COLUMN not in wide.columns:
        return wide
    keys = [c for c in key_columns(wide.columns) if c != FILTER_COLUMN]
    dup = wide[wide.duplicated(keys + [FILTER_COLUMN], keep=False)]
    if len(dup):
        r = dup.iloc[0]
        raise InputError(f"features: {int(len(dup))} rows repeat a patient x series x ROI x filter, e.g. "
                         f"{'/'.join(str(r[k]) for k in keys)} filter {r[FILTER_COLUMN]!r}")
    fcols = feature_columns(wide)
    groups = wide.groupby(keys, sort=False, dropna=False)
    _check_filter_rows(wide, keys, fcols)
    counts = groups[fcols].count()
    clash = counts.gt(1)
    if clash.to_numpy().any():
        where = clash.stack()
        key, col = where[where].index[0][:-1], where[where].index[0][-1]
        raise InputError(
            f"features: column {col!r} has values in {int(counts.loc[key, col])} filter rows of "
            f"{'/'.join(map(str, key))}: two 'ibsi: filters:' entries (or a filter and the unfiltered "
            f"image) name the same feature; give the filters distinct ids")
    merged = groups[fcols].first()  # the first non-missing value of every column (at most one)
    return merged.reset_index()[keys + fcols]


def _check_filter_rows(wide, keys: list[str], fcols: list[str]) -> None:
    """Every ROI has the filter rows of the other ROIs of its modality (one parameter file per
    modality): a missing row would leave that filter's columns empty for the ROI after the merge."""
    fid = wide[FILTER_COLUMN].astype(str)
    want = fid.groupby(wide["modality"].astype(str), sort=False).agg(frozenset)
    have = fid.groupby([wide[k] for k in keys], sort=False, dropna=False).agg(frozenset)
    for key, ids in have.items():
        lost = sorted(want[str(key[keys.index("modality")])] - ids)
        if lost:
            rows = wide[fid == lost[0]]
            col = next((c for c in fcols if rows[c].notna().any()), "")
            raise InputError(
                f"features: {'/'.join(map(str, key))} has no row of filter {lost[0]!r} (other "
                f"{key[keys.index('modality')]} ROIs have it{f', column {col!r}' if col else ''}): the merge would "
                f"leave its columns empty; rerun 'biomarkers extract' or keep every filter row of the table")


def key_columns(columns) -> list[str]:
    """The key columns of a table with ``columns``: :data:`KEY_COLUMNS` + the :data:`OPTIONAL_KEY_COLUMNS` present."""
    return KEY_COLUMNS + [c for c in OPTIONAL_KEY_COLUMNS if c in columns]


def long_columns(filtered: bool = False, volumes: bool = False) -> list[str]:
    """Long-table columns; ``volumes`` / ``filtered``: with :data:`VOLUME_COLUMN` / :data:`FILTER_COLUMN`
    after the key columns."""
    cols = LONG_COLUMNS + PROVENANCE_COLUMNS
    extra = [c for c, on in ((VOLUME_COLUMN, volumes), (FILTER_COLUMN, filtered)) if on]
    return cols[:len(KEY_COLUMNS)] + extra + cols[len(KEY_COLUMNS):]


def long_schema(filtered: bool = False, volumes: bool = False):
    """Arrow schema of item files and of the long table: float64 values, int64 volume, strings otherwise."""
    import pyarrow as pa

    def kind(c: str):
        return pa.float64() if c in FLOAT_COLUMNS else pa.int64() if c == VOLUME_COLUMN else pa.string()

    return pa.schema([(c, kind(c)) for c in long_columns(filtered, volumes)])


def read_wide(path: str | Path):
    """Read a wide feature table: a FEATURES folder or the Parquet file itself.

    Raises:
        InputError: no such table, or a key column is missing.
    """
    import pandas as pd

    path = Path(path)
    f = path / WIDE_TABLE if path.is_dir() else path
    if not f.is_file():
        raise InputError(f"{path}: no {WIDE_TABLE} found (run 'biomarkers extract' first)")
    from ..integrity import Ledger

    led = Ledger(f.parent)  # the FEATURES folder's records: a damaged table is refused, not read
    if led.get(f.name) is not None and (problem := led.verify(f.name)) is not None:
        raise InputError(f"{f.parent}: {problem}; rerun 'biomarkers extract' to rewrite it")
    df = pd.read_parquet(f)
    missing = [c for c in KEY_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(f"{f}: not a features_wide table: key column(s) {missing} missing")
    return df
