"""pyradiomics feature name -> IBSI 1 feature tag, from the documented table ``data/ibsi_mapping.csv``.

IBSI identifies features by the tags of its reference tables (``stat_mean``,
``cm_joint_max_3D_avg``, ...). Texture tags carry the aggregation of the
reference manual, which follows from pyradiomics' settings:

========================  ===========================  ===================================
pyradiomics setting        GLCM / GLRLM (cm_, rlm_)     GLSZM / NGTDM / GLDM (szm_, ngt_, ngl_)
========================  ===========================  ===================================
3D (default)               ``_3D_avg``                  ``_3D``
``weightingNorm`` set      ``_3D_comb`` (merged)        ``_3D``
``force2D: true`` (axial)  ``_2_5D_avg`` / ``_2_5D_comb``  ``_2_5D``
========================  ===========================  ===================================

pyradiomics computes one matrix per direction over the whole ROI and averages the
features over directions (IBSI "averaged"); with ``weightingNorm`` the direction
matrices are summed first (IBSI "merged"). With ``force2D`` the neighbourhoods are
in-plane but the matrices still span all slices: IBSI's 2.5D. IBSI's per-slice 2D
aggregation has no pyradiomics counterpart (provided by :mod:`biomarkers.features.ibsi`).
``force2Ddimension`` other than 0 (non-axial planes) is not an IBSI aggregation: no tag.
"""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass
from importlib import resources
from typing import Mapping

MAPPING_FILE = "ibsi_mapping.csv"

_MATRIX_AVG = ("cm_", "rlm_")
_MATRIX_SINGLE = ("szm_", "ngt_", "ngl_")


@dataclass(frozen=True)
class MappingRow:
    feature_class: str
    feature: str
    ibsi_tag: str  # without aggregation suffix
    relation: str  # identical | kurtosis_excess | pca_axis | shift
    primary: bool
    note: str = ""


@functools.lru_cache(maxsize=1)
def mapping_rows() -> tuple[MappingRow, ...]:
    """The rows of the shipped mapping table (comment lines start with '#')."""
    text = resources.files("biomarkers.features").joinpath("data", MAPPING_FILE).read_text(encoding="utf-8")
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    return tuple(MappingRow(r["feature_class"], r["feature"], r["ibsi_tag"], r["relation"], r["primary"] == "1",
                            r["note"] or "") for r in csv.DictReader(lines))


@functools.lru_cache(maxsize=1)
def _by_feature() -> dict[tuple[str, str], tuple[MappingRow, ...]]:
    out: dict[tuple[str, str], list[MappingRow]] = {}
    for r in mapping_rows():
        out.setdefault((r.feature_class, r.feature), []).append(r)
    return {k: tuple(v) for k, v in out.items()}


def mapping_table():
    """The mapping as a pandas DataFrame (documentation, README, checks)."""
    import pandas as pd

    return pd.DataFrame([r.__dict__ for r in mapping_rows()])


def aggregation_suffix(tag: str, settings: Mapping | None) -> str | None:
    """Suffix IBSI gives ``tag`` under these pyradiomics ``setting`` values (None: no IBSI aggregation)."""
    s = dict(settings or {})
    force2d = bool(s.get("force2D", False))
    if force2d and int(s.get("force2Ddimension", 0) or 0) != 0:
        return None
    dim = "2_5D" if force2d else "3D"
    if tag.startswith(_MATRIX_AVG):
        return f"_{dim}_{'comb' if s.get('weightingNorm') else 'avg'}"
    if tag.startswith(_MATRIX_SINGLE):
        return f"_{dim}"
    return ""


def ibsi_codes(feature_class: str, feature: str, settings: Mapping | None = None) -> list[tuple[str, str, bool]]:
    """All IBSI tags of one pyradiomics feature: ``[(tag, relation, primary), ...]`` (primary first)."""
    out = []
    for r in _by_feature().get((feature_class, feature), ()):
        suffix = aggregation_suffix(r.ibsi_tag, settings)
        if suffix is None:
            continue
        out.append((r.ibsi_tag + suffix, r.relation, r.primary))
    out.sort(key=lambda t: not t[2])
    return out


def primary_code(feature_class: str, feature: str, settings: Mapping | None = None) -> tuple[str, str] | None:
    """``(tag, relation)`` shown in the ``ibsi_code`` column, or None when IBSI has no such feature."""
    codes = ibsi_codes(feature_class, feature, settings)
    return (codes[0][0], codes[0][1]) if codes and codes[0][2] else None
