"""Reading clinical exports: CSV (any delimiter, any common encoding), Excel (.xlsx), Parquet.

Every reader returns the raw table with all values as read (CSV: text) and two
bookkeeping columns used for the validation report:

* ``__row__``: 1-based data row number (the first row under the header is 1);
* ``__line__``: the row as a user sees it in a spreadsheet or text editor
  (the header is line 1, so the first data row is line 2); missing for Parquet.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..errors import InputError

ROW = "__row__"
LINE = "__line__"
DELIMITERS = [",", ";", "\t", "|"]


@dataclass
class RawTable:
    path: Path
    frame: pd.DataFrame  # source columns + ROW + LINE
    format: str  # csv | xlsx | parquet
    encoding: str | None = None
    delimiter: str | None = None


def decode_bytes(data: bytes) -> tuple[str, str]:
    """Decode a text export: UTF-16 (with BOM), UTF-8 (with or without BOM), then cp1252, then charset-normalizer's guess.

    Returns (text, encoding name). Latin-1 is the last resort (it decodes any byte).
    """
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):  # Excel "Unicode text" exports
        return data.decode("utf-16"), "utf-16"
    for enc in ("utf-8-sig", "cp1252"):
        try:
            text = data.decode(enc)
            return text, ("utf-8" if enc == "utf-8-sig" and not data.startswith(b"\xef\xbb\xbf") else enc)
        except UnicodeDecodeError:
            continue
    try:
        from charset_normalizer import from_bytes

        best = from_bytes(data).best()
        if best is not None:
            return str(best), best.encoding
    except ImportError:  # pragma: no cover - charset-normalizer is a dependency of requests
        pass
    return data.decode("latin-1"), "latin-1"


def sniff_delimiter(text: str) -> str:
    """The field delimiter of a CSV text (csv.Sniffer on the first lines, else the most frequent)."""
    sample = "\n".join(text.splitlines()[:50])
    try:
        return csv.Sniffer().sniff(sample, delimiters="".join(DELIMITERS)).delimiter
    except csv.Error:
        header = text.splitlines()[0] if text else ""
        counts = {d: header.count(d) for d in DELIMITERS}
        return max(counts, key=counts.get) if any(counts.values()) else ","


def read_table(path: str | Path, sheet: str | int = 0) -> RawTable:
    """Read one clinical export (.csv/.tsv/.txt, .xlsx, .parquet)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: clinical file not found")
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".tsv", ".txt"):
            text, encoding = decode_bytes(path.read_bytes())
            if not text.strip():
                raise InputError(f"{path}: empty file")
            delim = sniff_delimiter(text)
            df = pd.read_csv(
                io.StringIO(text), sep=delim, dtype=str, keep_default_na=False, skip_blank_lines=False,
                skipinitialspace=True,
            )
            df.columns = [str(c).strip() for c in df.columns]
            df[LINE] = pd.array(range(2, len(df) + 2), dtype="Int64")
            raw = RawTable(path, df, "csv", encoding, delim)
        elif suffix in (".xlsx", ".xlsm"):
            df = pd.read_excel(path, sheet_name=sheet, dtype=object, engine="openpyxl", keep_default_na=False)
            df.columns = [str(c).strip() for c in df.columns]
            df[LINE] = pd.array(range(2, len(df) + 2), dtype="Int64")
            raw = RawTable(path, df, "xlsx")
        elif suffix == ".parquet":
            df = pd.read_parquet(path)
            df.columns = [str(c).strip() for c in df.columns]
            df[LINE] = pd.array([None] * len(df), dtype="Int64")
            raw = RawTable(path, df, "parquet")
        else:
            raise InputError(f"{path}: unsupported clinical file type {suffix!r} (use .csv, .xlsx or .parquet)")
    except InputError:
        raise
    except Exception as err:  # parser errors: name the file
        raise InputError(f"{path}: cannot read clinical table ({type(err).__name__}: {err})") from None
    df = raw.frame
    df.insert(0, ROW, pd.array(range(1, len(df) + 1), dtype="Int64"))
    # completely empty rows (blank lines, empty spreadsheet rows) carry no data
    data_cols = [c for c in df.columns if c not in (ROW, LINE)]
    empty = df[data_cols].map(lambda v: v is None or (isinstance(v, float) and v != v) or str(v).strip() == "").all(axis=1)
    raw.frame = df.loc[~empty].reset_index(drop=True)
    return raw
