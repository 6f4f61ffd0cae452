"""Synthetic multicentre PET/CT cohort with a planted imaging biomarker (demo data, benchmark load).

``synthesize(out, patients, centres, seed)`` writes real DICOM (CT, PET, RTSTRUCT),
one clinical CSV per centre with centre-specific columns/codings and a few invalid
rows, and ``ground_truth.csv``. See :mod:`biomarkers.synth.cohort` for the layout.
"""

from .cohort import synthesize
from .phantom import Centre, Lesion, centre_profile

__all__ = ["synthesize", "Centre", "Lesion", "centre_profile"]
