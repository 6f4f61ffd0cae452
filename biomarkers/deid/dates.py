"""Dates and ages: parsing DICOM/ISO/EU renderings, shifting, year-only reduction, age caps.

The one parser of DICOM ``DA``/``TM``/``DT`` values (:func:`parse_date`, :func:`parse_time`,
:func:`parse_datetime`; PET decay times use them too).

Pure functions. Dates are calendar dates without time zone; DICOM ``DA`` is
``YYYYMMDD``, ``DT`` is ``YYYYMMDDHHMMSS.FFFFFF&ZZXX`` (any suffix after the date
is kept unchanged when shifting, so times of day are preserved).
"""

from __future__ import annotations

import datetime as dt
import re

#: The day used for every date in ``dates: year`` mode (mid-year: at most ~6 months off).
YEAR_ONLY_MONTH_DAY = (7, 1)

_DICOM_DA = re.compile(r"^(\d{4})(\d{2})(\d{2})")
_ACR_NEMA = re.compile(r"^(\d{4})\.(\d{2})\.(\d{2})")
_ISO = re.compile(r"^(\d{4})-(\d{2})-(\d{2})")
_EU = re.compile(r"^(\d{1,2})[./](\d{1,2})[./](\d{4})$")
_AGE = re.compile(r"^(\d{1,3})([DWMY])$")


def parse_date(value: object) -> dt.date | None:
    """A calendar date from ``date``/``datetime``/pandas Timestamp, DICOM ``YYYYMMDD[...]``
    (ACR-NEMA ``YYYY.MM.DD``), ISO ``YYYY-MM-DD[...]`` or European ``DD.MM.YYYY`` / ``DD/MM/YYYY``;
    None if not a date."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if hasattr(value, "to_pydatetime"):
        try:
            return value.to_pydatetime().date()
        except (ValueError, TypeError):
            return None
    s = str(value).strip()
    for rx, order in ((_DICOM_DA, "ymd"), (_ACR_NEMA, "ymd"), (_ISO, "ymd"), (_EU, "dmy")):
        m = rx.match(s)
        if m:
            a, b, c = (int(g) for g in m.groups())
            y, mo, d = (a, b, c) if order == "ymd" else (c, b, a)
            try:
                return dt.date(y, mo, d)
            except ValueError:
                return None
    return None


def parse_time(tm: str) -> dt.time | None:
    """A DICOM ``TM`` value (``HHMMSS.FFFFFF``, parts optional; ACR-NEMA ``HH:MM:SS``); None if empty."""
    s = str(tm or "").strip()
    if not s:
        return None
    if ":" in s:  # ACR-NEMA style
        s = s.replace(":", "")
    frac = 0.0
    if "." in s:
        s, f = s.split(".", 1)
        frac = float("0." + (f or "0"))
    s = s.ljust(6, "0")
    h, m, sec = int(s[0:2]), int(s[2:4]), int(s[4:6])
    return dt.time(h, m, sec, int(round(frac * 1e6)) if frac < 1 else 999999)


def parse_datetime(v: str) -> dt.datetime | None:
    """A DICOM ``DT`` value (``YYYYMMDDHHMMSS.FFFFFF``; a UTC offset is dropped: same-site times)."""
    s = str(v or "").strip()
    if not s:
        return None
    for sign in ("+", "-"):
        if sign in s[8:]:
            s = s[: 8 + s[8:].index(sign)]
    d = parse_date(s[:8])
    if d is None:
        return None
    t = parse_time(s[8:]) if len(s) > 8 else dt.time(0, 0)
    return dt.datetime.combine(d, t)


def shift_dicom_date(value: str, offset_days: int) -> str:
    """Shift a DICOM ``DA`` or ``DT`` string by ``offset_days`` (the time part is kept).

    Empty values stay empty. Raises ValueError for a value that is not a DICOM date.
    """
    s = str(value or "").strip()
    if not s:
        return ""
    m = _DICOM_DA.match(s)
    if not m:
        raise ValueError(f"not a DICOM date: {s!r}")
    d = dt.date(*(int(g) for g in m.groups())) + dt.timedelta(days=int(offset_days))
    return d.strftime("%Y%m%d") + s[8:]


def year_only_dicom_date(value: str) -> str:
    """Reduce a DICOM ``DA``/``DT`` string to its year (``YYYY0701``, time dropped)."""
    s = str(value or "").strip()
    if not s:
        return ""
    if not _DICOM_DA.match(s):
        raise ValueError(f"not a DICOM date: {s!r}")
    return f"{s[:4]}{YEAR_ONLY_MONTH_DAY[0]:02d}{YEAR_ONLY_MONTH_DAY[1]:02d}"


def age_years(value: object) -> float | None:
    """Age in years from a number or a DICOM ``AS`` string (``093Y``, ``006M``, ``010W``, ``012D``)."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        return float(value)
    s = str(value).strip().upper()
    m = _AGE.match(s)
    if m:
        n, unit = int(m.group(1)), m.group(2)
        return n / {"Y": 1.0, "M": 12.0, "W": 365.25 / 7, "D": 365.25}[unit]
    try:
        return float(s)
    except ValueError:
        return None


def cap_age(value: object, max_age: int = 89):
    """Cap an age at ``max_age`` years (HIPAA: ages above 89 are aggregated).

    Numbers come back as float; DICOM ``AS`` strings as ``AS`` strings (``093Y`` ->
    ``089Y``); unparseable values as None (dropped).
    """
    years = age_years(value)
    if years is None:
        return None
    if isinstance(value, (int, float)):
        return min(float(value), float(max_age))
    if years > max_age:
        return f"{int(max_age):03d}Y"
    return str(value).strip().upper()
