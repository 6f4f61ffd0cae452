"""The ingest manifest: one row per output object (image or mask).

Written as ``OUT/manifest.parquet`` and ``OUT/manifest.csv``. Downstream stages
(extraction, pipeline) read it with :func:`read_manifest`. Identifiers in it are
pseudonyms; paths are relative to OUT.
"""

from __future__ import annotations

from pathlib import Path

#: Columns every manifest has, in order. Stages may add more columns after these.
COLUMNS: list[str] = [
    "patient_id",  # pseudonym
    "study_uid",  # pseudonymised UID
    "series_uid",  # pseudonymised UID of the image series (for masks: the RTSTRUCT/SEG series)
    "stack",  # stack key within the series ("" or "#2", ...)
    "modality",  # CT / MR / PT (for masks: the modality of the image it is on)
    "kind",  # image | mask
    "roi",  # mask only: canonical ROI name
    "source_series_uid",  # mask only: image series the mask is on
    "image_path",  # mask only: path (relative to OUT) of the image NIfTI the mask is on
    "path",  # output NIfTI, relative to OUT
    "status",  # converted | skipped | failed
    "reason",
    "n_files",
    "shape",  # "X x Y x Z"
    "spacing",  # "sx x sy x sz" (mm)
    "qc_flags",  # ";"-joined flags, e.g. "missing_slices;oblique"
    "voxel_count",  # mask only
    "volume_ml",  # mask only
    "input_hash",  # hash of the inputs + settings that produced the object (incremental reruns)
    "content_hash",  # sha256 of the voxel array written (image or mask)
]


def read_manifest(dataset: str | Path) -> "pd.DataFrame":  # noqa: F821
    """Read ``DATASET/manifest.parquet`` (a ``biomarkers ingest`` output folder)."""
    import pandas as pd  # lazy: importing COLUMNS must stay cheap (ingest workers)

    p = Path(dataset) / "manifest.parquet"
    if not p.is_file():
        from .errors import InputError

        raise InputError(f"{dataset}: not an ingest output (no manifest.parquet); run 'biomarkers ingest' first")
    return pd.read_parquet(p)
