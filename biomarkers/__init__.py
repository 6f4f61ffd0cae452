"""biomarkers: imaging biomarker discovery from curated DICOM to released feature tables.

Importing the package has no side effects: no logging handlers, no MLflow
configuration, no environment changes. The CLI (``biomarkers.cli``) configures
logging; library users configure their own.
"""

__version__ = "0.1.0"
