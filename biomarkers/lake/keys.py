"""Site signing keys (Ed25519, through the ``cryptography`` package).

A site makes its key pair once with ``biomarkers lake keygen --site SITE``:

* ``<keys>/<SITE>.key``: the private key (PEM, PKCS#8), mode 0600 in a 0700 folder. It never
  leaves the site; :func:`load_private_key` refuses a file that group or others can read.
* ``<keys>/<SITE>.pub``: the public key (PEM, SubjectPublicKeyInfo), sent to the lake's
  operator, who registers it (``biomarkers lake register LAKE --site SITE --key SITE.pub`` or
  ``lake init LAKE --site-key SITE=SITE.pub``).

``<keys>`` defaults to ``$BIOMARKERS_KEYS_DIR``, else ``$XDG_CONFIG_HOME/biomarkers/keys``, else
``~/.config/biomarkers/keys``. A key's fingerprint is ``SHA256:`` + the first 32 hex digits of
the SHA-256 of its raw 32 public bytes.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from pathlib import Path

from ..errors import ConfigError, InputError

SITE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_site(site: str) -> str:
    """``site`` if it is a valid site name (letters, digits, ``_ . -``; at most 64), else ConfigError."""
    if not isinstance(site, str) or not SITE_RE.match(site):
        raise ConfigError(f"site name {site!r} is invalid: use 1-64 letters, digits, '_', '.' or '-' "
                          "(starting with a letter or digit)")
    return site


def keys_dir(explicit: str | os.PathLike | None = None) -> Path:
    """The folder holding a site's keys (see the module docstring)."""
    if explicit:
        return Path(explicit)
    if os.environ.get("BIOMARKERS_KEYS_DIR"):
        return Path(os.environ["BIOMARKERS_KEYS_DIR"])
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "biomarkers" / "keys"


def fingerprint(public_key) -> str:
    """``SHA256:<32 hex>`` of the raw public key bytes."""
    from cryptography.hazmat.primitives import serialization

    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "SHA256:" + hashlib.sha256(raw).hexdigest()[:32]


def keygen(site: str, directory: str | os.PathLike | None = None) -> tuple[Path, Path, str]:
    """Make ``SITE.key`` (0600) and ``SITE.pub`` in ``directory``; returns (private, public, fingerprint).

    Refuses to overwrite an existing key (a site's registered key would stop matching).
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    check_site(site)
    d = keys_dir(directory)
    priv_path, pub_path = d / f"{site}.key", d / f"{site}.pub"
    for p in (priv_path, pub_path):
        if p.exists():
            raise ConfigError(f"{p}: a key already exists for site {site!r}; keep it (its public key is what "
                              "the lake has registered) or move it away first")
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(priv_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    os.chmod(priv_path, 0o600)
    pub = key.public_key()
    pub_path.write_bytes(pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return priv_path, pub_path, fingerprint(pub)


def load_private_key(path: str | os.PathLike):
    """The Ed25519 private key at ``path``; refused when the file is readable by group or others."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: private key not found (make one with `biomarkers lake keygen --site SITE`)")
    mode = stat.S_IMODE(p.stat().st_mode)
    if mode & 0o077:
        raise ConfigError(f"{p}: private key is accessible by group or others (mode {mode:04o}); "
                          f"run `chmod 600 {p}`")
    try:
        key = serialization.load_pem_private_key(p.read_bytes(), password=None)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"{p}: not a PEM private key ({err})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{p}: not an Ed25519 private key ({type(key).__name__})")
    return key


def load_public_key(data: bytes | str, source: str = "<public key>"):
    """An Ed25519 public key from PEM bytes/text."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    if isinstance(data, str):
        data = data.encode()
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as err:
        raise InputError(f"{source}: not a PEM public key ({err})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise InputError(f"{source}: not an Ed25519 public key ({type(key).__name__})")
    return key


def public_pem(public_key) -> str:
    from cryptography.hazmat.primitives import serialization

    return public_key.public_bytes(serialization.Encoding.PEM,
                                   serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def verify(public_key, signature: bytes, data: bytes) -> bool:
    """True when ``signature`` is ``public_key``'s Ed25519 signature of ``data``."""
    from cryptography.exceptions import InvalidSignature

    try:
        public_key.verify(signature, data)
    except InvalidSignature:
        return False
    return True
