"""The de-identification policy applied at the hospital edge (ingest, clinical loader).

:class:`Deidentifier` is the one object stages call to turn original identifiers
into what may be written: pseudonymous patient ids, new UIDs, shifted dates and
whitelisted metadata. With ``enabled=False`` (an explicit ``--no-deid`` flag, recorded
in the run report) identifiers pass through unchanged.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any, Literal

from ..config import Settings
from .keys import Pseudonymizer
from .whitelist import whitelisted_metadata


class DeidSettings(Settings):
    """Settings of the de-identification layer (config section ``deid``)."""

    enabled: bool = True
    demo: bool = False  # use the public demo secret when no secret is set (synthetic data only)
    prefix: str = "BM"  # pseudonym prefix
    uid_root: str = "2.25"  # root of generated DICOM UIDs
    dates: Literal["shift", "year"] = "shift"  # shift per patient, or keep the year only
    max_shift_days: int = 365
    max_age: int = 89  # ages above are capped at this value


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

    def date(self, value: dt.date | dt.datetime | None, original_patient_id: Any):
        """Shifted date (or 1 July of the same year in ``year`` mode); None stays None."""
        if value is None or not self.enabled:
            return value
        if self.settings.dates == "year":
            return value.replace(month=7, day=1)
        return self.pseudonymizer.shift_date(value, original_patient_id)

    def age(self, years: float | None) -> float | None:
        if years is None:
            return None
        return min(float(years), float(self.settings.max_age)) if self.enabled else years

    def metadata(self, ds) -> dict:
        """Whitelisted acquisition metadata of a pydicom Dataset (sidecars, manifests)."""
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
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write("original_id,pseudonym\n")
            for orig, pseudo in sorted(self._links.items()):
                fh.write(f"{orig},{pseudo}\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
        return path
