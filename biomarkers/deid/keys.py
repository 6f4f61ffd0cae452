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
#: Least estimated entropy of a site secret (bits, :func:`secret_strength_bits`).
MIN_SECRET_BITS = 64
#: Keyed references (``roi-XXXXXXXX``, ``src-XXXXXXXXXXXX``): base32 characters after the kind.
REFERENCE_CHARS = {"roi": 8, "src": 12, "code": 8}
#: Longest UID root: leaves at least 20 digits (> 64 bits) of the keyed hash in a 64-character UID.
MAX_UID_ROOT = 43
#: The pseudonym format, ``<prefix>-<12 base32 characters>`` (e.g. ``BM-K3J9XQ2M4T7A``): its one definition.
PREFIX_PATTERN = r"[A-Za-z0-9_]{1,16}"
PSEUDONYM_CHARS = 12
UID_ROOT_PATTERN = r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*"


#: File ``biomarkers synth`` writes at the top of every cohort it synthesises: the public demo secret
#: is accepted only for a source folder inside such a cohort (:func:`require_synthetic`).
SYNTHETIC_MARKER = ".biomarkers-synthetic"
SYNTHETIC_MARKER_TEXT = "written by biomarkers synth: synthetic data, no patient\n"


def require_synthetic(src: str | Path) -> None:
    """Refuse the public demo secret for a source folder ``biomarkers synth`` did not write.

    Pseudonyms made with the demo secret can be recomputed by anyone (the secret is in the
    source code), so ``--demo`` is accepted only when ``src`` or one of its parent folders holds
    :data:`SYNTHETIC_MARKER` with synth's text.

    Raises:
        SecretError: no marker found.
    """
    p = Path(src).resolve()
    for folder in (p, *p.parents):
        m = folder / SYNTHETIC_MARKER
        try:
            if m.is_file() and m.read_text(encoding="utf-8") == SYNTHETIC_MARKER_TEXT:
                return
        except OSError:
            continue
    raise SecretError(
        f"--demo (the public demo secret) is only for data written by `biomarkers synth`: the source folder "
        f"is not inside a synthetic cohort (no {SYNTHETIC_MARKER} file). Pseudonyms made with the demo secret "
        f"can be reversed by anyone: set {ENV_SECRET} (or {ENV_SECRET_FILE}) to the site's secret"
    )


def pseudonym_pattern(prefix: str | None = None) -> re.Pattern:
    """A regex matching whole pseudonyms with ``prefix`` (None: any valid prefix)."""
    head = re.escape(prefix) if prefix is not None else PREFIX_PATTERN
    return re.compile(rf"^{head}-[A-Z2-7]{{{PSEUDONYM_CHARS}}}$")


def secret_strength_bits(value: bytes) -> float:
    """Estimated entropy of a secret in bits (a lower bound for human-made secrets).

    The smaller of two estimates: length x log2 of the character classes used (lower case 26,
    upper case 26, digits 10, other ASCII 33, non-ASCII bytes 128), and length x the empirical
    Shannon entropy of its characters with the Miller-Madow small-sample correction. Repeated
    characters, repeated patterns (``abab...``) and short alphabets score low; 16 random base64
    characters score about 65, sixteen identical characters 0.
    """
    import math
    from collections import Counter

    n = len(value)
    if n == 0:
        return 0.0
    pool = 0
    for test, size in ((lambda b: 97 <= b <= 122, 26), (lambda b: 65 <= b <= 90, 26), (lambda b: 48 <= b <= 57, 10),
                       (lambda b: 32 <= b < 127 and not chr(b).isalnum(), 33), (lambda b: b >= 127 or b < 32, 128)):
        if any(test(b) for b in value):
            pool += size
    counts = Counter(value)
    shannon = -sum(c / n * math.log2(c / n) for c in counts.values())
    if len(counts) > 1:
        shannon += (len(counts) - 1) / (2 * n * math.log(2))
    return min(n * math.log2(pool), n * shannon)


def check_secret(value: bytes, source: str = ENV_SECRET) -> bytes:
    """Return ``value`` if it is long and varied enough for a site secret, else raise SecretError."""
    if len(value) < MIN_SECRET_BYTES:
        raise SecretError(f"the de-identification secret ({source}) is too short ({len(value)} bytes); "
                          f"use at least {MIN_SECRET_BYTES} random characters, e.g. `openssl rand -base64 32`")
    bits = secret_strength_bits(value)
    if bits < MIN_SECRET_BITS:
        raise SecretError(
            f"the de-identification secret ({source}) is too easy to guess (about {bits:.0f} bits estimated, "
            f"at least {MIN_SECRET_BITS} needed: repeated characters, patterns or a short alphabet); "
            "use random characters, e.g. `openssl rand -base64 32`"
        )
    return value


def load_secret(demo: bool = False) -> bytes:
    """Read the site secret from the environment.

    The secret is never taken from the command line (``--secret`` is a usage error of the CLI):
    command lines are visible to every user of the machine and kept in shell histories.

    Raises:
        SecretError: when neither variable is set (unless ``demo``), when the file
            cannot be read, or when the secret is shorter than 16 bytes or too easy to
            guess (:func:`check_secret`).
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
    return check_secret(value, ENV_SECRET if os.environ.get(ENV_SECRET) else ENV_SECRET_FILE)


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


class Referencer:
    """``HMAC-SHA256(key, value)`` -> ``<kind>-<base32>``: made by :meth:`Pseudonymizer.referencer`."""

    def __init__(self, kind: str, key: bytes):
        self.kind, self._key = kind, bytes(key)

    def __repr__(self) -> str:  # never show the key
        return f"Referencer({self.kind!r})"

    def __call__(self, original: object) -> str:
        value = str(original)
        if self.kind == "roi":
            value = re.sub(r"\s+", " ", value.strip()).casefold()
        d = hmac.new(self._key, value.encode("utf-8"), hashlib.sha256).digest()
        return f"{self.kind}-{base64.b32encode(d).decode()[:REFERENCE_CHARS[self.kind]]}"


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

    def reference(self, kind: str, original: object) -> str:
        """Keyed reference to a site-side name: ``roi-XXXXXXXX`` for an ROI/segment name,
        ``src-XXXXXXXXXXXX`` for a source file (its path relative to the source folder).

        The one function behind every reference in outputs, reports and logs: keyed with the site
        secret like the pseudonyms, so nobody without it can recompute a reference from a guessed
        name or folder scheme. ROI names are matched case- and whitespace-insensitively.
        """
        return self.referencer(kind)(original)

    def referencer(self, kind: str) -> "Referencer":
        """A picklable :class:`Referencer` for one kind (for worker processes: holds a key derived
        from the secret for that kind only, never the secret)."""
        if kind not in REFERENCE_CHARS:
            raise ValueError(f"unknown reference kind {kind!r} (one of {', '.join(REFERENCE_CHARS)})")
        return Referencer(kind, self._digest("reference-key", kind))

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
