"""Radiomic feature extraction (pyradiomics), configured, parallel, incremental, IBSI-checked.

Public API:
    :func:`run_extract`, :class:`Extract` (validate / plan / run), :func:`parse_params`,
    :func:`load_params`, :func:`mapping_table`.

Attributes are imported lazily, so worker processes that only unpickle
:func:`biomarkers.features.items.extract_item` do not import pandas.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "Extract": "extract",
    "ExtractPlan": "extract",
    "run_extract": "extract",
    "parse_params": "params",
    "load_params": "params",
    "ParamSet": "params",
    "mapping_table": "mapping",
    "ibsi_codes": "mapping",
}

__all__ = list(_EXPORTS)

if TYPE_CHECKING:  # pragma: no cover
    from .extract import Extract, ExtractPlan, run_extract
    from .mapping import ibsi_codes, mapping_table
    from .params import ParamSet, load_params, parse_params


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
