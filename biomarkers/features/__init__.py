"""Radiomic feature extraction (pyradiomics), configured, parallel, incremental, IBSI-checked.

Public API:
    :func:`run_extract`, :class:`Extract` (validate / plan / run), :func:`parse_params`,
    :func:`load_params`, :func:`mapping_table`.
"""

from .extract import Extract, ExtractPlan, run_extract
from .mapping import ibsi_codes, mapping_table
from .params import ParamSet, load_params, parse_params

__all__ = ["Extract", "ExtractPlan", "run_extract", "parse_params", "load_params", "ParamSet", "mapping_table",
           "ibsi_codes"]
