"""The data dictionary of a release: one row per column of every released table.

Feature columns are named as pyradiomics names them, ``<image_type>_<feature_class>_<feature>``
(parsed by :class:`biomarkers.features.naming.FeatureName`).
The meaning comes from pyradiomics' own documentation of the feature (first sentence
of the feature's docstring), the IBSI tag from the extraction's ``features_long.parquet``
(``ibsi_code`` column) or else from ``biomarkers/features/data/ibsi_mapping.csv``,
the extraction settings from ``FEATURES/provenance.json``.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Mapping

import pandas as pd

from ..features.naming import LONG_TABLE, NAME_COLUMNS, FeatureName

DICTIONARY_COLUMNS = [
    "file", "column", "dtype", "kind", "meaning", "unit", "feature_class", "feature", "image_type", "filter",
    "ibsi_code", "extraction_settings", "n_missing",
]

KEY_MEANINGS = {
    "patient_id": "Pseudonymised patient id (keyed HMAC of the hospital id; identical in features.parquet and clinical.parquet)",
    "study_uid": "Pseudonymised DICOM StudyInstanceUID (new UID under root 2.25)",
    "series_uid": "Pseudonymised DICOM SeriesInstanceUID of the image series the features were computed on",
    "modality": "Imaging modality of the series (DICOM Modality: CT, MR, PT)",
    "roi": "Canonical name of the region of interest (segmentation) the features were computed in",
    "centre": "Centre (hospital) that provided the patient",
    "age_band": "Age band (years) derived from the age at diagnosis",
}

CLASS_NAMES = {
    "firstorder": "First-order (intensity histogram) statistics",
    "shape": "3D shape",
    "shape2D": "2D shape",
    "glcm": "Gray Level Co-occurrence Matrix",
    "glrlm": "Gray Level Run Length Matrix",
    "glszm": "Gray Level Size Zone Matrix",
    "gldm": "Gray Level Dependence Matrix",
    "ngtdm": "Neighbouring Gray Tone Difference Matrix",
}

INTENSITY = "image intensity (HU for CT, SUV for PET, arbitrary units for MR)"
_FO_INTENSITY = {"Mean", "Median", "Minimum", "Maximum", "Range", "10Percentile", "90Percentile", "InterquartileRange",
                 "MeanAbsoluteDeviation", "RobustMeanAbsoluteDeviation", "RootMeanSquared", "StandardDeviation"}


def feature_unit(feature_class: str, feature: str, image_type: str) -> str:
    """Unit of a pyradiomics feature (shape in mm; intensities in the modality's unit)."""
    inten = INTENSITY if image_type == "original" else f"filtered {INTENSITY}"
    if feature_class.startswith("shape"):
        if "Volume" in feature and "Ratio" not in feature:
            return "mm^3" if feature_class == "shape" else "mm^2"
        if "SurfaceArea" == feature or feature == "Perimeter":
            return "mm^2" if feature_class == "shape" else "mm"
        if any(w in feature for w in ("Diameter", "AxisLength", "Axis")):
            return "mm"
        if feature in ("SurfaceVolumeRatio", "PerimeterSurfaceRatio"):
            return "1/mm"
        return "dimensionless"
    if feature_class == "firstorder" or feature_class.startswith("ibsi"):
        if feature in _FO_INTENSITY:
            return inten
        if feature in ("Variance", "Energy"):
            return f"({inten})^2"
        if feature == "TotalEnergy":
            return f"({inten})^2 x mm^3"
        if feature == "Entropy":
            return "bits"
        return "dimensionless"
    return "dimensionless (depends on the intensity discretisation)"


def describe_filter(image_type: str) -> str:
    if image_type == "original":
        return "none (original image)"
    if image_type.startswith("wavelet-"):
        return f"wavelet, sub-band {image_type.split('-', 1)[1]} (L: low-pass, H: high-pass along x, y, z)"
    m = re.fullmatch(r"log-sigma-(\d+)-(\d+)-mm-(\w+)", image_type)
    if m:
        return f"Laplacian of Gaussian, sigma {m.group(1)}.{m.group(2)} mm ({m.group(3)})"
    return image_type


@functools.lru_cache(maxsize=None)
def pyradiomics_meaning(feature_class: str, feature: str) -> str:
    """Title and first sentence of pyradiomics' documentation of the feature ('' if unknown)."""
    try:
        from radiomics import getFeatureClasses

        cls = getFeatureClasses().get(feature_class)
        doc = getattr(cls, f"get{feature}FeatureValue").__doc__ if cls is not None else None
    except Exception:  # pragma: no cover - radiomics is a dependency
        return ""
    if not doc:
        return ""
    paras = [p.strip() for p in re.split(r"\n\s*\n", doc) if p.strip()]
    title = ""
    m = re.match(r"\*\*\s*\d*\.?\s*(.+?)\*\*", paras[0]) if paras else None
    if m:
        title = m.group(1).strip()
        paras = paras[1:]
    prose = ""
    for p in paras:
        if p.startswith(".. ") or p.startswith(":") or "\\" in p.split("\n")[0]:
            continue
        text = re.sub(r":math:`([^`]*)`", r"\1", " ".join(line.strip() for line in p.splitlines()))
        prose = re.split(r"(?<=[A-Za-z0-9)])\.\s+(?=[A-Z])", text, maxsplit=1)[0].strip().rstrip(".") + "."
        break
    return f"{title}: {prose}" if title and prose else title or prose


def ibsi_codes_from_features(features_dir: Path | None) -> dict[tuple[str, str, str], str]:
    """(image_type, feature_class, feature) -> IBSI code(s) from FEATURES/features_long.parquet."""
    if features_dir is None:
        return {}
    f = Path(features_dir) / LONG_TABLE
    if not f.is_file():
        return {}
    long = pd.read_parquet(f, columns=NAME_COLUMNS + ["ibsi_code"])
    long = long[long["ibsi_code"].notna() & (long["ibsi_code"].astype(str) != "")]
    out: dict[tuple[str, str, str], set[str]] = {}
    for r in long.drop_duplicates().itertuples(index=False):
        out.setdefault((r.image_type, r.feature_class, r.feature), set()).add(str(r.ibsi_code))
    return {k: "; ".join(sorted(v)) for k, v in out.items()}


def ibsi_code_from_mapping(feature_class: str, feature: str, settings_list: list[Mapping]) -> str:
    from ..features.mapping import primary_code

    codes = set()
    for s in settings_list or [{}]:
        c = primary_code(feature_class, feature, s)
        if c:
            codes.add(c[0])
    return "; ".join(sorted(codes))


def read_provenance(features_dir: Path | None) -> dict:
    if features_dir is None:
        return {}
    f = Path(features_dir) / "provenance.json"
    if not f.is_file():
        return {}
    return json.loads(f.read_text(encoding="utf-8"))


def extraction_settings(provenance: Mapping) -> dict[str, dict]:
    """Per parameter set (keyed by modality or name): the pyradiomics ``setting`` section and hash.

    Paths are left out (they may name users or hospitals).
    """
    out = {}
    for p in provenance.get("params", []) or []:
        key = p.get("modality") or p.get("name") or "default"
        params = p.get("params") or {}
        out[str(key)] = {
            "name": p.get("name"),
            "param_hash": p.get("param_hash"),
            "setting": params.get("setting", {}),
            "imageType": params.get("imageType", {}),
        }
    return out


def build_dictionary(
    features: pd.DataFrame,
    clinical: pd.DataFrame,
    schema=None,
    features_dir: Path | None = None,
    age_band_years: int | None = None,
    derived: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """The data dictionary (see module docstring); one row per column of both tables."""
    prov = read_provenance(features_dir)
    settings = extraction_settings(prov)
    settings_list = [s["setting"] for s in settings.values()]
    settings_text = json.dumps({k: v["setting"] for k, v in settings.items()}, sort_keys=True) if settings else ""
    long_codes = ibsi_codes_from_features(features_dir)
    rows = []
    for col in features.columns:
        s = features[col]
        base = {"file": "features.parquet", "column": col, "dtype": str(s.dtype), "n_missing": int(s.isna().sum())}
        if col in KEY_MEANINGS:
            rows.append({**base, "kind": "key", "meaning": KEY_MEANINGS[col]})
            continue
        name = FeatureName.parse(col, prefixed=False)
        if name is None:
            rows.append({**base, "kind": "feature", "meaning": "feature column (not in pyradiomics naming)"})
            continue
        image_type, fclass, feat = name.image_type, name.feature_class, name.feature
        meaning = pyradiomics_meaning(fclass, feat)
        if not meaning:
            family = "IBSI-only feature computed by biomarkers" if fclass.startswith("ibsi") else f"{fclass} feature"
            meaning = f"{family}: {feat}"
        meaning = f"{CLASS_NAMES.get(fclass, fclass)} - {meaning}"
        code = long_codes.get((image_type, fclass, feat)) or ibsi_code_from_mapping(fclass, feat, settings_list)
        rows.append({
            **base, "kind": "feature", "meaning": meaning, "unit": feature_unit(fclass, feat, image_type),
            "feature_class": fclass, "feature": feat, "image_type": image_type, "filter": describe_filter(image_type),
            "ibsi_code": code, "extraction_settings": settings_text,
        })
    variables = getattr(schema, "variables", {}) or {}
    for col in clinical.columns:
        s = clinical[col]
        base = {"file": "clinical.parquet", "column": col, "dtype": str(s.dtype), "n_missing": int(s.isna().sum())}
        if col in variables:
            v = variables[col]
            meaning = v.description or col
            allowed = v.allowed_values()
            if allowed:
                meaning += f" (values: {', '.join(map(str, allowed))})"
            elif v.min is not None or v.max is not None:
                meaning += f" (range {'-inf' if v.min is None else f'{v.min:g}'} to {'inf' if v.max is None else f'{v.max:g}'})"
            if v.age:
                meaning += "; capped at the de-identification maximum age"
            if v.type == "date":
                meaning += "; shifted per patient by the de-identification offset"
            rows.append({**base, "kind": "clinical", "meaning": meaning, "unit": v.unit or ""})
        elif derived and col in derived:
            rows.append({**base, "kind": "clinical", "meaning": derived[col], "unit": "days"})
        elif col == "age_band" and age_band_years:
            rows.append({**base, "kind": "clinical", "meaning": KEY_MEANINGS["age_band"] + f", {age_band_years}-year bands", "unit": "years"})
        else:
            rows.append({**base, "kind": "key" if col == "patient_id" else "clinical", "meaning": KEY_MEANINGS.get(col, col)})
    df = pd.DataFrame(rows, columns=DICTIONARY_COLUMNS)
    for c in DICTIONARY_COLUMNS:
        if c != "n_missing":
            df[c] = df[c].fillna("").astype(str)
    return df


def dictionary_markdown(d: pd.DataFrame, settings: Mapping | None = None) -> str:
    """Markdown rendering: one table per file, then the extraction settings."""
    out = ["# Data dictionary", ""]
    for f, part in d.groupby("file", sort=False):
        out += [f"## {f}", "", "| column | type | meaning | unit | class | image type / filter | IBSI |", "|---|---|---|---|---|---|---|"]
        for r in part.itertuples(index=False):
            cells = [f"`{r.column}`", r.dtype, r.meaning, r.unit, r.feature_class,
                     (f"{r.image_type}: {r.filter}" if r.image_type else ""), r.ibsi_code]
            out.append("| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
        out.append("")
    if settings:
        out += ["## Extraction settings (pyradiomics)", "", "```json", json.dumps(settings, indent=2, sort_keys=True), "```", ""]
    return "\n".join(out)
