"""Release privacy checks: identifying values and k-anonymity of quasi-identifiers."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping

import pandas as pd

from ..errors import PrivacyError

MISSING = "<missing>"


def age_band(age: pd.Series, years: int) -> pd.Series:
    """``"60-69"`` style bands of ``years`` width (missing stays missing)."""
    a = pd.to_numeric(age, errors="coerce")
    lo = (a // years) * years
    out = lo.map(lambda v: None if pd.isna(v) else f"{int(v)}-{int(v) + years - 1}")
    return out.astype("string")


def small_groups(df: pd.DataFrame, quasi_identifiers: list[str], k: int) -> pd.DataFrame:
    """Combinations of quasi-identifier values occurring fewer than ``k`` times (one row per patient).

    Missing values form their own category. Returns the combinations with a column ``n``.
    """
    missing = [q for q in quasi_identifiers if q not in df.columns]
    if missing:
        raise PrivacyError(f"quasi-identifier column(s) {missing} not in the clinical table (columns: {list(df.columns)})")
    if not quasi_identifiers:
        return pd.DataFrame(columns=["n"])
    q = df[quasi_identifiers].astype("string").fillna(MISSING)
    counts = q.groupby(quasi_identifiers, dropna=False).size().reset_index(name="n")
    return counts[counts["n"] < k].sort_values(quasi_identifiers).reset_index(drop=True)


def check_k_anonymity(df: pd.DataFrame, quasi_identifiers: list[str], k: int) -> None:
    """Raise :class:`PrivacyError` naming every combination that occurs fewer than ``k`` times."""
    bad = small_groups(df, quasi_identifiers, k)
    if len(bad):
        combos = "; ".join(
            ", ".join(f"{q}={r[q]}" for q in quasi_identifiers) + f": {r['n']} patient(s)" for _, r in bad.iterrows()
        )
        raise PrivacyError(
            f"release refused: k-anonymity (k={k}) violated: {len(bad)} combination(s) of "
            f"quasi-identifiers ({', '.join(quasi_identifiers)}) occur fewer than {k} times: {combos}. "
            "Coarsen or drop a quasi-identifier (e.g. wider age bands), or exclude the patients."
        )


def find_identifying(df: pd.DataFrame, table: str, pseudonym_prefix: str = "BM", uid_root: str = "2.25",
                     value_columns: Iterable[str] = ()) -> list[str]:
    """Findings of the de-identification scanner for one table, as ``table: column row N: reason`` lines.

    ``value_columns``: radiomics value columns, not inspected (the feature table's
    :func:`biomarkers.features.naming.value_columns`)."""
    from ..deid.keys import pseudonym_pattern
    from ..deid.scan import find_identifying_values

    findings = find_identifying_values(df, pseudonym_pattern=pseudonym_pattern(pseudonym_prefix), uid_root=uid_root,
                                       value_columns=value_columns)
    return [f"{table}: column {f.column!r} row {f.row + 1}: {f.value_kind} ({f.reason})" for f in findings]


def scan_for_originals(folder: Path, originals: Iterable[str], labels: Mapping[str, str] | None = None) -> list[str]:
    """Search every file of a release folder for original patient ids (all textual variants).

    ``labels`` maps an original id to the label shown (its pseudonym); the original is never shown.
    """
    from ..deid.scan import scan_files

    labels = dict(labels or {})
    needles = {f"patient id of {labels.get(o, 'a patient')} [{n}]": (o, "id") for n, o in enumerate(sorted(set(originals)))}
    if not needles:
        return []
    hits = scan_files([folder], needles)
    return sorted({f"{Path(h.path).name} ({h.layer}): {h.label.rsplit(' [', 1)[0]}" for h in hits})
