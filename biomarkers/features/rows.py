"""Long-table rows of one item: pyradiomics' result and the IBSI module's values.

Each row: ``image_type, feature_class, feature`` (see :mod:`biomarkers.features.naming`),
``ibsi_code`` ('' when IBSI has no such feature), ``value`` (the tool's own value),
``ibsi_value`` (the value as IBSI defines it, NaN when unknown or deviating) and ``source``.
"""

from __future__ import annotations

import math
from typing import Any

from .naming import FeatureName


def _as_float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def _spacing_product(diagnostics: dict) -> float | None:
    for key in ("diagnostics_Image-interpolated_Spacing", "diagnostics_Image-original_Spacing"):
        sp = diagnostics.get(key)
        if sp is not None:
            try:
                return float(math.prod(float(x) for x in sp))
            except (TypeError, ValueError):
                continue
    return None


def ibsi_value(feature_class: str, feature: str, relation: str, value: float, class_values: dict,
               settings: dict, diagnostics: dict) -> float:
    """The IBSI value of a mapped pyradiomics feature (relation from ``data/ibsi_mapping.csv``).

    The corrections themselves live in ONE place, :mod:`biomarkers.features.ibsi.corrections`
    (excess kurtosis, PCA axes with covariance normalised by N-1). The voxel count N of the
    PCA correction is VoxelVolume / voxel volume of the grid the shape features were computed
    on (after resampling). ``shift`` (Energy, RootMeanSquared) is identical when
    ``voxelArrayShift`` is 0 and reported as NaN (deviating) otherwise.
    """
    if not math.isfinite(value):
        return value
    if relation == "identical":
        return value
    if relation == "shift":
        return value if float(settings.get("voxelArrayShift", 0) or 0) == 0 else float("nan")
    from .ibsi.corrections import correct_pyradiomics  # numpy only: the IBSI families stay unloaded

    n = 0
    if relation == "pca_axis":
        vol, dv = class_values.get("VoxelVolume"), _spacing_product(diagnostics)
        if vol is None or not dv:
            return float("nan")
        n = int(round(float(vol) / dv))
    return float(correct_pyradiomics(f"{feature_class}_{feature}", value, n))


def pyradiomics_rows(result: dict, settings: dict) -> list[dict]:
    """Feature rows (image_type, feature_class, feature, ibsi_code, value, ibsi_value) of a pyradiomics result."""
    from .mapping import primary_code

    diagnostics = {k: v for k, v in result.items() if k.startswith("diagnostics_")}
    values: dict[tuple[str, str], dict[str, float]] = {}
    parsed = []
    for name, v in result.items():
        if name.startswith("diagnostics_"):
            continue
        fn = FeatureName.parse(name, prefixed=False)
        if fn is None:
            raise ValueError(f"unexpected pyradiomics feature name {name!r}")
        it, fc, f = fn.image_type, fn.feature_class, fn.feature
        val = _as_float(v)
        values.setdefault((it, fc), {})[f] = val
        parsed.append((it, fc, f, val))
    rows = []
    for it, fc, f, val in parsed:
        code = primary_code(fc, f, settings)
        if code is None:
            tag, iv = "", float("nan")
        else:
            tag, rel = code
            iv = ibsi_value(fc, f, rel, val, values[(it, fc)], settings, diagnostics)
        rows.append(
            {"image_type": it, "feature_class": fc, "feature": f, "ibsi_code": tag, "value": val, "ibsi_value": iv,
             "source": "pyradiomics"}
        )
    return rows


def ibsi_rows(image, mask, params: dict, prepared=None) -> list[dict]:
    """Rows of the IBSI module (features pyradiomics lacks).

    ``prepared``: the IBSI-prepared data of these inputs, if already computed.
    """
    from .ibsi import extract_ibsi

    out = []
    for r in extract_ibsi(image, mask, params, prepared=prepared):
        val = _as_float(r.get("value"))
        out.append(
            {
                "image_type": str(r.get("image_type", "original")),
                "feature_class": str(r["feature_class"]),
                "feature": str(r["feature"]),
                "ibsi_code": str(r.get("ibsi_code") or ""),
                "value": val,
                "ibsi_value": _as_float(r.get("ibsi_value", val)) if r.get("ibsi_code") else float("nan"),
                "source": "biomarkers.ibsi",
            }
        )
    return out
