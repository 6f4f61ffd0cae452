"""From an analysis table to (X, y): cohort filters, feature-column parsing and subsetting.

X keeps the centre column (as strings) when the spec names one, so that a ComBat step
inside the scikit-learn Pipeline can read it fold by fold; every other column of X is a
float feature.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import ConfigError, InputError
from ..features.naming import FeatureName
from .spec import CohortFilter, ExperimentSpec, FeatureSubset

#: Split a radiomics column name (``[<MODALITY>_]<image_type>_<feature_class>_<feature>``); None if not one.
parse_feature = FeatureName.parse


def _match(value: str | None, patterns: list[str] | None) -> bool:
    if patterns is None:
        return True
    if value is None:
        return False
    return any(fnmatch.fnmatchcase(value, p) for p in patterns)


def select_feature_columns(df: pd.DataFrame, subset: FeatureSubset, exclude: set[str], source: str = "table") -> list[str]:
    """Feature columns of ``df`` chosen by ``subset`` (in table order)."""
    regex = re.compile(subset.regex) if subset.regex else None
    xregex = re.compile(subset.exclude_regex) if subset.exclude_regex else None
    cols: list[str] = []
    for c in df.columns:
        if c in exclude:
            continue
        name = parse_feature(str(c))
        if c in subset.include:
            cols.append(c)
            continue
        if name is None:
            continue
        if not (
            _match(name.modality, subset.modalities)
            and _match(name.image_type, subset.image_types)
            and _match(name.feature_class, subset.feature_classes)
        ):
            continue
        if regex and not regex.search(c):
            continue
        cols.append(c)
    if xregex:
        cols = [c for c in cols if not xregex.search(c)]
    if subset.modalities is not None:  # a misspelt modality (MR_T1 for MR, PET for PT) is named, with those the table has
        have = sorted({n.modality for n in map(parse_feature, map(str, df.columns)) if n is not None and n.modality})
        unknown = [p for p in subset.modalities if not any(fnmatch.fnmatchcase(m, p) for m in have)]
        if unknown:
            raise InputError(f"{source}: no feature column of features.modalities {unknown}: no such modality in "
                             f"the table (it has {', '.join(have) or 'no modality-prefixed feature column'})")
    missing = [c for c in subset.include if c not in df.columns]
    if missing:
        raise InputError(f"{source}: features.include names columns not in the table: {missing}")
    non_numeric = [c for c in cols if not pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])]
    if non_numeric:
        raise InputError(f"{source}: feature columns must be numeric: {non_numeric[:5]}")
    if not cols:
        raise InputError(f"{source}: no feature column matches the experiment's feature subset")
    return cols


def apply_filters(df: pd.DataFrame, filters: list[CohortFilter], source: str = "table") -> pd.DataFrame:
    """Keep the rows satisfying every cohort filter."""
    keep = pd.Series(True, index=df.index)
    for i, f in enumerate(filters):
        if f.column not in df.columns:
            raise InputError(f"{source}: cohort.{i}.column {f.column!r} is not a column of the table")
        col = df[f.column]
        if f.op == "notna":
            m = col.notna()
        elif f.op == "isna":
            m = col.isna()
        elif f.op in ("in", "not in"):
            if not isinstance(f.value, list):
                raise ConfigError(f"cohort.{i}.value must be a list for op {f.op!r}")
            m = col.isin(f.value)
            m = ~m if f.op == "not in" else m
        else:
            ops = {"==": col.eq, "!=": col.ne, "<": col.lt, "<=": col.le, ">": col.gt, ">=": col.ge}
            m = ops[f.op](f.value).fillna(False).astype(bool)
        keep &= m
    return df.loc[keep]


@dataclass
class Dataset:
    """Model-ready data. ``X`` has the centre column (str) first when there is one.

    ``y``: 0/1 for a binary target; for survival a structured array (``event`` bool,
    ``time`` float) as scikit-survival expects. ``strata`` (0/1: outcome or event) is what
    the CV folds are stratified on.
    """

    X: pd.DataFrame
    y: np.ndarray
    ids: pd.Series
    centres: pd.Series | None
    feature_columns: list[str]
    centre_column: str | None
    frame: pd.DataFrame  # the filtered table restricted to id, centre, target, features
    dropped_features: dict[str, str]
    kind: str = "binary"

    @property
    def strata(self) -> np.ndarray:
        return self.y["event"].astype(int) if self.kind == "survival" else self.y


def build_dataset(df: pd.DataFrame, spec: ExperimentSpec, source: str = "table") -> Dataset:
    """Apply cohort filters and the feature subset; binarise the target (1 = ``target.positive``)."""
    inp, tgt = spec.input, spec.target
    for col, key in ((inp.id_column, "input.id_column"), (tgt.column, "target.column")):
        if col not in df.columns:
            raise InputError(f"{source}: {key} {col!r} is not a column of the table")
    if inp.centre_column and inp.centre_column not in df.columns:
        raise InputError(f"{source}: input.centre_column {inp.centre_column!r} is not a column of the table")
    if df[inp.id_column].duplicated().any():
        dups = df.loc[df[inp.id_column].duplicated(), inp.id_column].astype(str).head(3).tolist()
        raise InputError(f"{source}: one row per patient expected; repeated {inp.id_column}: {dups}")
    survival = tgt.kind == "survival"
    if survival and tgt.time not in df.columns:
        raise InputError(f"{source}: target.time {tgt.time!r} is not a column of the table")
    df = apply_filters(df, spec.cohort, source)
    need = [tgt.column] + ([tgt.time] if survival else [])
    n_missing_target = int(df[need].isna().any(axis=1).sum())
    df = df.loc[df[need].notna().all(axis=1)]
    exclude = {inp.id_column, tgt.column} | ({inp.centre_column} if inp.centre_column else set())
    if survival:
        exclude.add(tgt.time)
        t = pd.to_numeric(df[tgt.time], errors="coerce")
        if t.isna().any() or (t <= 0).any():
            bad = df.loc[t.isna() | (t <= 0), inp.id_column].astype(str).head(3).tolist()
            raise InputError(f"{source}: target.time {tgt.time!r} must be a positive number (rows {bad})")
    cols = select_feature_columns(df, spec.features, exclude, source)
    dropped: dict[str, str] = {}
    miss = df[cols].isna().mean()
    too_sparse = miss[miss > spec.features.max_missing_fraction].index.tolist()
    for c in too_sparse:
        dropped[c] = f"missing in {miss[c]:.0%} of rows"
    cols = [c for c in cols if c not in too_sparse]
    if not cols:
        raise InputError(f"{source}: every selected feature is missing in more than "
                         f"{spec.features.max_missing_fraction:.0%} of rows")
    y = (df[tgt.column] == tgt.positive).to_numpy().astype(int)
    if len(np.unique(y)) < 2:
        raise InputError(
            f"{source}: target {tgt.column!r} has a single class after filtering "
            f"(positive value {tgt.positive!r}; {n_missing_target} rows without target dropped)"
        )
    if survival:
        from sksurv.util import Surv

        y = Surv.from_arrays(event=y.astype(bool), time=df[tgt.time].astype(float).to_numpy())
    X = df[cols].astype("float64")
    centres = None
    if inp.centre_column:
        centres = df[inp.centre_column].astype(str)
        if centres.isin(["nan", "None", "<NA>"]).any():
            raise InputError(f"{source}: {inp.centre_column!r} is missing for some rows")
        X.insert(0, inp.centre_column, centres.to_numpy(dtype=object))
    X = X.reset_index(drop=True)
    frame = df[[inp.id_column] + ([inp.centre_column] if inp.centre_column else []) + [tgt.column]
               + ([tgt.time] if survival else []) + cols].reset_index(drop=True)
    return Dataset(
        X=X,
        y=y,
        ids=df[inp.id_column].astype(str).reset_index(drop=True),
        centres=None if centres is None else centres.reset_index(drop=True),
        feature_columns=cols,
        centre_column=inp.centre_column,
        frame=frame,
        dropped_features=dropped,
        kind=tgt.kind,
    )
