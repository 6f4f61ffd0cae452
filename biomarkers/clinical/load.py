"""Loading, validating and de-identifying clinical tables.

:func:`load_clinical` reads one or several exports (e.g. one per centre), renames
each centre's columns to the canonical variables of a :class:`ClinicalSchema`,
applies value mappings, converts types, checks every value with pandera
(required values, ranges, allowed values, id pattern, unique ids), pseudonymises
patient ids with the same key as imaging, shifts dates the same way and caps ages.

Every problem is reported per file, row and column with the action taken:

* ``rejected``: the row is dropped (invalid patient id, duplicated id, invalid
  value of a ``required`` variable or of a variable with ``on_invalid: reject_row``);
* ``set missing``: the value is replaced by a missing value (other invalid values);
* ``kept``: the row is kept as is (e.g. the patient has no imaging);
* ``capped``: an age above the de-identification maximum was capped;
* ``column ignored``: a column the schema does not know (not loaded: it may hold identifiers);
* ``load aborted``: a ``mandatory`` variable is missing or invalid: after collecting
  every problem the load raises :class:`ClinicalValidationError`.

Row numbers: ``row`` is the 1-based data row (first row under the header = 1);
``line`` is what a spreadsheet or text editor shows (header = line 1, first data
row = line 2); Parquet files have no ``line``. Reports never show original patient
ids or dates: the patient is named by its pseudonym, id and date values are redacted.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from ..deid import Deidentifier, normalise_id
from ..errors import InputError
from ..io import write_csv, write_json
from ..report import RunReport
from .readers import LINE, ROW, read_table
from .schema import ClinicalSchema, VariableSpec

REDACTED = "<redacted>"
ACTIONS = ("rejected", "set missing", "kept", "capped", "column ignored", "load aborted")
TRUE_TOKENS = {"true", "t", "yes", "y", "1", "ja", "oui", "si"}
FALSE_TOKENS = {"false", "f", "no", "n", "0", "nein", "non"}


@dataclass
class Issue:
    """One problem found in a clinical export."""

    file: str
    row: int | None  # 1-based data row (None: the whole file/column)
    line: int | None  # spreadsheet/editor line (header = 1); None for Parquet or file-level issues
    column: str  # column name as in the file
    variable: str  # canonical variable
    patient: str  # pseudonym ("" when unknown)
    problem: str
    value: str  # offending value (ids and dates redacted)
    action: str


def _named(d: dict) -> dict:
    """A report entry naming its file without the site's folders (paths may carry names, MRNs, dates)."""
    f = d.get("file")
    if not f:
        return d
    name = Path(str(f)).name
    out = dict(d, file=name)
    for k in ("error", "problem"):
        if isinstance(out.get(k), str):
            out[k] = out[k].replace(str(f), name)
    return out


@dataclass
class ValidationReport:
    """All problems of one clinical load, plus per-file facts (format, encoding, centre, counts)."""

    issues: list[Issue] = field(default_factory=list)
    files: list[dict] = field(default_factory=list)
    n_read: int = 0
    n_kept: int = 0

    @property
    def aborted(self) -> bool:
        return any(i.action == "load aborted" for i in self.issues)

    def to_frame(self) -> pd.DataFrame:
        cols = list(Issue.__dataclass_fields__)
        df = pd.DataFrame([_named(asdict(i)) for i in self.issues], columns=cols)
        return df.astype({"row": "Int64", "line": "Int64"})

    def where(self, **match) -> list[Issue]:
        """Issues whose attributes equal the given values, e.g. ``where(row=3, action="rejected")``."""
        return [i for i in self.issues if all(getattr(i, k) == v for k, v in match.items())]

    def to_dict(self) -> dict:
        return {
            "rows_read": self.n_read,
            "rows_kept": self.n_kept,
            "files": [_named(f) for f in self.files],
            "issues": [_named(asdict(i)) for i in self.issues],
            "row_convention": "row: 1-based data row (first row under the header = 1); "
            "line: spreadsheet/editor line (header = line 1)",
        }

    def write(self, path: str | Path) -> Path:
        """Write the issues as CSV (``.csv``) or everything as JSON (other suffixes)."""
        path = Path(path)
        if path.suffix.lower() == ".csv":
            return write_csv(path, self.to_frame())
        return write_json(path, self.to_dict())

    def run_report(self) -> RunReport:
        """One case per data row: done (kept, maybe with values set missing) or failed (rejected)."""
        rep = RunReport("clinical")
        by_row: dict[tuple, list[Issue]] = {}
        for i in self.issues:
            by_row.setdefault((i.file, i.row), []).append(i)
        for f in self.files:
            if f.get("error"):
                rep.add(Path(f["file"]).name, "failed", f["error"])
                continue
            for r in range(1, f["rows"] + 1):
                issues = by_row.get((f["file"], r), [])
                rejected = [i for i in issues if i.action in ("rejected", "load aborted")]
                case = f"{Path(f['file']).name}:row {r}"
                if rejected:
                    rep.add(case, "failed", "; ".join(f"{i.column}: {i.problem}" for i in rejected))
                else:
                    rep.add(case, "done", "", issues=[f"{i.column}: {i.problem} ({i.action})" for i in issues])
        rep.extra["validation"] = {"rows_read": self.n_read, "rows_kept": self.n_kept,
                                   "files": [_named(f) for f in self.files]}
        return rep

    def summary(self) -> str:
        by_action: dict[str, int] = {}
        for i in self.issues:
            by_action[i.action] = by_action.get(i.action, 0) + 1
        s = f"clinical: {self.n_read} rows read from {len(self.files)} file(s), {self.n_kept} kept"
        if by_action:
            s += "; problems: " + ", ".join(f"{n} {a}" for a, n in sorted(by_action.items()))
        for i in self.issues[:30]:
            where = f"{Path(i.file).name}" + (f" row {i.row}" if i.row is not None else "")
            where += f" (line {i.line})" if i.line is not None else ""
            s += f"\n  {where}, column {i.column!r}: {i.problem} -> {i.action}"
        if len(self.issues) > 30:
            s += f"\n  ... {len(self.issues) - 30} more (see the validation report)"
        return s


class ClinicalValidationError(InputError):
    """A mandatory variable is missing or invalid; ``report`` holds every problem found."""

    def __init__(self, message: str, report: ValidationReport):
        super().__init__(message)
        self.report = report


def _capped_age_text(value, max_age: int) -> str:
    """An age value as a report may show it: any number above ``max_age`` in it becomes ``>max_age``
    (ages are capped in every output, validation reports included)."""
    import re

    def cap(m: re.Match) -> str:
        return f">{max_age}" if float(m.group(0).replace(",", ".")) > max_age else m.group(0)

    return re.sub(r"\d+(?:[.,]\d+)?", cap, str(value))


# --- value normalisation and type conversion (vectorised where pandas allows) -------------

def _is_missing(v, missing: set[str]) -> bool:
    if v is None or v is pd.NA or v is pd.NaT:
        return True
    if isinstance(v, float) and np.isnan(v):
        return True
    return isinstance(v, str) and v.strip() in missing


def _text(v) -> str:
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))
    if isinstance(v, (dt.datetime, pd.Timestamp)):
        return v.isoformat()
    return str(v).strip()


def _normalise(s: pd.Series, missing: set[str]) -> pd.Series:
    """Object series: None for missing, datetimes kept, everything else trimmed text."""
    return s.map(lambda v: None if _is_missing(v, missing) else (v if isinstance(v, (dt.date, pd.Timestamp)) else _text(v))).astype(object)


def _apply_mapping(s: pd.Series, mapping: dict) -> pd.Series:
    if not mapping:
        return s
    lut = {str(k).strip().lower(): v for k, v in mapping.items()}
    return s.map(lambda v: lut.get(v.lower(), v) if isinstance(v, str) else (None if _is_missing(v, set()) else v)).astype(object)


def _convert(s: pd.Series, spec: VariableSpec, date_format: str, decimal: str) -> tuple[pd.Series, pd.Series, str]:
    """Typed series, mask of values that could not be converted, expected-type text."""
    present = s.notna()
    if spec.type in ("float", "int"):
        txt = s.map(lambda v: v.replace(",", ".") if decimal == "," and isinstance(v, str) else v)
        num = pd.to_numeric(txt.map(lambda v: v if not isinstance(v, bool) else float(v)), errors="coerce").astype(float)
        bad = present & num.isna()
        if spec.type == "int":
            frac = num.notna() & (np.mod(num.fillna(0), 1) != 0)
            bad |= frac
            num[frac] = np.nan
            return num.round().astype("Int64"), bad, "an integer"
        return num.astype("float64"), bad, "a number"
    if spec.type == "bool":
        def tobool(v):
            if isinstance(v, bool) or v is None:
                return v
            t = str(v).lower()
            return True if t in TRUE_TOKENS else False if t in FALSE_TOKENS else None
        out = s.map(tobool).astype("boolean")
        return out, present & out.isna(), "yes/no (true/false, 1/0)"
    if spec.type == "date":
        fmt = spec.date_format or date_format
        is_dt = s.map(lambda v: isinstance(v, (dt.date, pd.Timestamp)))
        parsed = pd.to_datetime(s.where(~is_dt).astype("string"), format=fmt, errors="coerce")
        direct = pd.to_datetime(s.where(is_dt), errors="coerce")
        out = parsed.where(~is_dt, direct).dt.normalize()
        return out, present & out.isna(), f"a date ({fmt})"
    out = s.map(lambda v: None if _is_missing(v, set()) else str(v)).astype("string")
    return out, pd.Series(False, index=s.index), "text"


# --- the loader ------------------------------------------------------------------------------

def load_clinical(
    files: str | Path | Iterable[str | Path],
    schema: ClinicalSchema,
    deidentifier: Deidentifier | None = None,
    known_patients: Iterable[str] | None = None,
) -> tuple[pd.DataFrame, ValidationReport]:
    """Load, validate and de-identify clinical exports.

    Args:
        files: CSV/XLSX/Parquet files (one per centre, or any split of the patients).
        schema: the declared :class:`ClinicalSchema`.
        deidentifier: pseudonymises ids and shifts dates (default: ``Deidentifier()``,
            which reads the site secret from ``BIOMARKERS_SECRET``).
        known_patients: pseudonyms of the imaging cohort; clinical patients outside it
            are reported (action ``kept``).

    Returns:
        ``(table, report)``: one row per kept patient with columns ``patient_id``
        (pseudonym), ``centre`` and the schema's variables in order; dates shifted.

    Raises:
        ClinicalValidationError: a ``mandatory`` variable is missing or invalid for some
            patient (the report attached lists every problem).
        InputError: a file cannot be read.
    """
    import pandera.pandas as pa

    if isinstance(files, (str, Path)):
        files = [files]
    files = [Path(f) for f in files]
    if not files:
        raise InputError("no clinical file given")
    deid = deidentifier or Deidentifier()
    missing = set(schema.missing_values)
    report = ValidationReport()
    parts: list[pd.DataFrame] = []
    bad_type: list[tuple[int, str, str, object]] = []  # (frame index, variable, expected, value)
    sources: dict[str, dict[str, str]] = {}  # file -> canonical -> source column

    offset = 0
    for path in files:
        try:
            raw = read_table(path)
        except InputError as err:  # one unreadable file does not stop the others
            report.issues.append(Issue(str(path), None, None, "", "", "", f"file not loaded: {err}", "", "rejected"))
            report.files.append({"file": str(path), "format": path.suffix.lstrip("."), "rows": 0, "error": str(err)})
            continue
        header = [c for c in raw.frame.columns if c not in (ROW, LINE)]
        centre = schema.centre_for_file(path, header)
        cspec = schema.centres.get(centre) if centre else None
        if cspec is not None and cspec.sheet != 0 and raw.format == "xlsx":
            raw = read_table(path, sheet=cspec.sheet)
            header = [c for c in raw.frame.columns if c not in (ROW, LINE)]
        df = raw.frame
        fname = str(path)
        rename = schema.rename_map(centre)
        src_of: dict[str, str] = {}
        for col in header:
            canon = rename.get(col)
            if canon is None:
                report.issues.append(Issue(fname, None, None, col, "", "", "column not in the schema", "", "column ignored"))
            elif canon in src_of:
                report.issues.append(Issue(fname, None, None, col, canon, "", f"second column for {canon!r} (first: {src_of[canon]!r})", "", "column ignored"))
            else:
                src_of[canon] = col
        sources[fname] = src_of
        report.files.append({
            "file": fname, "format": raw.format, "encoding": raw.encoding, "delimiter": raw.delimiter,
            "centre_spec": centre, "rows": int(len(df)), "columns": {src: canon for canon, src in src_of.items()},
        })
        n = len(df)
        out = pd.DataFrame(index=pd.RangeIndex(offset, offset + n))
        out["__file__"] = fname
        out["__row__"] = df[ROW].to_numpy()
        out["__line__"] = df[LINE].to_numpy()
        if "patient_id" not in src_of:
            problem = (f"file not loaded: no patient id column (expected {schema.patient_id.column!r}"
                       + (" or the centre's name for it" if centre else "") + f"; columns found: {header})")
            report.issues.append(Issue(fname, None, None, "", "patient_id", "", problem, "", "rejected"))
            report.files[-1]["error"] = problem
            report.n_read += len(df)
            continue
        ids = _normalise(df[src_of["patient_id"]], missing)
        out["__orig__"] = ids.to_numpy()
        # centre
        if "centre" in src_of:
            c = _normalise(df[src_of["centre"]], missing).map(lambda v: None if _is_missing(v, set()) else str(v))
            if centre is not None:
                c = c.fillna(centre)
            out["centre"] = c.to_numpy()
        else:
            out["centre"] = centre
        # variables
        date_format = (cspec.date_format if cspec and cspec.date_format else None) or schema.date_format
        decimal = cspec.decimal if cspec else "."
        for var, spec in schema.variables.items():
            if var not in src_of:
                if not (spec.required or spec.mandatory):
                    report.issues.append(Issue(fname, None, None, var, var, "", "column not found in the file", "", "set missing"))
                s = pd.Series([None] * n, dtype=object)
            else:
                s = _normalise(df[src_of[var]], missing)
                s = _apply_mapping(s, spec.mapping)
            typed, bad, expected = _convert(s.reset_index(drop=True), spec, date_format, decimal)
            for i in np.flatnonzero(bad.to_numpy()):
                bad_type.append((offset + int(i), var, expected, s.iloc[int(i)]))
            out[var] = typed.to_numpy() if spec.type != "date" else typed.to_numpy(dtype="datetime64[ns]")
            if spec.type in ("int",):
                out[var] = out[var].astype("Int64")
            elif spec.type == "bool":
                out[var] = out[var].astype("boolean")
            elif spec.type in ("str", "category"):
                out[var] = out[var].astype("string")
        parts.append(out)
        offset += n

    if not parts:
        raise InputError("no clinical file could be loaded:\n  " + "\n  ".join(i.problem for i in report.issues if i.row is None and i.action == "rejected"))
    table = pd.concat(parts) if len(parts) > 1 else parts[0]
    report.n_read += len(table)
    table["__norm__"] = table["__orig__"].map(lambda v: normalise_id(v) if isinstance(v, str) and v.strip() else None)
    table["__pseudo__"] = table["__orig__"].map(lambda v: deid.patient_id(v) if isinstance(v, str) and v.strip() else "")

    # --- pandera checks on the canonical table ---
    columns = {"__norm__": pa.Column(None, nullable=False, unique=True, checks=(
        [pa.Check.str_matches(f"(?:{schema.patient_id.pattern})$")] if schema.patient_id.pattern else []))}
    check_text: dict[tuple[str, int], str] = {}
    if schema.patient_id.pattern:
        check_text[("__norm__", 0)] = f"patient id does not match the pattern {schema.patient_id.pattern!r}"
    for var, spec in schema.variables.items():
        checks = []
        if spec.min is not None or spec.max is not None:
            lo = -np.inf if spec.min is None else spec.min
            hi = np.inf if spec.max is None else spec.max
            check_text[(var, len(checks))] = f"out of range [{'-inf' if spec.min is None else f'{spec.min:g}'}, {'inf' if spec.max is None else f'{spec.max:g}'}]" + (f" {spec.unit}" if spec.unit else "")
            checks.append(pa.Check.in_range(lo, hi))
        allowed = spec.allowed_values()
        if allowed is not None and spec.type in ("str", "category"):
            allowed = [str(a) for a in allowed]  # text columns compare as text ("1" == 1)
        if allowed is not None:
            check_text[(var, len(checks))] = f"not an allowed value (allowed: {', '.join(map(str, allowed))})"
            checks.append(pa.Check.isin(allowed))
        columns[var] = pa.Column(None, nullable=not (spec.required or spec.mandatory), checks=checks)
    failures = pd.DataFrame(columns=["column", "check", "check_number", "index"])
    try:
        pa.DataFrameSchema(columns).validate(table, lazy=True)
    except pa.errors.SchemaErrors as err:
        failures = err.failure_cases
        if failures["index"].isna().any():  # dataframe-level failures (should not happen)
            raise InputError(f"clinical schema check failed: {failures[failures['index'].isna()].to_dict('records')}") from None

    def file_loc(i: int) -> tuple[str, int | None, int | None, str]:
        r = table.loc[i]
        line = r["__line__"]
        return r["__file__"], int(r["__row__"]), (None if pd.isna(line) else int(line)), r["__pseudo__"]

    rejected: set[int] = set()
    set_missing: list[tuple[int, str]] = []
    type_reported = {(i, var) for i, var, _, _ in bad_type}

    def act(i: int, var: str, problem: str, value) -> None:
        f, row, line, pseudo = file_loc(i)
        if var == "__norm__":
            column, canon, action = sources[f].get("patient_id", "patient_id"), "patient_id", "rejected"
            value = REDACTED
        else:
            spec = schema.variables[var]
            column, canon = sources[f].get(var, var), var
            if spec.mandatory:
                action = "load aborted"
            elif spec.required or spec.on_invalid == "reject_row":
                action = "rejected"
            else:
                action = "set missing"
            if spec.type == "date" and value not in (None, ""):
                value = REDACTED
            elif spec.age and deid.enabled and value not in (None, ""):
                value = _capped_age_text(value, deid.settings.max_age)
        if action in ("rejected", "load aborted"):
            rejected.add(i)
        elif action == "set missing":
            set_missing.append((i, var))
        report.issues.append(Issue(f, row, line, column, canon, pseudo, problem, "" if value is None else str(value), action))

    for i, var, expected, value in bad_type:
        act(i, var, f"wrong type: expected {expected}", value)
    dup_rows: dict[str, list[int]] = {}
    for rec in failures.itertuples(index=False):
        i, col, check = int(rec.index), rec.column, str(rec.check)
        if check == "not_nullable":
            if (i, col) in type_reported:
                continue
            if col == "__norm__":
                act(i, col, "missing patient id", None)
            else:
                spec = schema.variables[col]
                act(i, col, "missing value (" + ("mandatory for every patient" if spec.mandatory else "required") + ")", None)
        elif check == "field_uniqueness":
            dup_rows.setdefault(table.loc[i, "__norm__"], []).append(i)
        else:
            num = rec.check_number
            text = check_text.get((col, int(num)) if num is not None and not pd.isna(num) else (col, -1), check)
            act(i, col, text, table.loc[i, col] if col != "__norm__" else None)
    # duplicated ids: every copy is rejected (which one is right cannot be known)
    for norm, rows in dup_rows.items():
        rows = sorted(set(table.index[table["__norm__"] == norm]))
        for i in rows:
            others = ", ".join(
                f"{Path(file_loc(j)[0]).name} row {file_loc(j)[1]}" for j in rows if j != i
            )
            act(i, "__norm__", f"duplicated patient id (also in {others})", None)

    # --- apply the actions ---
    for i, var in set_missing:
        if i not in rejected:
            table.loc[i, var] = None
    kept = table.loc[~table.index.isin(sorted(rejected))].copy()

    # ages capped, dates shifted with the original id, ids pseudonymised
    for var, spec in schema.variables.items():
        if spec.age and spec.type in ("float", "int"):
            cap = float(deid.settings.max_age)
            over = kept[var].notna() & (kept[var].astype(float) > cap) if deid.enabled else pd.Series(False, index=kept.index)
            for i in kept.index[over.to_numpy(dtype=bool)]:
                f, row, line, pseudo = file_loc(i)
                report.issues.append(Issue(f, row, line, sources[f].get(var, var), var, pseudo,
                                           f"age above {deid.settings.max_age}", f">{deid.settings.max_age}", "capped"))
                kept.loc[i, var] = deid.age(float(kept.loc[i, var]))
        if spec.type == "date" and deid.enabled:
            kept[var] = [
                pd.NaT if pd.isna(v) else pd.Timestamp(deid.date(pd.Timestamp(v).date(), orig))
                for v, orig in zip(kept[var], kept["__orig__"])
            ]
            kept[var] = pd.to_datetime(kept[var])
    if known_patients is not None:
        known = set(known_patients)
        for i in kept.index[~kept["__pseudo__"].isin(known)]:
            f, row, line, pseudo = file_loc(i)
            report.issues.append(Issue(f, row, line, sources[f].get("patient_id", "patient_id"), "patient_id", pseudo,
                                       "patient not in the imaging cohort (no features)", REDACTED, "kept"))
    kept["patient_id"] = kept["__pseudo__"].astype("string")
    kept["centre"] = kept["centre"].astype("string")
    result = kept[schema.canonical_columns()].reset_index(drop=True)
    report.n_kept = len(result)
    order = {str(f): k for k, f in enumerate(files)}
    report.issues.sort(key=lambda x: (order.get(x.file, 0), -1 if x.row is None else x.row, x.column))
    if report.aborted:
        bad = [i for i in report.issues if i.action == "load aborted"]
        lines = "\n".join(
            f"  {i.file} row {i.row}" + (f" (line {i.line})" if i.line else "") + f", column {i.column!r}: {i.problem}"
            for i in bad[:20]
        )
        raise ClinicalValidationError(
            f"clinical load aborted: {len(bad)} problem(s) with variables mandatory for every patient:\n{lines}", report
        )
    return result, report
