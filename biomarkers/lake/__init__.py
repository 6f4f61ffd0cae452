"""The multicentre datalake: signed site bundles and a central, versioned Delta Lake.

Site side: :func:`keygen` (Ed25519 key pair), :func:`build_bundle` (``biomarkers contribute``).
Central side: :class:`Lake` (``init``, ``register``, ``add``, ``status``, ``read``, ``query``,
``analysis_table``, ``snapshot``), :func:`read_lake_ref` for experiments (``input.lake: LAKE@VERSION``).
"""

from .bundle import Bundle, BundleRefused, BundleResult, build_bundle, open_bundle, scan_bundle, verify_bundle
from .keys import fingerprint, keygen, keys_dir, load_private_key, load_public_key
from .store import TABLES, AddResult, Lake, open_lake, parse_lake_ref, read_lake_ref

__all__ = [
    "Bundle", "BundleRefused", "BundleResult", "build_bundle", "open_bundle", "scan_bundle", "verify_bundle",
    "fingerprint", "keygen", "keys_dir", "load_private_key", "load_public_key",
    "TABLES", "AddResult", "Lake", "open_lake", "parse_lake_ref", "read_lake_ref",
]
