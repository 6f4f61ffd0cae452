"""The ingest manifest, its one owner: row records, writing, reading, reuse on reruns.

Reuse has one mechanism: :meth:`Manifest.reusable` over :meth:`Manifest.previous`, the rows an
earlier run left (its manifest when that checks, and the rows of image sidecars it does not list:
a run interrupted before writing its manifest); a row is reused only when its files verify.

``OUT/manifest.parquet`` and ``OUT/manifest.csv`` hold one :class:`ManifestRow` per
output object (an image stack or a mask). Identifiers in it are pseudonyms; paths are
relative to OUT. A mask row names the image it is on explicitly: ``source_series_uid``
+ ``source_stack`` (:meth:`Manifest.image_of`); ``image_path`` repeats that image's path.

Content hash: ``content_hash`` is :func:`biomarkers.io.sha256_array` of the voxel array
written (dtype, shape, C-order bytes of the ``[i, j, k]`` array), the one voxel-content
hash of an output file. (The feature long table's ``image_hash`` column is a file-level
:class:`biomarkers.io.FileHasher` digest of the same NIfTI, used as a cache key.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from pathlib import Path
from typing import Iterable

MANIFEST_FILE = "manifest.parquet"
MANIFEST_CSV = "manifest.csv"


class Kind(StrEnum):
    IMAGE = "image"
    MASK = "mask"


class Status(StrEnum):
    """Status of a manifest row (written as its value). ``pending``: an image stack not decided yet."""

    PENDING = "pending"
    CONVERTED = "converted"
    SKIPPED = "skipped"
    FAILED = "failed"

    @property
    def case(self) -> "CaseStatus":  # noqa: F821
        """The run-report status of the case (:class:`biomarkers.report.CaseStatus`)."""
        from .report import CaseStatus

        return CaseStatus.DONE if self is Status.CONVERTED else CaseStatus(self.value)


@dataclass(frozen=True)
class ImageRef:
    """Pseudonymised identity and output of one image stack (what mask rows point at)."""

    patient_id: str
    study_uid: str
    series_uid: str
    stack: str = ""  # "" or "#2", "#3"... within the series
    modality: str = ""
    path: str = ""  # images/<patient>/<tag>.nii.gz, relative to OUT
    tag: str = ""  # <MODALITY>_<series_tag>: the file stem


def _grid_cells(grid, volumes: int = 1) -> dict:
    """The ``shape`` (``X x Y x Z``, ``X x Y x Z x T`` for ``volumes`` > 1) and ``spacing`` (mm) cells of a Grid."""
    shape = tuple(grid.shape) + ((volumes,) if volumes > 1 else ()) if grid is not None else ()
    return {} if grid is None else {"shape": " x ".join(str(x) for x in shape),
                                    "spacing": " x ".join(f"{x:.6g}" for x in grid.spacing)}


@dataclass
class ManifestRow:
    """One manifest row. Fields up to ``source_stack`` are the columns (:data:`COLUMNS`), in order;
    ``case`` (run-report name) and ``cached`` (reused from an earlier run) are not written."""

    patient_id: str = ""  # pseudonym
    study_uid: str = ""  # pseudonymised UID
    series_uid: str = ""  # pseudonymised UID of the image series (for masks: the RTSTRUCT/SEG series)
    stack: str = ""  # stack key within the series ("" or "#2", ...)
    modality: str = ""  # CT / MR / PT (for masks: the modality of the image it is on)
    kind: Kind | str = Kind.IMAGE  # image | mask
    roi: str = ""  # mask only: canonical ROI name
    source_series_uid: str = ""  # mask only: image series the mask is on
    image_path: str = ""  # mask only: path (relative to OUT) of the image NIfTI the mask is on
    path: str = ""  # output NIfTI, relative to OUT
    status: Status | str = Status.CONVERTED  # converted | skipped | failed
    reason: str = ""
    n_files: int | None = None
    shape: str = ""  # "X x Y x Z" ("X x Y x Z x T" for a 4-D image)
    spacing: str = ""  # "sx x sy x sz" (mm)
    qc_flags: str = ""  # ";"-joined flags, e.g. "missing_slices;oblique"
    voxel_count: int | None = None  # mask only
    volume_ml: float | None = None  # mask only
    input_hash: str = ""  # hash of the inputs + settings that produced the object (incremental reruns)
    content_hash: str = ""  # sha256_array of the voxel array written (image or mask)
    source_stack: str = ""  # mask only: stack key of the image the mask is on (with source_series_uid)
    volumes: int | None = None  # volumes of the image (1: 3-D; T of a 4-D image); masks: 1 (3-D)
    case: str = field(default="", compare=False)
    cached: bool = field(default=False, compare=False)

    @classmethod
    def image(cls, ref: ImageRef, status: str, reason: str = "", *, n_files: int | None = None, grid=None,
              flags: Iterable[str] = (), input_hash: str = "", content_hash: str = "", volumes: int = 1) -> "ManifestRow":
        """The row of an image stack (``path`` only when converted; ``volumes``: 4th dimension, 1 for 3-D)."""
        return cls(ref.patient_id, ref.study_uid, ref.series_uid, ref.stack, ref.modality, Kind.IMAGE,
                   path=ref.path if status == Status.CONVERTED else "", status=Status(status), reason=reason,
                   n_files=n_files, qc_flags=";".join(flags), input_hash=input_hash, content_hash=content_hash,
                   case=f"{ref.patient_id}/{ref.tag}" if ref.tag else "", volumes=volumes, **_grid_cells(grid, volumes))

    @classmethod
    def mask(cls, patient_id: str, study_uid: str, series_uid: str, image: ImageRef | None, roi: str, status: str,
             reason: str = "", *, grid=None, flags: Iterable[str] = (), input_hash: str = "", n_files: int = 1,
             case: str = "") -> "ManifestRow":
        """The row of a mask of the segmentation series ``series_uid`` on ``image`` (None: not placed)."""
        img = image or ImageRef("", "", "")
        return cls(patient_id, study_uid, series_uid, img.stack, img.modality, Kind.MASK, roi, img.series_uid,
                   img.path, status=Status(status), reason=reason, n_files=n_files, qc_flags=";".join(flags),
                   input_hash=input_hash, source_stack=img.stack if image else "", volumes=1,
                   case=case or (f"{patient_id}/{img.tag}__{roi or 'object'}" if image else ""), **_grid_cells(grid))

    @classmethod
    def from_sidecar(cls, meta: dict, path: str) -> "ManifestRow":
        """The row of the image at ``path`` (relative to OUT) from its sidecar (:mod:`biomarkers.dicom.convert`:
        pseudonymised ids, geometry, QC flags, ``input_hash``, ``content_hash``): the same row its conversion gave."""
        from .geometry import Grid

        ref = ImageRef(meta["patient_id"], meta["study_uid"], meta["series_uid"], meta["stack"], meta["modality"], path)
        return cls.image(ref, Status.CONVERTED, n_files=meta["n_files"], grid=Grid.from_dict(meta["geometry"]),
                         flags=meta["qc_flags"], input_hash=meta["input_hash"], content_hash=meta["content_hash"],
                         volumes=(meta.get("volumes") or {}).get("count", 1))

    @property
    def case_name(self) -> str:
        """Name of this row's case in the run report."""
        if self.path:
            return self.path[: -len(".nii.gz")] if self.path.endswith(".nii.gz") else self.path
        roi = f"__{self.roi}" if self.kind == Kind.MASK and self.roi else ""
        return self.case or f"{self.patient_id}/{self.modality or 'OT'}_{self.series_uid[-12:]}{roi}"

    def to_dict(self) -> dict:
        """The column values (typed: ints, float, strings)."""
        return {c: _cell(c, getattr(self, c)) for c in COLUMNS}

    @classmethod
    def from_dict(cls, d: dict) -> "ManifestRow":
        """A row from column values (missing columns: defaults; NaN/None: empty)."""
        vals = {c: _cell(c, d.get(c)) for c in COLUMNS if c in d}
        vals = {c: v for c, v in vals.items() if v is not None}
        for c, enum in (("kind", Kind), ("status", Status)):
            if vals.get(c) in enum._value2member_map_:
                vals[c] = enum(vals[c])
        return cls(**vals)


#: Columns every manifest has, in order. Stages may add more columns after these.
COLUMNS: list[str] = [f.name for f in fields(ManifestRow) if f.name not in ("case", "cached")]
_INT = ("n_files", "voxel_count", "volumes")
_FLOAT = ("volume_ml",)
_SORT = ("patient_id", "kind", "modality", "path", "series_uid", "stack", "roi")


def _cell(c: str, v):
    missing = v is None or v == "" or (isinstance(v, float) and math.isnan(v))
    if c in _INT:
        return None if missing else int(v)
    if c in _FLOAT:
        return None if missing else float(v)
    return "" if missing else str(v)


class Manifest:
    """The rows of one ingest output folder."""

    def __init__(self, rows: Iterable[ManifestRow] = ()):
        self.rows = list(rows)
        self._images: dict | None = None

    def to_arrow(self):
        """A pyarrow table of :data:`COLUMNS` (int64/float64/string), sorted by patient, kind, modality, path."""
        import io
        import json

        import pyarrow as pa
        import pyarrow.json as pj

        recs = sorted((r.to_dict() for r in self.rows), key=lambda d: tuple(d[k] for k in _SORT))
        schema = pa.schema([(c, pa.int64() if c in _INT else pa.float64() if c in _FLOAT else pa.string())
                            for c in COLUMNS])
        if not recs:
            return schema.empty_table()
        # through pyarrow's JSON reader: pa.array() would import pandas (~0.3-0.7 s of an ingest run)
        def cell(v):
            return None if isinstance(v, float) and v != v else v  # NaN: null (JSON has no NaN)

        lines = "".join(json.dumps({c: cell(d[c]) for c in COLUMNS}) + "\n" for d in recs)
        return pj.read_json(io.BytesIO(lines.encode()), parse_options=pj.ParseOptions(explicit_schema=schema))

    @classmethod
    def from_records(cls, records: Iterable[dict]) -> "Manifest":
        """From column dicts (e.g. ``table.to_pylist()`` or ``DataFrame.to_dict("records")``).

        A manifest written before ``source_stack`` existed gets it from the image row whose
        ``path`` is the mask's ``image_path``.
        """
        recs = list(records)
        rows = [ManifestRow.from_dict(d) for d in recs]
        if recs and "source_stack" not in recs[0]:
            stack_of = {r.path: r.stack for r in rows if r.kind == Kind.IMAGE and r.path}
            for r in rows:
                if r.kind == Kind.MASK:
                    r.source_stack = stack_of.get(r.image_path, "")
        return cls(rows)

    @classmethod
    def from_arrow(cls, table) -> "Manifest":
        return cls.from_records(table.to_pylist())

    def write(self, out: str | Path) -> None:
        """Write ``manifest.parquet`` and ``manifest.csv`` atomically (pyarrow + csv: no pandas)."""
        import csv
        import io

        import pyarrow.parquet as pq

        from .io import atomic_path, write_text

        table = self.to_arrow()
        with atomic_path(Path(out) / MANIFEST_FILE) as tmp:
            pq.write_table(table, tmp)
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(COLUMNS)
        w.writerows(["" if v is None else v for v in row.values()] for row in table.to_pylist())
        write_text(Path(out) / MANIFEST_CSV, buf.getvalue())

    @classmethod
    def read(cls, dataset: str | Path, missing_ok: bool = False) -> "Manifest":
        """Read ``DATASET/manifest.parquet``; with ``missing_ok`` a missing or damaged file is an empty manifest."""
        import pyarrow.parquet as pq

        try:
            return cls.from_arrow(pq.read_table(_require(dataset)))
        except Exception:  # noqa: BLE001 - (missing_ok) a damaged manifest only means recomputing
            if missing_ok:
                return cls()
            raise

    def image_of(self, mask) -> ManifestRow | None:
        """The image row a mask row (a ManifestRow or a mapping, e.g. a pandas row) is on, from its
        explicit reference ``source_series_uid`` + ``source_stack`` (a converted image first)."""
        if self._images is None:
            self._images = {}
            for r in self.rows:
                key = (r.series_uid, r.stack)
                if r.kind == Kind.IMAGE and (key not in self._images or r.status == Status.CONVERTED):
                    self._images[key] = r
        m = mask if isinstance(mask, ManifestRow) else ManifestRow.from_dict(dict(mask))
        return self._images.get((m.source_series_uid, m.source_stack)) if m.source_series_uid else None

    @classmethod
    def previous(cls, out: str | Path, usable_manifest=None) -> "Manifest":
        """The rows an earlier run left in ``out`` for :meth:`reusable`: its manifest, when
        ``usable_manifest(MANIFEST_FILE)`` says it is as written (ingest: its integrity record; a
        damaged manifest is reported and none of its rows is reused), and the row of every image
        sidecar whose NIfTI it does not list (written by a run interrupted before its manifest;
        it replaces the manifest's rows of the same inputs). Missing or unreadable: no rows."""
        import json

        out = Path(out)
        ok = usable_manifest or (lambda rel: (out / rel).is_file())
        prev = cls.read(out, missing_ok=True) if ok(MANIFEST_FILE) else cls()
        listed = {r.path for r in prev.rows if r.path}
        found = []
        for side in sorted(out.glob("images/*/*.json")):
            rel = side.relative_to(out).as_posix()[: -len(".json")] + ".nii.gz"
            if rel in listed or side.name.startswith("."):  # listed, or a temporary of an interrupted write
                continue
            try:
                found.append(ManifestRow.from_sidecar(json.loads(side.read_text("utf-8")), rel))
            except (OSError, ValueError, KeyError, TypeError):  # unreadable: that image is converted again
                continue
        hashes = {r.input_hash for r in found}
        return cls([r for r in prev.rows if r.input_hash not in hashes] + found)

    def reusable(self, input_hash: str, out: str | Path, usable=None) -> list[ManifestRow] | None:
        """Rows made from inputs hashing to ``input_hash`` whose output files can be reused, marked
        ``cached`` (None: nothing to reuse; recompute). ``usable(row)`` says whether the files of a
        converted row are as written (ingest: their integrity records); default: its file exists."""
        ok = usable or (lambda row: (Path(out) / row.path).is_file())
        rows = [replace(r, cached=True) for r in self.rows if input_hash and r.input_hash == input_hash]
        if not rows or not all([ok(r) for r in rows if r.status == Status.CONVERTED]):
            return None
        if any(r.status == Status.FAILED for r in rows):
            return None  # a failure may have been the run's (interrupted, out of memory): tried again
        return rows


def _require(dataset: str | Path) -> Path:
    """``DATASET/manifest.parquet``; InputError when it does not exist."""
    if not (Path(dataset) / MANIFEST_FILE).is_file():
        from .errors import InputError

        raise InputError(f"{dataset}: not an ingest output (no manifest.parquet); run 'biomarkers ingest' first")
    return Path(dataset) / MANIFEST_FILE


def read_manifest(dataset: str | Path) -> "pd.DataFrame":  # noqa: F821
    """Read ``DATASET/manifest.parquet`` (a ``biomarkers ingest`` output folder) as a DataFrame."""
    import pandas as pd  # lazy: importing COLUMNS must stay cheap (ingest workers)

    return pd.read_parquet(_require(dataset))
