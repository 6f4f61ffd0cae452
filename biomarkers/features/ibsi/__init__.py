"""IBSI 1 compliant features: processing + every IBSI 1 feature family, vectorised.

Entry points:

* :func:`extract_ibsi` -- the hook of the extraction area: SimpleITK image + mask +
  parameter dict (with an ``ibsi:`` section, see :class:`IbsiSettings`) -> rows
  ``{image_type, feature_class, feature, ibsi_code, value}``.
* :func:`compute` -- numpy arrays (z, y, x) + spacing (dz, dy, dx) mm -> ``{ibsi tag: value}``.
* :func:`biomarkers.features.ibsi.reference.compare` -- values vs the IBSI reference tables.

Feature naming in the long table: ``image_type="original"``, ``feature_class="ibsi" +
family`` (``ibsimorph``, ``ibsiloc``, ``ibsistat``, ``ibsiih``, ``ibsiivh``, ``ibsicm``,
``ibsirlm``, ``ibsiszm``, ``ibsidzm``, ``ibsingt``, ``ibsingl``), ``feature`` = the
IBSI tag without its family prefix (``joint_max_3D_avg``), ``ibsi_code`` = the tag.
With ``diagnostics: true`` the IBSI diagnostic values come as ``feature_class="ibsidiag"``,
``feature`` = ``ibsi_code`` = the diagnostic tag (``int_mask_vox_count_reseg_roi``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from .processing import IbsiSettings, Prepared

#: bump when feature values can change: the extraction engine keys its incremental cache on it
__version__ = "1.0.1"  # 1.0.1: separable resampling in banded products, statistics by products (last-digit rounding)

#: Imported on first use (the families need scipy: a worker running pyradiomics only never loads them).
_LAZY = {"IbsiSettings": "processing", "Prepared": "processing", "prepare": "processing",
         "compute": "features", "compute_prepared": "features"}

__all__ = ["IbsiSettings", "Prepared", "prepare", "prepare_sitk", "prepare_from_sitk", "prepared_to_sitk", "compute",
           "compute_prepared", "extract_ibsi", "settings_from_params"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def settings_from_params(params: dict) -> IbsiSettings:
    """The :class:`IbsiSettings` of a parameter dict (its ``ibsi:`` section, or the section itself)."""
    from biomarkers.config import validate

    from .processing import IbsiSettings

    section = params.get("ibsi", params) if isinstance(params, dict) else params
    return validate(IbsiSettings, section or {}, source="ibsi")


def prepare_from_sitk(image, mask, params: dict, diagnostics: bool | None = None) -> Prepared:
    """IBSI processing of a SimpleITK image and mask (the parameter file's ``ibsi:`` section).

    ``diagnostics`` (default: the settings') also computes the IBSI diagnostic values.
    The result feeds :func:`prepared_to_sitk` and :func:`extract_ibsi` (``prepared=``),
    so an item prepared once serves both pyradiomics and the IBSI families.
    """
    import SimpleITK as sitk

    from .processing import prepare

    settings = settings_from_params(params)
    if diagnostics is None:
        diagnostics = settings.diagnostics
    if "diagnostics" not in settings.families:
        diagnostics = False
    arr = sitk.GetArrayFromImage(image).astype(np.float64)
    spacing = tuple(float(s) for s in image.GetSpacing()[::-1])
    return prepare(arr, _roi(mask, params), spacing, settings, diagnostics=diagnostics)


def prepared_to_sitk(prep: Prepared, image):
    """(image, intensity mask, morphological mask) of ``prep`` as SimpleITK images.

    The image on the centre-aligned resampled grid, cropped to the ROI bounding box
    plus one voxel, with origin, spacing and direction (LPS, as SimpleITK) consistent
    with the original ``image``; masks uint8. Grey levels are not discretised here.
    """
    import SimpleITK as sitk

    origin = image.TransformContinuousIndexToPhysicalPoint(tuple(float(i) for i in prep.index0[::-1]))
    out = []
    for a in (prep.image, prep.int_mask.astype(np.uint8), prep.morph_mask.astype(np.uint8)):
        im = sitk.GetImageFromArray(a)
        im.SetSpacing(tuple(prep.spacing[::-1]))
        im.SetOrigin(origin)
        im.SetDirection(image.GetDirection())
        out.append(im)
    return tuple(out)


def prepare_sitk(image, mask, params: dict):
    """IBSI-processed (image, intensity mask, morphological mask) as SimpleITK images.

    For running other feature code (e.g. pyradiomics with resampling and resegmentation
    disabled) on exactly the IBSI-prepared data; see :func:`prepared_to_sitk`.
    """
    return prepared_to_sitk(prepare_from_sitk(image, mask, params, diagnostics=False), image)


def _roi(mask, params) -> np.ndarray:
    import SimpleITK as sitk

    marr = sitk.GetArrayFromImage(mask)
    label = (params.get("setting") or {}).get("label") if isinstance(params, dict) and "ibsi" in params else None
    return (marr == label) if label is not None else (marr > 0)


_FAMILY_PREFIXES = {"morph", "loc", "stat", "ih", "ivh", "cm", "rlm", "szm", "dzm", "ngt", "ngl"}


def extract_ibsi(image, mask, params: dict, prepared: Prepared | None = None) -> list[dict]:
    """Hook for the extraction engine: SimpleITK image and mask -> long-table rows.

    ``params`` is the parameter-file dict; its ``ibsi:`` section configures the
    processing (:class:`IbsiSettings`). The mask label is ``setting.label``
    (default: any non-zero voxel). ``prepared``: the result of
    :func:`prepare_from_sitk` for the same inputs (not prepared again).
    """
    from .features import compute_prepared

    settings = settings_from_params(params)
    prep = prepared if prepared is not None else prepare_from_sitk(image, mask, params)
    values = compute_prepared(prep, settings)
    rows = []
    for tag, value in values.items():
        family, _, rest = tag.partition("_")
        if family not in _FAMILY_PREFIXES:  # diagnostic values (img_dim_x_init_img, ...)
            family, rest = "diag", tag
        rows.append({"image_type": "original", "feature_class": f"ibsi{family}", "feature": rest,
                     "ibsi_code": tag, "value": value})
    return rows
