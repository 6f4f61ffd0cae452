"""De-identification: keyed pseudonyms, UIDs, date shifting, whitelists and output scanning."""

from .keys import Pseudonymizer, load_secret, normalise_id

__all__ = ["Pseudonymizer", "load_secret", "normalise_id"]
