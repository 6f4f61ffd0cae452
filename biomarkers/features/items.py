"""One work item = one (patient, image series, ROI, parameter file); runs inside a worker.

:func:`extract_item` reads the image and mask, checks them (geometry, empty or
one-voxel ROI), runs pyradiomics (and the IBSI module when the parameter file has
an ``ibsi:`` section), and writes ``FEATURES/items/<key>.parquet`` atomically. A
failure raises with its reason; the executor turns it into a failed item while
the others go on.

Item keys (:func:`item_key`) hash everything the features depend on: the case
identity, the image and mask content hashes, the parameter hash and the library
versions. An existing item file is never recomputed.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import GeometryError, InputError
from ..io import atomic_path, sha256_json

#: Bump when the item files' content or the way values are computed changes.
ITEM_FORMAT = "1"

#: Identity columns of every table row.
KEY_COLUMNS = ["patient_id", "study_uid", "series_uid", "modality", "roi"]
#: Long-table columns (issue 5) followed by provenance columns.
LONG_COLUMNS = KEY_COLUMNS + ["image_type", "feature_class", "feature", "ibsi_code", "value"]
PROVENANCE_COLUMNS = [
    "ibsi_value",
    "source",
    "params_name",
    "params_hash",
    "image_hash",
    "mask_hash",
    "item_key",
]


def library_versions(with_ibsi: bool = False) -> dict[str, str]:
    """Versions of the libraries the features depend on (part of every item key).

    ``with_ibsi``: include the IBSI module's version (parameter files with an ``ibsi:`` section);
    otherwise that package is not imported (it pulls in scipy: seconds of start-up).
    """
    import numpy
    import radiomics
    import SimpleITK

    v = {
        "pyradiomics": str(radiomics.__version__),
        "SimpleITK": str(SimpleITK.Version_VersionString()),
        "numpy": str(numpy.__version__),
        "item_format": ITEM_FORMAT,
    }
    try:
        import pywt

        v["PyWavelets"] = str(pywt.__version__)
    except ImportError:  # pragma: no cover
        pass
    ibsi = ibsi_module() if with_ibsi else None
    if ibsi is not None:
        v["biomarkers.features.ibsi"] = str(getattr(ibsi, "__version__", "0"))
    return v


def ibsi_module():
    """The IBSI sub-package if installed (it provides ``extract_ibsi``), else None."""
    try:
        from . import ibsi  # noqa: PLC0415
    except ImportError:
        return None
    return ibsi if hasattr(ibsi, "extract_ibsi") else None


def item_key(identity: dict, image_hash: str, mask_hash: str, param_hash: str, versions: dict) -> str:
    """Key of one item: 24 hex digits of a SHA-256 over everything its features depend on."""
    return sha256_json(
        {"case": identity, "image": image_hash, "mask": mask_hash, "params": param_hash, "versions": versions}
    )[:24]


@dataclass
class Item:
    """Payload sent to a worker (picklable; paths absolute)."""

    key: str
    patient_id: str
    study_uid: str
    series_uid: str
    modality: str
    roi: str
    image_path: str
    mask_path: str
    params_name: str
    params: dict  # the whole parameter file (with an ``ibsi`` section if any)
    params_hash: str
    image_hash: str
    mask_hash: str
    out_path: str
    geometry_tolerance_mm: float = 1e-3
    details: dict = field(default_factory=dict)

    @property
    def case(self) -> str:
        return f"{self.patient_id}/{self.modality}/{self.series_uid}/{self.roi}/{self.params_name}"


# --------------------------------------------------------------------------- checks
def check_pair(image, mask, label: int, image_name: str, mask_name: str, atol_mm: float = 1e-3) -> int:
    """Check a SimpleITK image/mask pair before extraction; return the ROI voxel count.

    Raises:
        GeometryError: shape, spacing, origin (LPS mm) or direction differ.
        InputError: the mask has no voxel with ``label`` (names the labels it has) or only one.
    """
    import numpy as np

    from ..geometry import Grid

    if image.GetDimension() != 3 or mask.GetDimension() != 3:
        raise InputError(f"{mask_name}: image and mask must be 3-D (got {image.GetDimension()}-D and {mask.GetDimension()}-D)")
    reason = Grid.from_sitk(image).mismatch(Grid.from_sitk(mask), atol_mm=atol_mm, atol_dir=max(1e-5, atol_mm * 1e-2))
    if reason:
        raise GeometryError(f"geometry mismatch: mask {mask_name} vs image {image_name}: mask {reason}")
    import SimpleITK as sitk

    arr = sitk.GetArrayViewFromImage(mask)
    n = int(np.count_nonzero(arr == label))
    if n == 0:
        present = [int(v) for v in np.unique(arr) if v != 0][:10]
        extra = f" (labels present: {present})" if present else ""
        raise InputError(f"empty mask: {mask_name} has no voxel with label {label}{extra}")
    if n == 1:
        raise InputError(f"one-voxel ROI: {mask_name} has a single voxel with label {label}; texture and shape undefined")
    return n


# --------------------------------------------------------------------------- rows
def split_name(name: str) -> tuple[str, str, str]:
    """``original_glcm_Contrast`` -> ``("original", "glcm", "Contrast")``."""
    parts = name.split("_", 2)
    if len(parts) != 3:
        raise ValueError(f"unexpected pyradiomics feature name {name!r}")
    return parts[0], parts[1], parts[2]


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
    correct_pyradiomics = _corrections().correct_pyradiomics
    n = 0
    if relation == "pca_axis":
        vol, dv = class_values.get("VoxelVolume"), _spacing_product(diagnostics)
        if vol is None or not dv:
            return float("nan")
        n = int(round(float(vol) / dv))
    return float(correct_pyradiomics(f"{feature_class}_{feature}", value, n))


def _corrections():
    """:mod:`biomarkers.features.ibsi.corrections` without importing the whole IBSI package.

    The package's ``__init__`` imports every feature family (scipy; about 80 MB per worker
    process); the corrections module needs only the standard library and numpy, so workers
    that only run pyradiomics load that one file (registered under its own name, so a later
    ``import biomarkers.features.ibsi`` reuses it).
    """
    import importlib.util
    import sys

    name = "biomarkers.features.ibsi.corrections"
    mod = sys.modules.get(name)
    if mod is None:
        path = Path(__file__).resolve().parent / "ibsi" / "corrections.py"
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        sys.modules[name] = mod
    return mod


def pyradiomics_rows(result: dict, settings: dict) -> list[dict]:
    """Feature rows (image_type, feature_class, feature, ibsi_code, value, ibsi_value) of a pyradiomics result."""
    from .mapping import primary_code

    diagnostics = {k: v for k, v in result.items() if k.startswith("diagnostics_")}
    values: dict[tuple[str, str], dict[str, float]] = {}
    parsed = []
    for name, v in result.items():
        if name.startswith("diagnostics_"):
            continue
        it, fc, f = split_name(name)
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
    """Rows of the IBSI module (features pyradiomics lacks), or [] when it is not installed.

    ``prepared``: the IBSI-prepared data of these inputs, if already computed.
    """
    mod = ibsi_module()
    if mod is None:
        return []
    out = []
    for r in mod.extract_ibsi(image, mask, params, prepared=prepared):
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


def long_schema():
    """Arrow schema of item files and of the long table: float64 values, strings otherwise."""
    import pyarrow as pa

    floats = {"value", "ibsi_value"}
    return pa.schema([(c, pa.float64() if c in floats else pa.string()) for c in LONG_COLUMNS + PROVENANCE_COLUMNS])


def write_item(path: str | Path, rows: list[dict]) -> None:
    """Write an item's rows as Parquet, atomically (pyarrow only: no pandas in the workers)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = long_schema()
    table = pa.table({c: [r[c] for r in rows] for c in schema.names}, schema=schema)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MB)."""
    import resource
    import sys

    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / (1024.0 * 1024.0) if sys.platform == "darwin" else r / 1024.0


# --------------------------------------------------------------------------- worker
_EXTRACTORS: dict[str, Any] = {}


def _extractor(pyr_params: dict):
    """A pyradiomics extractor per parameter content, kept for the life of the worker process
    (building one validates the parameters with pykwalify: ~0.2 s, 15 % of a CT item)."""
    from radiomics import featureextractor

    key = sha256_json(pyr_params)
    ex = _EXTRACTORS.get(key)
    if ex is None:
        if len(_EXTRACTORS) > 16:
            _EXTRACTORS.clear()
        ex = _EXTRACTORS[key] = featureextractor.RadiomicsFeatureExtractor(pyr_params)
    return ex


#: pyradiomics settings that the IBSI mode replaces by its own processing.
IBSI_REPLACED_SETTINGS = ("resampledPixelSpacing", "interpolator", "resegmentRange", "resegmentMode",
                          "resegmentShape", "preCrop", "padDistance", "label")


def ibsi_prepared_pyradiomics_params(pyr: dict) -> dict:
    """pyradiomics parameters for data already prepared by the IBSI mode.

    Resampling, resegmentation and label selection were done by
    :func:`biomarkers.features.ibsi.prepare_sitk` (the mask it returns is 0/1), so the
    corresponding pyradiomics settings are removed. Discretisation stays pyradiomics' own:
    with ``binWidth`` its bins start at ``floor(min/binWidth)*binWidth``, which equals IBSI's
    "bins start at the resegmentation lower bound" when that bound is a multiple of the width
    (as in the IBSI configurations); the IBSI-coded rows always come from the IBSI module.
    """
    out = dict(pyr)
    out["setting"] = {k: v for k, v in dict(pyr.get("setting") or {}).items() if k not in IBSI_REPLACED_SETTINGS}
    return out


def compute_rows(image, mask, params: dict, label: int) -> tuple[list[dict], dict]:
    """Run pyradiomics (+ the IBSI module when ``params`` has an ``ibsi`` section) on SimpleITK images."""
    import logging

    import radiomics  # noqa: F401 - its import sets the "radiomics" logger's level: quiet it afterwards

    from .params import strip_extra

    logging.getLogger("radiomics").setLevel(logging.ERROR)
    info: dict = {}
    rows: list[dict] = []
    prepared = None
    ibsi_section = params.get("ibsi")
    run_pyradiomics = not (isinstance(ibsi_section, dict) and ibsi_section.get("pyradiomics") is False)
    if run_pyradiomics:
        pyr = strip_extra(params)
        p_image, p_mask, p_label = image, mask, label
        if ibsi_section is not None and ibsi_module() is not None:
            # IBSI mode: pyradiomics computes its features on the IBSI-prepared data
            # (centre-aligned resampling, rounding, mask interpolated and thresholded at 0.5,
            # resegmentation); its own resampling and resegmentation are switched off.
            prepared = ibsi_module().prepare_from_sitk(image, mask, params)  # once: also serves ibsi_rows
            p_image, p_mask, _morph = ibsi_module().prepared_to_sitk(prepared, image)
            p_label = 1
            pyr = ibsi_prepared_pyradiomics_params(pyr)
            info["pyradiomics_input"] = "ibsi-prepared"
        extractor = _extractor(pyr)
        try:
            result = extractor.execute(p_image, p_mask, label=p_label)
        except Exception as exc:  # noqa: BLE001 - becomes the item's reason
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"pyradiomics failed: {type(exc).__name__}: {msg}") from None
        rows = pyradiomics_rows(result, dict(pyr.get("setting") or {}))
    if ibsi_section is not None:
        extra = ibsi_rows(image, mask, params, prepared=prepared)
        info["ibsi"] = "computed" if ibsi_module() is not None else "unavailable (biomarkers.features.ibsi not installed)"
        if extra:
            have = {(r["image_type"], r["feature_class"], r["feature"]): i for i, r in enumerate(rows)}
            for r in extra:
                k = (r["image_type"], r["feature_class"], r["feature"])
                if k in have:
                    rows[have[k]] = r
                else:
                    rows.append(r)
    return rows, info


def extract_item(item: Item) -> dict:
    """Compute one item and write its Parquet file atomically (runs in a worker).

    Returns a small summary (number of features, seconds, peak memory of the worker in MB).
    """
    import SimpleITK as sitk

    t0 = time.perf_counter()
    for p, what in ((item.image_path, "image"), (item.mask_path, "mask")):
        if not Path(p).is_file():
            raise InputError(f"{what} file not found: {p}")
    try:
        image = sitk.ReadImage(item.image_path)
        mask = sitk.ReadImage(item.mask_path)
    except RuntimeError as exc:
        raise InputError(f"cannot read {item.image_path} / {item.mask_path}: {str(exc).strip().splitlines()[-1]}") from None
    settings = dict(item.params.get("setting") or {})
    label = int(settings.get("label", 1) or 1)
    n_voxels = check_pair(
        image, mask, label, Path(item.image_path).name, Path(item.mask_path).name, item.geometry_tolerance_mm
    )
    rows, info = compute_rows(image, mask, item.params, label)
    if not rows:
        raise InputError("no features computed (check featureClass / imageType in the parameter file)")
    ident = {
        "patient_id": item.patient_id,
        "study_uid": item.study_uid,
        "series_uid": item.series_uid,
        "modality": item.modality,
        "roi": item.roi,
        "params_name": item.params_name,
        "params_hash": item.params_hash,
        "image_hash": item.image_hash,
        "mask_hash": item.mask_hash,
        "item_key": item.key,
    }
    write_item(item.out_path, [{**ident, **r} for r in rows])
    return {
        "n_features": len(rows),
        "roi_voxels": n_voxels,
        "seconds": round(time.perf_counter() - t0, 4),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        **info,
    }
