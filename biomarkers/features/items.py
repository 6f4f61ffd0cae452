"""One work item = one (patient, image series, ROI, parameter file); runs inside a worker.

:func:`extract_item` reads the image and mask, checks them (geometry, empty or
one-voxel ROI), runs pyradiomics (and the IBSI module when the parameter file has
an ``ibsi:`` section; rows built by :mod:`biomarkers.features.rows`), and writes
``FEATURES/items/<key>.parquet`` atomically (schema: :func:`biomarkers.features.naming.long_schema`). A
failure raises with its reason; the executor turns it into a failed item while
the others go on.

Item keys (:func:`item_key`) hash everything the features depend on: the case
identity, the image and mask content hashes, the parameter hash and the library
versions. An existing item file is never recomputed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import GeometryError, InputError
from ..io import atomic_path, sha256_json
from .naming import FILTER_COLUMN, KEY_COLUMNS, NAME_COLUMNS, VOLUME_COLUMN, long_schema

#: Bump when the item files' content or the way values are computed changes.
ITEM_FORMAT = "1"


def library_versions(with_ibsi: bool = False) -> dict[str, str]:
    """Versions of the libraries the features depend on (part of every item key).

    ``with_ibsi``: include the IBSI module's version (parameter files with an ``ibsi:`` section);
    otherwise that package is not imported.
    """
    import numpy
    import pywt
    import radiomics
    import SimpleITK

    v = {"pyradiomics": str(radiomics.__version__), "SimpleITK": str(SimpleITK.Version_VersionString()),
         "numpy": str(numpy.__version__), "item_format": ITEM_FORMAT, "PyWavelets": str(pywt.__version__)}
    if with_ibsi:
        from .ibsi import __version__ as ibsi_version  # the package's __init__ is light (families lazy)

        v["biomarkers.features.ibsi"] = str(ibsi_version)
        from .filters import __version__ as filters_version  # IBSI 2 filters (``ibsi: filters:``)

        v["biomarkers.features.filters"] = str(filters_version)
    return v


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
    volume: int | None = None  # 0-based volume of a 4-D image (rows get VOLUME_COLUMN); None: a 3-D item

    @property
    def case(self) -> str:
        v = f"/volume-{self.volume}" if self.volume is not None else ""
        return f"{self.patient_id}/{self.modality}/{self.series_uid}/{self.roi}/{self.params_name}{v}"


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


def one_volume(image, volume: int, name: str):
    """Volume ``volume`` (0-based) of a 4-D SimpleITK image as a 3-D image on its grid (a 3-D image: volume 0)."""
    import SimpleITK as sitk

    n = image.GetSize()[3] if image.GetDimension() == 4 else 1
    if not 0 <= volume < n:
        raise InputError(f"{name}: volume {volume} selected, the image has {n} volume(s)")
    if image.GetDimension() != 4:
        return image
    size = list(image.GetSize())
    size[3] = 0
    return sitk.Extract(image, size, [0, 0, 0, volume])


def write_item(path: str | Path, rows: list[dict]) -> None:
    """Write an item's rows as Parquet, atomically (pyarrow only: no pandas in the workers)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = long_schema(filtered=any(FILTER_COLUMN in r for r in rows), volumes=any(VOLUME_COLUMN in r for r in rows))
    table = pa.table({c: [r.get(c, "") if c == FILTER_COLUMN else r[c] for r in rows] for c in schema.names},
                     schema=schema)
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


def compute_rows(image, mask, params: dict, label: int) -> tuple[list[dict], dict]:
    """Run pyradiomics (+ the IBSI module when ``params`` has an ``ibsi`` section) on SimpleITK images."""
    import logging

    import radiomics  # noqa: F401 - its import sets the "radiomics" logger's level: quiet it afterwards

    from .params import ibsi_prepared_pyradiomics_params, strip_extra
    from .rows import ibsi_rows, pyradiomics_rows

    logging.getLogger("radiomics").setLevel(logging.ERROR)
    info: dict = {}
    rows: list[dict] = []
    prepared = None
    ibsi_section = params.get("ibsi")
    run_pyradiomics = not (isinstance(ibsi_section, dict) and ibsi_section.get("pyradiomics") is False)
    if run_pyradiomics:
        pyr = strip_extra(params)
        p_image, p_mask, p_label = image, mask, label
        if ibsi_section is not None:
            # IBSI mode: pyradiomics computes its features on the IBSI-prepared data
            # (centre-aligned resampling, rounding, mask interpolated and thresholded at 0.5,
            # resegmentation); its own resampling and resegmentation are switched off.
            from .ibsi import prepare_from_sitk, prepared_to_sitk

            prepared = prepare_from_sitk(image, mask, params)  # once: also serves ibsi_rows
            p_image, p_mask, _morph = prepared_to_sitk(prepared, image)
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
        info["ibsi"] = "computed"
        have = {tuple(r[c] for c in NAME_COLUMNS): i for i, r in enumerate(rows)}
        # ``families: []`` (e.g. filters only): no IBSI 1 features, so no IBSI 1 processing either
        no_families = ibsi_section.get("families") == [] and prepared is None
        for r in ([] if no_families else ibsi_rows(image, mask, params, prepared=prepared)):
            k = tuple(r[c] for c in NAME_COLUMNS)
            if k in have:
                rows[have[k]] = r
            else:
                rows.append(r)
        if ibsi_section.get("filters"):  # IBSI 2 response maps: rows keyed by the filter column
            from .filters.features import filter_rows

            frows = filter_rows(image, mask, params)
            info["ibsi_filters"] = len({r[FILTER_COLUMN] for r in frows})
            rows += frows
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
    if item.volume is not None:
        image = one_volume(image, item.volume, Path(item.image_path).name)
    settings = dict(item.params.get("setting") or {})
    label = int(settings.get("label", 1) or 1)
    n_voxels = check_pair(
        image, mask, label, Path(item.image_path).name, Path(item.mask_path).name, item.geometry_tolerance_mm
    )
    rows, info = compute_rows(image, mask, item.params, label)
    if not rows:
        raise InputError("no features computed (check featureClass / imageType in the parameter file)")
    # the item's keys (per-row keys, e.g. the IBSI 2 filter column, come with the rows)
    ident = {c: getattr(item, c) for c in KEY_COLUMNS + ["params_name", "params_hash", "image_hash", "mask_hash"]}
    ident["item_key"] = item.key
    if item.volume is not None:
        ident[VOLUME_COLUMN] = item.volume
    write_item(item.out_path, [{**ident, **r} for r in rows])
    return {
        "n_features": len(rows),
        "roi_voxels": n_voxels,
        "seconds": round(time.perf_counter() - t0, 4),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        **info,
    }
