"""Exception hierarchy. Messages say what is wrong, where (file/series/row) and how to fix it."""


class BiomarkersError(Exception):
    """Base class of all errors raised on purpose by biomarkers."""


class ConfigError(BiomarkersError):
    """A configuration file or value is invalid (names the file and key)."""


class InputError(BiomarkersError):
    """An input file/series/row cannot be used (names it and the reason)."""


class GeometryError(InputError):
    """Image and mask (or two images) do not share a grid."""


class SecretError(BiomarkersError):
    """The de-identification secret is missing or unusable."""


class PrivacyError(BiomarkersError):
    """An output would contain identifying data; the operation was refused."""
