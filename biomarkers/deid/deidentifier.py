"""The de-identification policy applied at the hospital edge (ingest, clinical loader).

:class:`Deidentifier` is the one object stages call to turn original identifiers
into what may be written: pseudonymous patient ids, new UIDs, shifted dates and
whitelisted metadata. With ``enabled=False`` (an explicit ``--no-deid`` flag, recorded
in the run report) identifiers pass through unchanged.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from ..config import Settings
from . import dates as _dates
from .keys import MAX_UID_ROOT, PREFIX_PATTERN, UID_ROOT_PATTERN, Pseudonymizer
from .whitelist import whitelisted_metadata


class DeidSettings(Settings):
    """Settings of the de-identification layer (config section ``deid``)."""

    enabled: bool = True
    demo: bool = False  # use the public demo secret when no secret is set (synthetic data only)
    prefix: str = Field("BM", pattern=f"^{PREFIX_PATTERN}$")  # pseudonym prefix (letters, digits, _)
    uid_root: str = Field("2.25", pattern=f"^{UID_ROOT_PATTERN}$", max_length=MAX_UID_ROOT)  # root of new UIDs
    dates: Literal["shift", "year"] = "shift"  # shift per patient, or keep the year only
    max_shift_days: int = Field(365, ge=1, le=3650)  # dates move back 1..max_shift_days days per patient
    max_age: int = Field(89, ge=1, le=150)  # ages above are capped at this value


class Deidentifier:
    """Applies :class:`DeidSettings` with a :class:`Pseudonymizer`."""

    def __init__(self, settings: DeidSettings | None = None, pseudonymizer: Pseudonymizer | None = None):
        self.settings = settings or DeidSettings()
        s = self.settings
        if pseudonymizer is None and s.enabled:
            pseudonymizer = Pseudonymizer.from_env(
                demo=s.demo, prefix=s.prefix, uid_root=s.uid_root, max_shift_days=s.max_shift_days
            )
        self.pseudonymizer = pseudonymizer
        self._links: dict[str, str] = {}

    @property
    def enabled(self) -> bool:
        return self.settings.enabled

    def patient_id(self, original: Any) -> str:
        if not self.enabled:
            return str(original)
        p = self.pseudonymizer.patient_id(original)
        self._links[str(original)] = p
        return p

    def uid(self, original: str) -> str:
        if not self.enabled or not original:
            return original
        return self.pseudonymizer.uid(original)

    def date(self, value, original_patient_id: Any):
        """Shifted date (or 1 July of the same year in ``year`` mode); None stays None.

        ``value`` may be a ``date``/``datetime``/pandas Timestamp (same type returned)
        or a string in DICOM/ISO/EU form (a ``datetime.date`` is returned).
        Raises ValueError for a string that is not a date.
        """
        if value is None or not self.enabled:
            return value
        if isinstance(value, str):
            parsed = _dates.parse_date(value)
            if parsed is None:
                raise ValueError(f"not a date: {value!r}")
            value = parsed
        if self.settings.dates == "year":
            month, day = _dates.YEAR_ONLY_MONTH_DAY
            if hasattr(value, "hour"):  # datetimes: the time of day goes too
                return value.replace(month=month, day=day, hour=0, minute=0, second=0, microsecond=0)
            return value.replace(month=month, day=day)
        return self.pseudonymizer.shift_date(value, original_patient_id)

    def offset_days(self, original_patient_id: Any) -> int:
        """Days added to every date of this patient (0 when de-identification is off)."""
        if not self.enabled:
            return 0
        return self.pseudonymizer.date_offset_days(original_patient_id)

    def dicom_date(self, value: str, original_patient_id: Any) -> str:
        """De-identified DICOM ``DA``/``DT`` string (time of day kept when shifting)."""
        if not self.enabled or not value:
            return value
        if self.settings.dates == "year":
            return _dates.year_only_dicom_date(value)
        return _dates.shift_dicom_date(value, self.offset_days(original_patient_id))

    def age(self, years) -> float | None:
        """Age in years capped at ``max_age``; accepts numbers or DICOM ``AS`` strings (``093Y``)."""
        if years is None or (isinstance(years, str) and not years.strip()):
            return None
        y = _dates.age_years(years)
        if y is None:
            return None
        return min(y, float(self.settings.max_age)) if self.enabled else y

    def dicom_age(self, value: str) -> str:
        """DICOM ``AS`` string capped at ``max_age`` (``093Y`` -> ``089Y``); '' if unparseable."""
        if not value or not self.enabled:
            return value
        capped = _dates.cap_age(value, self.settings.max_age)
        return capped if isinstance(capped, str) else ""

    def run_info(self) -> dict:
        """What to record in a run report (never the secret): ``report.extra['deid'] = ...``."""
        s = self.settings
        info = {"enabled": s.enabled}
        if s.enabled:
            info.update(
                demo_secret=bool(self.pseudonymizer.demo),
                dates=s.dates,
                max_shift_days=s.max_shift_days,
                max_age=s.max_age,
                uid_root=s.uid_root,
                prefix=s.prefix,
            )
        else:
            info["warning"] = "de-identification disabled by explicit flag: outputs contain original identifiers"
        return info

    def metadata(self, ds) -> dict:
        """Whitelisted acquisition metadata of a pydicom Dataset (sidecars, manifests).

        Only :data:`~biomarkers.deid.whitelist.SIDECAR_ATTRIBUTES`, type-checked; text values
        that contain one of the dataset's own identifiers (patient id/name, accession
        number, institution, station, serial numbers...) are dropped too.
        """
        return whitelisted_metadata(ds)

    def links(self) -> dict[str, str]:
        """original id -> pseudonym for every id seen (for the optional linkage table)."""
        return dict(self._links)

    def write_linkage_table(self, path: str | Path, forbidden_root: str | Path | None = None) -> Path:
        """Write ``original_id,pseudonym`` CSV with owner-only permissions (0600).

        Refuses a path inside ``forbidden_root`` (the output folder) so the key table
        never travels with the de-identified data.
        """
        from ..errors import PrivacyError

        path = Path(path).resolve()
        if forbidden_root is not None:
            root = Path(forbidden_root).resolve()
            if path == root or root in path.parents:
                raise PrivacyError(f"{path}: the linkage table must not be written inside the output folder {root}")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["original_id", "pseudonym"])
            for orig, pseudo in sorted(self._links.items()):
                w.writerow([orig, pseudo])
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
        return path
