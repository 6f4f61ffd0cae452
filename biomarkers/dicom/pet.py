"""PET units: SUV body-weight from Bq/ml (DICOM Units ``BQML``).

``SUVbw = C * W / D_ref`` with ``C`` the activity concentration (Bq/ml, after the
rescale slope/intercept), ``W`` the patient weight in g (PatientWeight kg x 1000)
and ``D_ref`` the injected dose (Bq, RadionuclideTotalDose) decayed to the time
the image values refer to:

* ``DecayCorrection = START``: values are decay-corrected to the series start
  (SeriesDate/SeriesTime, else the earliest AcquisitionDate/Time), so
  ``D_ref = D * 2^(-(t_start - t_injection) / T_half)``.
* ``ADMIN``: values are already corrected to the injection time: ``D_ref = D``.
* ``NONE``: each slice is decayed to its own AcquisitionDate/Time (per-slice factor).

Injection time: RadiopharmaceuticalStartDateTime, else RadiopharmaceuticalStartTime
on the reference date. A time-only injection later in the day than the scan is
taken as the previous day (scan crossing midnight; flag ``injection_previous_day``).
A full injection date-time that disagrees with the series date (negative or
> 24 h decay time) falls back to the time-of-day rule with the flag
``injection_date_disagrees``. A negative decay time is never used: it is an error,
as is any missing attribute (named in the message). Dates never leave this module.
"""

from __future__ import annotations

import datetime as dt
import math

import numpy as np

from ..deid.dates import parse_date, parse_datetime, parse_time
from ..errors import InputError
from .header import to_float
from .qualify import QcFlag


def _combine(date: str, time: str) -> dt.datetime | None:
    d, t = parse_date(date), parse_time(time)
    if d is None or t is None:
        return None
    return dt.datetime.combine(d, t)


def _require(value, name: str):
    if value is None or value == "" or (isinstance(value, float) and (math.isnan(value) or value <= 0)):
        raise InputError(f"PET in BQML cannot be converted to SUV: {name} is missing or invalid")
    return value


def decay_seconds(injection: dt.datetime | None, injection_time_only: str, reference: dt.datetime) -> tuple[float, list[str]]:
    """Seconds from injection to ``reference``, with the midnight/date rules (see module doc)."""
    flags: list[str] = []
    if injection is not None:
        s = (reference - injection).total_seconds()
        if 0 <= s <= 86400:
            return s, flags
        flags.append(QcFlag.INJECTION_DATE_DISAGREES)
        tod = injection.time()
    else:
        tod = parse_time(injection_time_only)
        if tod is None:
            raise InputError(
                "PET in BQML cannot be converted to SUV: RadiopharmaceuticalStartDateTime/RadiopharmaceuticalStartTime missing"
            )
    inj = dt.datetime.combine(reference.date(), tod)
    s = (reference - inj).total_seconds()
    if s < 0:
        s += 86400.0
        flags.append(QcFlag.INJECTION_PREVIOUS_DAY)
    if s < 0 or s > 86400:
        raise InputError(f"PET: decay time from injection to scan is {s / 3600:.1f} h (must be 0..24 h)")
    return s, flags


def suv_factors(ds, acquisition: list[tuple[str, str, str]] | None = None) -> tuple[np.ndarray | float, dict]:
    """Multiplicative factor(s) Bq/ml -> SUVbw (g/ml) for a PET dataset header.

    Args:
        ds: pydicom Dataset of one slice of the series (header).
        acquisition: per-slice ``(AcquisitionDateTime, AcquisitionDate, AcquisitionTime)``
            in output slice order (needed for ``DecayCorrection = NONE``).

    Returns:
        ``(factor, details)``: factor is a float (or one per slice), details holds
        numbers for the sidecar (weight_kg, dose_bq, half_life_s, decay_s,
        decay_correction, flags) and no dates.
    """
    units = str(ds.get("Units", "") or "").upper()
    if units != "BQML":
        shown = units if units in ("CNTS", "NONE", "CM2", "CM2ML", "PCNT", "CPS", "MGMINML", "UMOLMINML", "MLMING",
                                   "MLG", "1CM", "UMOLML", "PROPCNTS", "PROPCPS", "MLMINML", "MLML", "GML",
                                   "STDDEV") else "(other)" if units else "missing"  # defined terms only
        raise InputError(f"PET Units is {shown}, not BQML")
    weight = _require(to_float(ds.get("PatientWeight")), "PatientWeight")
    info = ds.get("RadiopharmaceuticalInformationSequence")
    if not info:
        raise InputError("PET in BQML cannot be converted to SUV: RadiopharmaceuticalInformationSequence is missing")
    rp = info[0]
    dose = _require(to_float(rp.get("RadionuclideTotalDose")), "RadionuclideTotalDose")
    half = _require(to_float(rp.get("RadionuclideHalfLife")), "RadionuclideHalfLife")
    decay_corr = str(ds.get("DecayCorrection", "") or "").upper()
    if not decay_corr:
        raise InputError("PET in BQML cannot be converted to SUV: DecayCorrection is missing")
    injection = parse_datetime(rp.get("RadiopharmaceuticalStartDateTime", ""))
    inj_time = str(rp.get("RadiopharmaceuticalStartTime", "") or "")
    details: dict = {"weight_kg": weight, "dose_bq": dose, "half_life_s": half, "decay_correction": decay_corr}
    if decay_corr == "ADMIN":
        details.update(decay_s=0.0, flags=[])
        return weight * 1000.0 / dose, details
    lam = math.log(2.0) / half
    if decay_corr == "START":
        ref = _combine(ds.get("SeriesDate", ""), ds.get("SeriesTime", ""))
        if ref is None:
            ref = _combine(ds.get("AcquisitionDate", ""), ds.get("AcquisitionTime", ""))
        if ref is None:
            raise InputError("PET in BQML cannot be converted to SUV: SeriesDate/SeriesTime (decay reference) missing")
        s, flags = decay_seconds(injection, inj_time, ref)
        details.update(decay_s=s, flags=flags)
        return weight * 1000.0 / (dose * math.exp(-lam * s)), details
    if decay_corr == "NONE":
        if not acquisition:
            raise InputError("PET with DecayCorrection NONE needs per-slice AcquisitionDate/Time")
        factors, all_flags, secs = [], set(), []
        for adt, ad, at in acquisition:
            ref = parse_datetime(adt) or _combine(ad or ds.get("SeriesDate", ""), at)
            if ref is None:
                raise InputError("PET in BQML cannot be converted to SUV: AcquisitionDate/AcquisitionTime missing")
            s, flags = decay_seconds(injection, inj_time, ref)
            all_flags.update(flags)
            secs.append(s)
            factors.append(weight * 1000.0 / (dose * math.exp(-lam * s)))
        details.update(decay_s=float(np.min(secs)), flags=sorted(all_flags))
        return np.asarray(factors), details
    raise InputError(f"PET in BQML: DecayCorrection {decay_corr!r} not supported (START, ADMIN or NONE)")
