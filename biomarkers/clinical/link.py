"""Joining clinical variables with radiomics features into an analysis table.

Features come from the extraction stage's ``FEATURES/features_wide.parquet``: key
columns ``patient_id, study_uid, series_uid, modality, roi`` followed by one column
per feature named as pyradiomics names it (``original_firstorder_Mean``...).

Two layouts (``join``):

* ``series``: one row per patient x series x ROI:
  ``patient_id, centre, <clinical...>, study_uid, series_uid, modality, roi, <features...>``;
* ``patient``: one row per patient, feature columns prefixed with the modality:
  ``patient_id, centre, <clinical...>, CT_original_firstorder_Mean, MR_..., PT_...``.
  A patient with more than one series x ROI of a modality is an error (it would give
  two values to one column): select the ROI/series upstream or use ``series``.

A wide table with IBSI 2 filters (one row per ROI and filter, ``filter`` key column) is first
merged to one row per ROI (:func:`~biomarkers.features.naming.merge_filter_rows`): the feature
columns name their filter (``3-log_ibsistat_mean``, ``CT_3-log_ibsistat_mean``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import pandas as pd

from ..errors import InputError
from ..features.naming import (KEY_COLUMNS, VOLUME_COLUMN, WIDE_TABLE, feature_columns, merge_filter_rows, prefixed,
                               read_wide)

#: Key columns, table name and reader of the wide feature table: owned by :mod:`biomarkers.features.naming`.
read_features = read_wide
FEATURES_FILE = WIDE_TABLE


@dataclass
class LinkReport:
    join: str
    how: str
    n_patients_features: int = 0
    n_patients_clinical: int = 0
    n_patients_linked: int = 0
    features_only: list[str] = field(default_factory=list)  # pseudonyms with features but no clinical row
    clinical_only: list[str] = field(default_factory=list)  # pseudonyms with clinical data but no features
    n_rows: int = 0
    n_columns: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        s = (
            f"link ({self.join}, {self.how}): {self.n_patients_linked} patient(s) linked, {self.n_rows} row(s), "
            f"{self.n_columns} column(s); {len(self.features_only)} with features only, "
            f"{len(self.clinical_only)} with clinical data only"
        )
        if self.features_only:
            s += "\n  features only: " + ", ".join(self.features_only)
        if self.clinical_only:
            s += "\n  clinical only: " + ", ".join(self.clinical_only)
        return s


def _duplicates(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    d = df[df.duplicated(keys, keep=False)]
    return d.groupby(keys, dropna=False).size().reset_index(name="n")


def _volumes_hint(features: pd.DataFrame) -> str:
    """Why rows may repeat a series x ROI: the volumes of a 4-D image (one row each)."""
    if VOLUME_COLUMN in features.columns and features[VOLUME_COLUMN].nunique(dropna=False) > 1:
        return (f"; the rows include several volumes of 4-D images (column {VOLUME_COLUMN!r}): extract one volume "
                f"per image to link (the parameter file's volumes: first, or [index])")
    return ""


def link(
    features: pd.DataFrame, clinical: pd.DataFrame, join: str = "series", how: str = "inner"
) -> tuple[pd.DataFrame, LinkReport]:
    """Build the analysis table (see the module docstring for the layouts).

    Args:
        features: features_wide table (pseudonymised ``patient_id``).
        clinical: output of :func:`load_clinical` (``patient_id``, ``centre``, variables).
        join: ``series`` or ``patient``.
        how: ``inner`` (patients on both sides) or ``left`` (every clinical patient).

    Raises:
        InputError: duplicated patient ids in the clinical table, duplicated
            patient x series x ROI rows in the features, or (``patient``) several
            series x ROI of one modality for a patient; the message names them.
    """
    if join not in ("series", "patient"):
        raise InputError(f"join must be 'series' or 'patient', got {join!r}")
    if how not in ("inner", "left"):
        raise InputError(f"how must be 'inner' or 'left', got {how!r}")
    if "patient_id" not in clinical.columns:
        raise InputError("clinical table has no patient_id column")
    clinical = clinical.copy()
    # IBSI 2 filters: one row per ROI (the filter id is in the feature column names)
    features = merge_filter_rows(features).copy()
    clinical["patient_id"] = clinical["patient_id"].astype(str)
    features["patient_id"] = features["patient_id"].astype(str)
    dup = clinical.loc[clinical["patient_id"].duplicated(keep=False), "patient_id"]
    if len(dup):
        counts = dup.value_counts()
        raise InputError(
            "duplicated patient id(s) in the clinical table: "
            + ", ".join(f"{pid} ({n} rows)" for pid, n in counts.items())
        )
    d = _duplicates(features, ["patient_id", "series_uid", "roi"])
    if len(d):
        raise InputError(
            "duplicated patient x series x ROI rows in the features: "
            + ", ".join(f"{r.patient_id}/{r.series_uid}/{r.roi} ({r.n} rows)" for r in d.itertuples())
            + _volumes_hint(features)
        )
    fcols = feature_columns(features)
    fp, cp = set(features["patient_id"]), set(clinical["patient_id"])
    rep = LinkReport(
        join=join, how=how, n_patients_features=len(fp), n_patients_clinical=len(cp),
        features_only=sorted(fp - cp), clinical_only=sorted(cp - fp),
    )
    if join == "series":
        table = clinical.merge(features[KEY_COLUMNS + fcols], on="patient_id", how=how, validate="one_to_many")
        table = table.sort_values(["patient_id", "modality", "series_uid", "roi"], kind="stable", na_position="last")
    else:
        d = _duplicates(features, ["patient_id", "modality"])
        if len(d):
            raise InputError(
                "join: patient needs one series x ROI per patient and modality, but found: "
                + ", ".join(f"{r.patient_id} {r.modality} ({r.n} rows)" for r in d.itertuples())
                + "; select one ROI/series per modality or use join: series" + _volumes_hint(features)
            )
        wide = features.set_index(["patient_id", "modality"])[fcols].unstack("modality")
        mods = sorted(features["modality"].astype(str).unique())
        wide = wide.reindex(columns=pd.MultiIndex.from_product([fcols, mods]))
        wide.columns = [prefixed(m, f) for f, m in wide.columns]
        wide = wide[[prefixed(m, f) for m in mods for f in fcols]].reset_index()
        table = clinical.merge(wide, on="patient_id", how=how, validate="one_to_one")
        table = table.sort_values("patient_id", kind="stable")
    table = table.reset_index(drop=True)
    rep.n_patients_linked = int(table["patient_id"].isin(fp & cp).groupby(table["patient_id"]).any().sum())
    rep.n_rows, rep.n_columns = table.shape
    return table, rep
