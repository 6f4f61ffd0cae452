"""De-identification: keyed pseudonyms, UIDs, date shifting, whitelists and output scanning."""

from .keys import Pseudonymizer, load_secret, normalise_id

__all__ = ["Pseudonymizer", "load_secret", "normalise_id"]
from .deidentifier import DeidSettings, Deidentifier  # noqa: E402

__all__ += ["DeidSettings", "Deidentifier"]
