"""Keyed pseudonyms, UIDs and date offsets derived from a site secret.

Everything is ``HMAC-SHA256(secret, domain || value)``, so

* the same patient gets the same pseudonym in imaging and clinical tables, at
  every run and on every machine holding the secret;
* nobody without the secret can recompute (or test guesses against) a pseudonym;
* the different derived values (id, UIDs, date offset) are independent.

The secret comes from ``BIOMARKERS_SECRET`` or from the file named by
``BIOMARKERS_SECRET_FILE``. It is never written to an output and never logged
(``repr`` hides it).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import os
import re
from pathlib import Path

from ..errors import SecretError

ENV_SECRET = "BIOMARKERS_SECRET"
ENV_SECRET_FILE = "BIOMARKERS_SECRET_FILE"
#: Publicly known secret used only in explicit demo mode (synthetic data).
DEMO_SECRET = b"biomarkers-demo-secret-not-for-real-data"
MIN_SECRET_BYTES = 16
#: Longest UID root: leaves at least 20 digits (> 64 bits) of the keyed hash in a 64-character UID.
MAX_UID_ROOT = 43
#: The pseudonym format, ``<prefix>-<12 base32 characters>`` (e.g. ``BM-K3J9XQ2M4T7A``): its one definition.
PREFIX_PATTERN = r"[A-Za-z0-9_]{1,16}"
PSEUDONYM_CHARS = 12
UID_ROOT_PATTERN = r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*"


def pseudonym_pattern(prefix: str | None = None) -> re.Pattern:
    """A regex matching whole pseudonyms with ``prefix`` (None: any valid prefix)."""
    head = re.escape(prefix) if prefix is not None else PREFIX_PATTERN
    return re.compile(rf"^{head}-[A-Z2-7]{{{PSEUDONYM_CHARS}}}$")


def load_secret(demo: bool = False) -> bytes:
    """Read the site secret from the environment.

    Raises:
        SecretError: when neither variable is set (unless ``demo``), when the file
            cannot be read, or when the secret is shorter than 16 bytes.
    """
    value: bytes | None = None
    if os.environ.get(ENV_SECRET):
        value = os.environ[ENV_SECRET].encode("utf-8")
    elif os.environ.get(ENV_SECRET_FILE):
        p = Path(os.environ[ENV_SECRET_FILE])
        try:
            value = p.read_bytes().strip()
        except OSError as err:
            raise SecretError(f"{ENV_SECRET_FILE}={p}: cannot read the secret file ({err.strerror})") from None
    if value is None:
        if demo:
            return DEMO_SECRET
        raise SecretError(
            f"no de-identification secret: set {ENV_SECRET} (or {ENV_SECRET_FILE} to a file holding it) "
            "to the site's secret key, at least 16 characters; use --demo only for synthetic data"
        )
    if len(value) < MIN_SECRET_BYTES:
        raise SecretError(f"the de-identification secret is too short ({len(value)} bytes); use at least {MIN_SECRET_BYTES}")
    return value


def normalise_id(value: object) -> str:
    """Normalise a patient identifier before hashing: trimmed, upper case, single spaces.

    Integers and integer-valued floats (``12`` / ``12.0`` from a spreadsheet) give the same text.
    """
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    s = re.sub(r"\s+", " ", str(value).strip()).upper()
    if not s:
        raise ValueError("empty patient identifier")
    return s


class Pseudonymizer:
    """Derives pseudonyms, UIDs and date offsets from a secret.

    Args:
        secret: the site secret (bytes).
        prefix: text before the pseudonym's 12 base32 characters.
        uid_root: DICOM UID root for new UIDs (default ``2.25``: UUID-derived UIDs).
        max_shift_days: dates move back by 1..max_shift_days days (per patient).
    """

    def __init__(self, secret: bytes, prefix: str = "BM", uid_root: str = "2.25", max_shift_days: int = 365):
        if not secret:
            raise SecretError("empty de-identification secret")
        if not re.fullmatch(UID_ROOT_PATTERN, uid_root) or len(uid_root) > MAX_UID_ROOT:
            raise SecretError(
                f"uid_root {uid_root!r} is not a valid DICOM UID root (digits and dots, no leading zeros) "
                f"of at most {MAX_UID_ROOT} characters"
            )
        if int(max_shift_days) < 1:
            raise SecretError(f"max_shift_days must be at least 1 (got {max_shift_days})")
        self._secret = bytes(secret)
        self.prefix = prefix
        self.uid_root = uid_root
        self.max_shift_days = int(max_shift_days)
        self.demo = self._secret == DEMO_SECRET

    @classmethod
    def from_env(cls, demo: bool = False, **kw) -> "Pseudonymizer":
        return cls(load_secret(demo=demo), **kw)

    def __repr__(self) -> str:  # never show the secret
        return f"Pseudonymizer(prefix={self.prefix!r}, uid_root={self.uid_root!r}, demo={self.demo})"

    def _digest(self, domain: str, value: str) -> bytes:
        return hmac.new(self._secret, f"{domain}\x00{value}".encode("utf-8"), hashlib.sha256).digest()

    def patient_id(self, original: object) -> str:
        """Pseudonym of a patient id, e.g. ``BM-K3J9XQ2M4T7A``."""
        d = self._digest("patient", normalise_id(original))
        return f"{self.prefix}-{base64.b32encode(d).decode()[:PSEUDONYM_CHARS]}"

    def uid(self, original: str) -> str:
        """Deterministic replacement for a DICOM UID: ``<uid_root>.<decimal of 128 bits of the
        keyed hash>``, cut to the 64 characters DICOM allows (at least 20 digits remain)."""
        d = self._digest("uid", str(original).strip())
        n = int.from_bytes(d[:16], "big")
        return f"{self.uid_root}.{n}"[:64].rstrip(".")

    def date_offset_days(self, original_patient_id: object) -> int:
        """Days (negative, 1..max_shift_days back) added to every date of this patient."""
        d = self._digest("date", normalise_id(original_patient_id))
        return -(1 + int.from_bytes(d[:4], "big") % self.max_shift_days)

    def shift_date(self, value: dt.date | dt.datetime, original_patient_id: object):
        """Shift a date/datetime by the patient's offset (intervals preserved)."""
        return value + dt.timedelta(days=self.date_offset_days(original_patient_id))
