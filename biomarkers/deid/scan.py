"""Leak scanners: search outputs for identifying values.

Two tools:

* :func:`scan_files` / :func:`scan_mlflow` look for *known* original values (the
  needles: names, ids, dates written into a test's or a site's input) in every
  byte of every output file, in common renderings (:func:`identifying_variants`),
  case-insensitively, inside ``.gz`` and ``.zip`` files decompressed, and inside
  Parquet and SQLite files also in the decoded table content (strings there may be
  dictionary-encoded, compressed, or stored as typed dates).
* :func:`find_identifying_values` is a heuristic for tables whose originals are not
  known (release checks): DICOM-style person names, calendar dates, ids that are not
  pseudonyms, e-mail addresses and phone numbers.

Hits and findings never repeat the identifying value in their ``reason`` beyond the
needle's label (what was searched for is known to the caller).
"""

from __future__ import annotations

import gzip
import io
import re
import sqlite3
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Literal, Mapping

from .dates import parse_date
from .keys import pseudonym_pattern as _pseudonym_pattern
from .normalise import Matcher, fold_key

Kind = Literal["name", "id", "date", "text", "institution"]
#: Blobs up to this size are also decoded (UTF-8, Latin-1, UTF-16) and searched normalised (accents folded).
FOLD_DECODED_MAX_BYTES = 4 << 20
_COMPACT_DROP = re.compile(rb"[^a-z0-9\n]+")
_COMPACT_TRANSLIT = re.compile(rb"(?<=[aou])e")

#: Name parts shorter than this are not searched on their own (too many chance matches in binary data).
MIN_PART_LEN = 6


# ----------------------------------------------------------------------------- variants


def _name_parts(value: str) -> list[str]:
    """Components of a person name given as ``Last^First^Middle``, ``Last, First`` or ``First Last``."""
    v = value.strip()
    if "^" in v:
        parts = [p.strip() for p in v.split("^")]
        return [p for p in parts if p]
    if "," in v:
        last, _, first = v.partition(",")
        return [p for p in (last.strip(), *first.split()) if p]
    words = v.split()
    if len(words) >= 2:  # "First [Middle] Last" -> Last first, DICOM order
        return [words[-1], *words[:-1]]
    return words


def identifying_variants(value: str, kind: Kind = "text") -> set[str]:
    """Renderings of an identifying value to search for.

    Every kind: the value as-is, upper and lower case. ``name``: DICOM ``Last^First``
    (and with ``^`` for a middle name), ``Last, First``, ``First Last``, ``Last First``,
    ``LAST^FIRST`` ..., plus each name part of at least 6 characters. ``date``: ISO
    ``YYYY-MM-DD``, DICOM ``YYYYMMDD``, ``DD.MM.YYYY``, ``DD/MM/YYYY``, ``MM/DD/YYYY``,
    ``YYYY/MM/DD``. ``id``: also without separators (``MRN-0042`` -> ``MRN0042``).
    """
    v = str(value).strip()
    if not v:
        return set()
    out = {v}
    if kind == "name":
        parts = _name_parts(v)
        if len(parts) >= 2:
            last, first, rest = parts[0], parts[1], parts[2:]
            out |= {
                "^".join(parts),
                f"{last}^{first}",
                f"{last}, {first}",
                f"{last},{first}",
                f"{first} {last}",
                f"{last} {first}",
                " ".join([first, *rest, last]),
            }
        out |= {p for p in parts if len(p) >= MIN_PART_LEN}
    elif kind == "date":
        d = parse_date(v)
        if d is not None:
            out |= {
                d.isoformat(),
                d.strftime("%Y%m%d"),
                d.strftime("%d.%m.%Y"),
                d.strftime("%d/%m/%Y"),
                d.strftime("%m/%d/%Y"),
                d.strftime("%Y/%m/%d"),
            }
    elif kind == "id":
        compact = re.sub(r"[\s\-_./]", "", v)
        if len(compact) >= 4:
            out.add(compact)
    out |= {s.upper() for s in list(out)} | {s.lower() for s in list(out)}
    return {s for s in out if s}


def _guess_kind(label: str, value: str) -> Kind:
    low = label.lower()
    if "date" in low or "birth" in low or "dob" in low or parse_date(value) is not None and re.fullmatch(
        r"\d{8}|\d{4}-\d{2}-\d{2}|\d{1,2}[./]\d{1,2}[./]\d{4}", value.strip()
    ):
        return "date"
    if "institution" in low or "hospital" in low or "site" in low:
        return "institution"
    if "name" in low or "physician" in low or "^" in value:
        return "name"
    if "id" in low or "number" in low or "accession" in low or "mrn" in low:
        return "id"
    return "text"


class _Needles:
    """Compiled needles. ASCII variants are searched inside the printable-ASCII runs of the data
    (and of its UTF-16-LE rendering), which is exact -- an ASCII needle can only occur inside
    such a run -- and much faster than searching every byte of voxel data; other variants
    (non-ASCII names) are searched as-is (each case variant) in all bytes, encoded in UTF-8,
    Latin-1 (DICOM ISO_IR 100) and UTF-16-LE."""

    def __init__(self, needles: Mapping[str, object]):
        ascii_: set[tuple[str, bytes]] = set()
        other: set[tuple[str, bytes]] = set()
        matcher = Matcher()  # the normalised keys (biomarkers.deid.normalise: the sidecar filter's too)
        for label, spec in needles.items():
            if isinstance(spec, (tuple, list)):
                value, kind = str(spec[0]), spec[1]
            else:
                value, kind = str(spec), _guess_kind(label, str(spec))
            matcher.add(label, value, kind)
            for variant in identifying_variants(value, kind):
                low = variant.lower()
                if low.isascii() and low.isprintable():
                    ascii_.add((label, low.encode("ascii")))
                else:  # case variants are in the set already; search each as-is in every encoding
                    for enc in ("utf-8", "latin-1", "utf-16-le"):
                        try:
                            other.add((label, variant.encode(enc)))
                        except UnicodeEncodeError:
                            pass
        self.ascii = sorted(ascii_)
        self.other = sorted(other)
        #: normalised keys searched in the separator-free, accent-folded text (names: each component)
        self.compact = sorted({(lb, k.encode()) for lb, k in matcher.keys + matcher.dates if len(k) >= MIN_PART_LEN})
        self.min_len = min((len(b) for _, b in self.ascii), default=1)

    def __len__(self) -> int:
        return len(self.ascii) + len(self.other) + len(self.compact)

    def _runs(self, data: bytes):
        """Yield (text, offsets) for the printable-ASCII runs of ``data`` as bytes and as
        UTF-16-LE (both alignments): ``text`` joins the lower-cased runs with newlines,
        ``offsets`` maps positions in ``text`` back to byte offsets in ``data``."""
        import numpy as np

        views = [(np.frombuffer(data, dtype=np.uint8), 0, 1)]
        for align in (0, 1):
            k = (len(data) - align) // 2
            if k >= self.min_len:
                views.append((np.frombuffer(data, dtype="<u2", count=k, offset=align), align, 2))
        k = max(1, min(self.min_len, 8))  # runs of >= k characters: a superset of the runs a needle fits in
        for codes, align, width in views:
            m = (codes >= 0x20) & (codes <= 0x7E)
            n = len(m)
            if n < k:
                continue
            w = m[: n - k + 1].copy()  # w[t]: m[t : t + k] all printable
            for sh in range(1, k):
                w &= m[sh : n - k + 1 + sh]
            if not w.any():
                continue
            keep = np.zeros(n + 1, dtype=bool)  # characters inside a run of >= k
            for sh in range(k):
                keep[sh : sh + len(w)] |= w
            d = np.diff(keep.view(np.int8), prepend=np.int8(0))
            starts, ends = np.flatnonzero(d == 1), np.flatnonzero(d == -1)
            keep[ends] = True  # one newline after each run
            chars = np.empty(n + 1, dtype=np.uint8)
            chars[:n] = codes  # printable codes fit in a byte; others are dropped below
            chars[ends] = 10
            text = chars[keep].tobytes().lower()
            pos = np.concatenate(([0], np.cumsum((ends - starts) + 1)[:-1]))
            yield text, pos, starts * width + align, width

    def search(self, data: bytes, path: str, layer: str, hits: list[Hit]) -> None:
        import numpy as np

        seen: set[tuple[str, bytes]] = set()
        for text, pos, byte_starts, width in self._runs(data):
            for label, needle in self.ascii:
                if (label, needle) in seen:
                    continue
                i = text.find(needle)
                if i >= 0:
                    seen.add((label, needle))
                    j = int(np.searchsorted(pos, i, side="right")) - 1
                    offset = int(byte_starts[j]) + (i - int(pos[j])) * width
                    hits.append(Hit(label, path, layer if width == 1 else f"{layer}/utf-16", offset, needle.decode()))
            if self.compact:  # normalised: separators dropped, ae/oe/ue -> a/o/u (fold_key on each run)
                compact = _COMPACT_TRANSLIT.sub(b"", _COMPACT_DROP.sub(b"", text))
                for label, needle in self.compact:
                    if (label, needle) not in seen and needle in compact:
                        seen.add((label, needle))
                        hits.append(Hit(label, path, f"{layer}/normalised", int(byte_starts[0]) if len(byte_starts) else 0,
                                        needle.decode()))
        if self.compact and len(data) <= FOLD_DECODED_MAX_BYTES:  # accented renderings, folded to ASCII
            for enc in ("utf-8", "latin-1", "utf-16-le"):
                key = fold_key(data.decode(enc, "ignore")).encode()
                for label, needle in self.compact:
                    if (label, needle) not in seen and needle in key:
                        seen.add((label, needle))
                        hits.append(Hit(label, path, f"{layer}/{enc}-folded", 0, needle.decode()))
        if self.other:
            for label, needle in self.other:
                i = data.find(needle)
                if i >= 0:
                    hits.append(Hit(label, path, layer, i, needle.decode("utf-8", "replace")))


# ----------------------------------------------------------------------------- file scanning


@dataclass(frozen=True)
class Hit:
    """A needle found in an output: which needle (label), where (file, layer, offset)."""

    label: str
    path: str
    layer: str  # "name" (the file path), "raw", "gunzip", "zip:<member>", "parquet-table", "sqlite-table"
    offset: int
    variant: str

    def __str__(self) -> str:
        return f"{self.path} [{self.layer} @ {self.offset}]: {self.label} ({self.variant!r})"


def _find_all(data: bytes, table: "_Needles", path: str, layer: str, hits: list[Hit]) -> None:
    table.search(data, path, layer, hits)


def _parquet_text(data: bytes) -> bytes:
    import pyarrow.parquet as pq

    t = pq.read_table(io.BytesIO(data))
    buf = io.StringIO()
    buf.write("\t".join(t.column_names) + "\n")
    meta = t.schema.metadata or {}
    for k, v in meta.items():
        buf.write(f"{k!r}={v!r}\n")
    for name in t.column_names:
        col = t.column(name).to_pylist()
        buf.write(name + "\n")
        buf.write("\n".join("" if x is None else _render(x) for x in col))
        buf.write("\n")
    return buf.getvalue().encode("utf-8", "replace")


def _render(x) -> str:
    """Text rendering of a cell: dates in ISO form (so typed dates are found by their ISO variant)."""
    import datetime as dt

    if isinstance(x, (dt.date, dt.datetime)):
        return x.isoformat()
    if isinstance(x, bytes):
        return x.decode("latin-1")
    return str(x)


def _sqlite_text(path: Path) -> bytes:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        buf = io.StringIO()
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for t in tables:
            buf.write(f"#{t}\n")
            for row in con.execute(f'SELECT * FROM "{t}"'):
                buf.write("\t".join("" if x is None else _render(x) for x in row) + "\n")
        return buf.getvalue().encode("utf-8", "replace")
    finally:
        con.close()


def _scan_blob(data: bytes, name: str, table, rel: str, layer: str, hits: list[Hit], depth: int = 0) -> None:
    _find_all(data, table, rel, layer, hits)
    if depth > 2:
        return
    lname = name.lower()
    if data[:2] == b"\x1f\x8b":
        try:
            inner = gzip.decompress(data)
        except (OSError, EOFError, zlib.error):
            inner = None
        if inner is not None:
            _scan_blob(inner, lname[:-3] if lname.endswith(".gz") else lname, table, rel, "gunzip", hits, depth + 1)
    elif data[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                for member in z.namelist():
                    _find_all(member.encode(), table, rel, f"zip-name:{member}", hits)
                    _scan_blob(z.read(member), member, table, rel, f"zip:{member}", hits, depth + 1)
        except (zipfile.BadZipFile, OSError, zlib.error):
            pass
    elif data[:4] == b"PAR1" and data[-4:] == b"PAR1":
        try:
            _find_all(_parquet_text(data), table, rel, "parquet-table", hits)
        except Exception as err:  # noqa: BLE001 - an unreadable parquet is itself reported
            hits.append(Hit("<unreadable parquet>", rel, "parquet-table", 0, type(err).__name__))


def _iter_files(paths: Iterable[str | Path]) -> Iterable[tuple[Path, str]]:
    for p in paths:
        p = Path(p)
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.is_file() and not f.is_symlink():
                    yield f, str(f.relative_to(p.parent))
        elif p.is_file():
            yield p, p.name
        else:
            raise FileNotFoundError(f"{p}: nothing to scan (no such file or folder)")


def scan_files(paths: Iterable[str | Path] | str | Path, needles: Mapping[str, object]) -> list[Hit]:
    """Search every file under ``paths`` (files or folders, recursively) for the needles.

    Args:
        paths: files and/or folders.
        needles: label -> value (kind guessed from label/value) or label -> (value, kind),
            kind one of ``name``, ``id``, ``date``, ``text``.

    Every variant of every needle (:func:`identifying_variants`) is searched
    case-insensitively in UTF-8 and UTF-16-LE in: the file's path (relative to the
    scanned folder's parent), its raw bytes, its gunzipped bytes (``.gz``, ``.nii.gz``),
    zip members, the decoded table of Parquet files and the rows of SQLite databases.

    Returns:
        one :class:`Hit` per (needle variant, file, layer); empty when nothing leaked.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    table = _Needles(needles)
    hits: list[Hit] = []
    for f, rel in _iter_files(paths):
        _find_all(rel.encode("utf-8"), table, rel, "name", hits)
        data = f.read_bytes()
        _scan_blob(data, f.name, table, rel, "raw", hits)
        if data[:16] == b"SQLite format 3\x00":
            try:
                _find_all(_sqlite_text(f), table, rel, "sqlite-table", hits)
            except sqlite3.Error as err:
                hits.append(Hit("<unreadable sqlite>", rel, "sqlite-table", 0, str(err)))
    return hits


def _local_path(uri: str) -> Path | None:
    if uri.startswith("file://"):
        from urllib.parse import unquote, urlparse

        return Path(unquote(urlparse(uri).path))
    if "://" not in uri and ":" not in uri[1:3]:
        return Path(uri)
    return None


def scan_mlflow(store: str | Path, needles: Mapping[str, object]) -> list[Hit]:
    """Scan an MLflow store: ``sqlite:///path/mlflow.db`` (the database file, its
    journal/WAL files and every local artifact location it names) or a folder (a file
    store such as ``mlruns/``, or a folder holding ``mlflow.db`` and artifacts).

    Artifact locations that are not local folders (``s3://``, ``mlflow-artifacts:/``...)
    cannot be scanned here; each is returned as a Hit labelled ``<artifact store not scanned>``
    so that a check never passes without having looked."""
    s = str(store)
    targets: list[Path] = []
    if s.startswith("sqlite:"):
        db = Path(s.split("sqlite:///", 1)[1] if "sqlite:///" in s else s.split("sqlite:", 1)[1])
        if not db.is_file():
            raise FileNotFoundError(f"{db}: MLflow database not found")
        targets.append(db)
        targets += [Path(str(db) + suf) for suf in ("-wal", "-journal", "-shm") if Path(str(db) + suf).is_file()]
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            locs = [r[0] for r in con.execute("SELECT artifact_location FROM experiments")]
            try:
                locs += [r[0] for r in con.execute("SELECT artifact_uri FROM runs")]
            except sqlite3.Error:
                pass
        finally:
            con.close()
        unreachable = sorted({u for u in locs if u and _local_path(u) is None})
        dirs = {p for p in (_local_path(u) for u in locs if u) if p is not None and p.exists()}
        # keep only top-most folders (run artifact folders lie inside experiment folders)
        for d in sorted(dirs, key=lambda p: len(p.parts)):
            if not any(t in d.parents or t == d for t in targets):
                targets.append(d)
    else:
        unreachable = []
        p = _local_path(s)
        if p is None or not p.exists():
            raise FileNotFoundError(f"{store}: MLflow store not found")
        targets.append(p)
    # an artifact store that cannot be read here (s3://, mlflow-artifacts:/...) is not clean: say so
    return scan_files(targets, needles) + [Hit("<artifact store not scanned>", u, "mlflow", 0, "") for u in unreachable]


# ----------------------------------------------------------------------------- table heuristics


@dataclass(frozen=True)
class Finding:
    """A cell of a table that looks identifying (the value itself is not repeated)."""

    column: str
    row: int  # position (0-based), not the index label
    value_kind: str  # "person_name" | "date" | "id" | "uid" | "email" | "phone"
    reason: str


_DICOM_NAME = re.compile(r"^[^\W\d_][\w'\-. ]*\^[^\W\d_][\w'\-. ]*(\^.*)?$")
_EMAIL = re.compile(r"[\w.+\-]+@[\w\-]+\.[\w.\-]+")
_PHONE = re.compile(r"(?<![\w.])(\+\d{1,3}[ \-]?)?(\(\d{2,5}\)[ \-]?)?\d{2,5}([ \-/]\d{2,8}){1,4}(?![\w.])")
_DATE_TEXT = re.compile(r"^\s*(\d{4}-\d{2}-\d{2}([T ][\d:.]+)?|\d{8}|\d{1,2}[./]\d{1,2}[./]\d{4}|\d{4}/\d{2}/\d{2})\s*$")
_PSEUDONYM = _pseudonym_pattern()
_UID = re.compile(r"^[0-9]+(\.[0-9]+)+$")
_ID_COLUMN = re.compile(r"(^|_)(patient|subject|pid|mrn|accession|person|case)(_?id|_?number|_?no)?($|_)|(^|_)id$", re.I)
_UID_COLUMN = re.compile(r"uid$", re.I)
_DATE_COLUMN = re.compile(r"date|dob|birth|(^|_)dt($|_)|time_?stamp", re.I)


def _is_real_date_text(s: str) -> bool:
    if not _DATE_TEXT.match(s):
        return False
    d = parse_date(s)
    if d is None and "/" in s:  # YYYY/MM/DD or MM/DD/YYYY
        try:
            import datetime as dt

            parts = s.strip().split("/")
            d = dt.date(int(parts[0]), int(parts[1]), int(parts[2])) if len(parts[0]) == 4 else dt.date(
                int(parts[2]), int(parts[0]), int(parts[1])
            )
        except (ValueError, IndexError):
            d = None
    return d is not None and 1880 <= d.year <= 2100


def find_identifying_values(
    df,
    *,
    pseudonym_pattern: str | re.Pattern | None = None,
    uid_root: str | None = "2.25",
    id_columns: Iterable[str] | None = None,
    max_per_column: int = 20,
    value_columns: Iterable[str] = (),
) -> list[Finding]:
    """Heuristic scan of a table (pandas DataFrame) for identifying values.

    Flags, per cell:

    * ``person_name``: DICOM-style names ``Last^First`` in any text column;
    * ``date``: any real-looking calendar date (ISO, DICOM ``YYYYMMDD``, ``DD.MM.YYYY``,
      ``DD/MM/YYYY``, ``YYYY/MM/DD``) in a text column, every value of a date/datetime
      typed column, and ``YYYYMMDD`` integers in columns named like dates -- release
      tables carry intervals (days), not dates;
    * ``id``: values of id-like columns (``patient_id``, ``subject``, ``mrn``, ``*_id``...
      or ``id_columns``) that are not pseudonyms (``PREFIX-`` + 12 base32 characters, or
      ``pseudonym_pattern``);
    * ``uid``: values of ``*uid`` columns that are not UIDs under ``uid_root`` (None: skip);
    * ``email`` / ``phone``: e-mail addresses and phone-number-like text in text columns.

    Numeric feature columns are not inspected (except date-named integer columns); ``value_columns``
    (radiomics values, :func:`biomarkers.features.naming.value_columns`) are never inspected.
    At most ``max_per_column`` findings are returned per column and kind.
    """
    import datetime as dt

    import pandas as pd

    pseudo = re.compile(pseudonym_pattern) if isinstance(pseudonym_pattern, str) else (pseudonym_pattern or _PSEUDONYM)
    id_cols = set(id_columns or ())
    findings: list[Finding] = []
    skip = set(value_columns)
    for col in df.columns:
        name = str(col)
        if name in skip:
            continue
        s = df[col]
        counts: dict[str, int] = {}

        def add(row: int, kind: str, reason: str) -> None:
            if counts.get(kind, 0) < max_per_column:
                findings.append(Finding(name, int(row), kind, f"{name}: {reason}"))
            counts[kind] = counts.get(kind, 0) + 1

        if pd.api.types.is_datetime64_any_dtype(s):
            for i in range(len(s)):
                if not pd.isna(s.iloc[i]):
                    add(i, "date", "date/time value (release tables carry intervals, not dates)")
            continue
        if pd.api.types.is_bool_dtype(s):
            continue
        if pd.api.types.is_numeric_dtype(s):
            if _DATE_COLUMN.search(name):
                for i, v in enumerate(s.tolist()):
                    if v is not None and not pd.isna(v) and float(v).is_integer() and _is_real_date_text(str(int(v))):
                        add(i, "date", "YYYYMMDD-like number in a date column")
            if name in id_cols or _ID_COLUMN.search(name):
                for i, v in enumerate(s.tolist()):
                    if v is not None and not pd.isna(v):
                        add(i, "id", "numeric value in an id column (not a pseudonym)")
            continue
        is_id = name in id_cols or bool(_ID_COLUMN.search(name))
        is_uid = bool(_UID_COLUMN.search(name))
        for i, v in enumerate(s.tolist()):
            if v is None or v is pd.NA or v is pd.NaT or (isinstance(v, float) and v != v):
                continue
            if isinstance(v, (dt.date, dt.datetime, pd.Timestamp)):
                add(i, "date", "date value (release tables carry intervals, not dates)")
                continue
            t = v if isinstance(v, str) else str(v)
            if not t.strip():
                continue
            if is_uid:
                if uid_root and not (_UID.match(t) and t.startswith(uid_root + ".")):
                    add(i, "uid", f"not a pseudonymised UID under {uid_root}")
                continue
            if is_id and not pseudo.match(t):
                add(i, "id", "value in an id column is not a pseudonym")
            if _DICOM_NAME.match(t.strip()):
                add(i, "person_name", "DICOM-style person name (A^B)")
            if _is_real_date_text(t):
                add(
                    i,
                    "date",
                    "calendar date in a date column" if _DATE_COLUMN.search(name) else "calendar date in a non-date column",
                )
            if _EMAIL.search(t):
                add(i, "email", "e-mail address")
            m = _PHONE.search(t)
            if m and sum(c.isdigit() for c in m.group(0)) >= 9 and not _is_real_date_text(m.group(0)):
                add(i, "phone", "phone-number-like text")
    return findings
