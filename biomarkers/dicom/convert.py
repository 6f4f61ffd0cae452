"""Convert one qualified image stack to NIfTI (a work item: runs in an executor worker).

Pixel data are read here, per stack: straight from the file bytes for
uncompressed little-endian files (offset found by the index), through pydicom
otherwise (compressed transfer syntaxes decode with the pylibjpeg plugins:
JPEG baseline/lossless, JPEG-LS, JPEG 2000, RLE).

Values: rescale slope/intercept applied per slice. Integer results (slope 1,
integer intercepts: CT in HU, MR without rescale) stay integers (int16 when
they fit, else uint16/int32), anything else is float32 (computed in float64).
PET in Bq/ml becomes SUVbw (see :mod:`biomarkers.dicom.pet`).

Geometry: :meth:`biomarkers.geometry.Grid.from_dicom` (LPS) and
:func:`biomarkers.geometry.nifti_image` (RAS affine); nothing here flips axes.
The voxel array is indexed ``[i, j, k]`` = (column, row, slice along the normal).
"""

from __future__ import annotations

import gzip
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from ..geometry import Grid, nifti_image
from ..io import atomic_path, sha256_array, write_json
from ..manifest import ImageRef, ManifestRow, Status
from .model import DicomFile, ImageStack, SegmentationObject
from .qualify import QcFlag, qc_flags, slice_layout
from .sop import UNCOMPRESSED_LE
from .tilt import RESAMPLED, resample

SIDECAR_SCHEMA = "biomarkers.ingest.sidecar/1"
#: Bumped when conversion output changes (part of every input hash).
CONVERTER_VERSION = "2"

_DTYPES = {(8, 0): "u1", (8, 1): "i1", (16, 0): "<u2", (16, 1): "<i2", (32, 0): "<u4", (32, 1): "<i4"}


def warm_up(_payload=None) -> int:
    """Import what conversion needs (a no-op work item run while the main process indexes)."""
    import os

    from .header import load_pydicom

    load_pydicom()
    import nibabel  # noqa: F401

    return os.getpid()


# ----------------------------------------------------------------- NIfTI output
def _gzip_writer(raw, compresslevel: int):
    """A gzip stream on ``raw``: ISA-L (package ``isal``, ~5-10x faster) for levels 0-3 when
    installed, the standard library otherwise. Both write standard gzip (mtime 0, no name)."""
    if compresslevel <= 3:
        try:
            from isal import igzip

            return igzip.IGzipFile(filename="", mode="wb", fileobj=raw, compresslevel=compresslevel, mtime=0)
        except ImportError:
            pass
    return gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=compresslevel, mtime=0)


def write_nifti(img, dest: str | Path, compresslevel: int = 1) -> Path:
    """Write a nibabel image atomically as ``.nii.gz`` (gzip ``compresslevel``, mtime 0)."""
    import nibabel as nib

    dest = Path(dest)
    with atomic_path(dest) as tmp:
        with open(tmp, "wb") as raw, _gzip_writer(raw, compresslevel) as gz:
            fm = {"image": nib.FileHolder(fileobj=gz), "header": nib.FileHolder(fileobj=gz)}
            img.to_file_map(fm)
    return dest


# ----------------------------------------------------------------- pixel reading
def _stored_shape(f: DicomFile) -> tuple[int, int]:
    """Rows x columns of the stored image (a mosaic tile's: the whole mosaic's)."""
    return (f.tile[0], f.tile[1]) if f.tile is not None else (int(f.rows), int(f.columns))


def _cut(stored: np.ndarray, f: DicomFile) -> np.ndarray:
    """The frame's pixels in its stored image (a view): the tile of a mosaic slice, else all."""
    if f.tile is None:
        return stored
    r0, c0 = f.tile[2], f.tile[3]
    return stored[r0 : r0 + int(f.rows), c0 : c0 + int(f.columns)]


def _fast_read(f: DicomFile) -> np.ndarray | None:
    off = f.pixel_offset
    if off is None or f.transfer_syntax_uid not in UNCOMPRESSED_LE or (f.frame is not None and f.tile is None):
        return None
    dt = _DTYPES.get((f.bits_allocated, f.pixel_representation or 0))
    if dt is None:
        return None
    shape = _stored_shape(f)
    n = shape[0] * shape[1]
    arr = np.fromfile(f.path, dtype=dt, count=n, offset=int(off))
    if arr.size != n:
        raise OSError("pixel data shorter than expected (file changed since indexing?)")
    arr = arr.reshape(shape)
    ba, bs = int(f.bits_allocated), int(f.bits_stored or f.bits_allocated)
    if bs < ba:
        if f.pixel_representation:
            sh = ba - bs
            arr = (arr << sh) >> sh  # sign-extend (arithmetic shift on a signed dtype)
        else:
            arr = arr & ((1 << bs) - 1)
    return arr


def _no_paths(msg: str) -> str:
    """Drop file paths from a library's error message (they may contain patient names/ids): a quoted
    string holding a ``/`` whole (folders named ``Doe John``: spaces included), then unquoted paths."""
    import re

    msg = re.sub(r"'[^'\n]*/[^'\n]*'|\"[^\"\n]*/[^\"\n]*\"", "<path>", msg)
    return re.sub(r"/[^\s'\"]+", "<path>", msg)


def read_frames(files: list[DicomFile]) -> list[np.ndarray]:
    """Stored pixel values (rows x columns) of every frame, in ``files`` order.

    Each file is read once: the frames of a multi-frame file and the tiles of a mosaic
    (``DicomFile.tile``) are cut from its one decoded array.
    """
    from .header import load_pydicom

    pydicom = load_pydicom()

    out: list[np.ndarray | None] = [None] * len(files)
    slow: dict[Path, list[int]] = defaultdict(list)
    whole: dict[Path, np.ndarray] = {}  # stored mosaics already read
    for i, f in enumerate(files):
        if f.tile is not None and f.path in whole:
            out[i] = _cut(whole[f.path], f)
            continue
        try:
            a = _fast_read(f)
        except OSError as err:  # reasons name the slice, never the path (paths may hold identifiers)
            raise ValueError(f"cannot read slice {i + 1} of {len(files)}: {err.strerror or err}") from None
        if a is None:
            slow[f.path].append(i)
        else:
            if f.tile is not None:
                whole[f.path] = a
            out[i] = _cut(a, f)
    for path, idx in slow.items():
        try:
            ds = pydicom.dcmread(path)
            arr = ds.pixel_array
        except Exception as err:  # noqa: BLE001
            raise ValueError(
                f"cannot decode pixel data of slice {idx[0] + 1} of {len(files)} "
                f"(transfer syntax {files[idx[0]].transfer_syntax_uid}): {type(err).__name__}: {_no_paths(str(err))}"
            ) from None
        for i in idx:
            f = files[i]
            out[i] = _cut(arr, f) if f.tile is not None else arr[f.frame] if f.frame is not None and arr.ndim == 3 else arr
    return out  # type: ignore[return-value]


# ----------------------------------------------------------------- values
def _integer_dtype(lo: float, hi: float):
    if lo >= -32768 and hi <= 32767:
        return np.int16
    if lo >= 0 and hi <= 65535:
        return np.uint16
    return np.int32


def stack_values(files: list[DicomFile], frames: list[np.ndarray], factors=None) -> tuple[np.ndarray, str]:
    """Apply rescale (and optional per-slice or scalar factors) -> (array [slice, row, col], kind).

    kind is "integer" (lossless integers) or "float" (float32 computed in float64).
    Works slice by slice into one preallocated array; ``frames`` entries are released
    as they are used (peak memory: stored frames + output).
    """
    slopes = [1.0 if f.rescale_slope is None else float(f.rescale_slope) for f in files]
    inters = [0.0 if f.rescale_intercept is None else float(f.rescale_intercept) for f in files]
    shape = (len(frames),) + tuple(frames[0].shape)
    fac = None if factors is None else np.broadcast_to(np.asarray(factors, dtype=np.float64), (len(frames),))
    integer = (
        fac is None
        and all(m == 1.0 for m in slopes)
        and all(b == round(b) for b in inters)
        and all(f.dtype.kind in "iu" for f in frames)
    )
    if integer:
        lo = min(int(f.min()) + int(b) for f, b in zip(frames, inters))
        hi = max(int(f.max()) + int(b) for f, b in zip(frames, inters))
        out = np.empty(shape, dtype=_integer_dtype(lo, hi))
        for k, b in enumerate(inters):
            f = frames[k]
            out[k] = f if b == 0 else f.astype(np.int64) + int(b)
            frames[k] = None  # type: ignore[call-overload]
        return out, "integer"
    out = np.empty(shape, dtype=np.float32)
    for k, (m, b) in enumerate(zip(slopes, inters)):
        v = frames[k].astype(np.float64) * m + b
        if fac is not None:
            v *= fac[k]
        out[k] = v
        frames[k] = None  # type: ignore[call-overload]
    return out, "float"


def fill_gaps(vals: np.ndarray, k_index: list[int], n: int) -> np.ndarray:
    """Place slices at ``k_index`` of ``n`` output slices; fill missing ones by linear interpolation."""
    if n == len(k_index):
        return vals
    out = np.empty((n,) + vals.shape[1:], dtype=np.float64)
    k = np.asarray(k_index)
    out[k] = vals
    for m in sorted(set(range(n)) - set(k_index)):
        lo = k[k < m].max()
        hi = k[k > m].min()
        w = (m - lo) / (hi - lo)
        out[m] = (1 - w) * out[lo] + w * out[hi]
    if vals.dtype.kind in "iu":
        return np.rint(out).astype(vals.dtype)
    return out.astype(vals.dtype)


def philips_factors(files: list[DicomFile], mode: str) -> tuple[str | None, np.ndarray | None]:
    """``(scaling applied, per-frame factors)`` for ``ingest.philips_scaling`` ``mode``.

    Frames without a Philips MRScaleSlope: ``(None, None)``. ``display``: ``("display", None)``
    (RescaleSlope/Intercept only). ``precise``: ``("precise", 1 / (RS * SS))`` per frame, so
    ``(SV * RS + RI) / (RS * SS)`` (dcm2niix's default). Raises ValueError when only some
    frames carry a usable scale slope (no mixed scalings in one image).
    """
    ss = [f.philips_scale_slope for f in files]
    if all(x is None for x in ss):
        return None, None
    if mode != "precise":
        return "display", None
    if any(x is None or x == 0 for x in ss):
        raise ValueError("philips_scaling precise: MRScaleSlope (2005,100E) missing or zero on some frames")
    rs = [1.0 if f.rescale_slope in (None, 0) else float(f.rescale_slope) for f in files]
    return "precise", 1.0 / (np.asarray(rs) * np.asarray(ss, dtype=np.float64))


def units_of(modality: str, dicom_units: str, suv: bool) -> str:
    if modality == "CT":
        return "HU"
    if modality == "PT":
        return "SUVbw (g/ml)" if suv else (dicom_units or "unknown")
    return dicom_units or "arbitrary"


# ----------------------------------------------------------------- work item
# Work items (picklable records sent to executor workers; no secret). Both build their
# manifest rows through biomarkers.manifest.ManifestRow.
@dataclass
class ConvertJob:
    """One image stack to convert. ``settings``: ``IngestSettings.conversion_dict()`` + ``compresslevel``;
    ``deid``: ``DeidSettings`` as a dict (the sidecar metadata policy)."""

    stack: ImageStack
    ref: ImageRef
    out: str
    settings: dict
    deidentified: bool = True
    input_hash: str = ""
    deid: dict = field(default_factory=dict)

    def row(self, status: str, reason: str = "", grid=None, flags: Iterable[str] = (), content_hash: str = "") -> ManifestRow:
        st = self.stack
        return ManifestRow.image(self.ref, status, reason, n_files=len({f.path for f in st.all_files}), grid=grid,
                                 flags=flags, input_hash=self.input_hash, content_hash=content_hash, volumes=st.n_volumes)


@dataclass
class MaskJob:
    """Masks of one segmentation ``object`` (RTSTRUCT/SEG) or of ``nifti_paths`` beside ``stacks[0]``.

    ``images``: stack key -> :class:`ImageRef` of each candidate stack; ``patient_id``/``study_uid``/
    ``series_uid``: pseudonymised ids of the mask rows (the segmentation's series, or the image's for NIfTI).
    """

    stacks: list[ImageStack]
    images: dict[str, ImageRef]
    settings: object  # MaskSettings
    out: str
    patient_id: str
    study_uid: str
    series_uid: str
    input_hash: str
    compresslevel: int = 1
    object: SegmentationObject | None = None
    nifti_paths: list[str] = field(default_factory=list)
    roi_reference: object = None  # deid.keys.Referencer of ROI names (None: de-identification off)

    def row(self, image: ImageRef | None, roi: str, status: str, reason: str = "", **kw) -> ManifestRow:
        return ManifestRow.mask(self.patient_id, self.study_uid, self.series_uid, image, roi, status, reason,
                                input_hash=self.input_hash, **kw)


def convert_stack(job: ConvertJob) -> ManifestRow:
    """Convert one stack (see :func:`_convert_stack`), pydicom's value warnings silenced."""
    from .header import quiet_pydicom

    with quiet_pydicom():
        return _convert_stack(job)


def _convert_stack(job: ConvertJob) -> ManifestRow:
    """Convert one stack; write ``OUT/<ref.path>`` (.nii.gz) and its sidecar ``.json``. Returns its manifest row."""
    stack: ImageStack = job.stack
    s = job.settings
    out = Path(job.out)
    rel = job.ref.path
    files = stack.all_files  # volume after volume (stack.files: the first volume)
    first = files[0]
    lay = slice_layout(stack, s["spacing_tolerance"], s["position_tolerance_mm"])
    qc = dict(stack.qc)
    pet: dict | None = None
    factors = None
    dicom_units = first.units
    suv = False
    from .header import load_pydicom

    ds = load_pydicom().dcmread(first.path, stop_before_pixels=True)
    metadata = _metadata(ds, job.deid)
    if stack.modality == "PT" and dicom_units.upper() == "BQML" and s.get("pet_suv", True):
        from .pet import suv_factors

        acq = [(f.acquisition_datetime, f.acquisition_date, f.acquisition_time) for f in files]
        factors, pet = suv_factors(ds, acq)
        suv = True
        for fl in pet.get("flags", []):
            qc[fl] = True
    elif stack.modality == "PT" and dicom_units.upper() not in ("GML",):
        qc[QcFlag.PET_UNITS_KEPT] = True
    philips, precise = philips_factors(files, s.get("philips_scaling", "display"))
    if precise is not None:
        factors = precise if factors is None else np.asarray(factors, dtype=np.float64) * precise
    frames = read_frames(files)
    vals, kind = stack_values(files, frames, factors)
    del frames
    grid: Grid = stack.grid
    if stack.volumes:  # [volume*slice,row,col] -> [i=col, j=row, k=slice, t=volume]
        per = vals.reshape((stack.n_volumes, len(stack.files)) + vals.shape[1:])
        if lay.n_slices != len(stack.files):  # gaps (allow_gaps): filled per volume
            per = np.stack([fill_gaps(v, lay.k_index, lay.n_slices) for v in per])
        arr = per.transpose(3, 2, 1, 0)
    else:
        vals = fill_gaps(vals, lay.k_index, lay.n_slices)
        arr = vals.transpose(2, 1, 0)  # [slice,row,col] -> [i=col, j=row, k=slice]
    if RESAMPLED in qc:  # gantry tilt: the sheared slices onto the orthogonal grid (biomarkers.dicom.tilt)
        sheared = Grid.from_dicom(first.rows, first.columns, first.pixel_spacing, first.image_orientation, lay.positions)
        arr = resample(arr, sheared, grid)
    img = nifti_image(arr, grid)
    dest = out / rel
    volumes = None
    if stack.volumes:
        from .dims import volume_metadata

        volumes = volume_metadata(stack.volumes, stack.dimension, stack.ordered_by)
        tr = first.repetition_time
        img.header["pixdim"][4] = tr / 1000.0 if tr else 1.0  # s, as dcm2niix
    write_nifti(img, dest, s.get("compresslevel", 1))
    if (_write_bval_bvec(dest, volumes, grid) if stack.dimension == "diffusion" else None) is None:
        if stack.dimension == "diffusion":
            qc["diffusion_directions_unknown"] = True  # no .bval/.bvec: zero vectors would look valid
        for ext in (".bval", ".bvec"):  # none left from an earlier run of this output
            dest.with_name(dest.name[: -len(".nii.gz")] + ext).unlink(missing_ok=True)
    content_hash = sha256_array(arr)
    units = units_of(stack.modality, dicom_units, suv)
    flags = qc_flags(qc)
    sidecar = {
        "schema": SIDECAR_SCHEMA,
        "patient_id": job.ref.patient_id,
        "study_uid": job.ref.study_uid,
        "series_uid": job.ref.series_uid,
        "stack": job.ref.stack,
        "modality": stack.modality,
        "units": units,
        "dicom_units": dicom_units or None,
        "dtype": str(arr.dtype),
        "values": "integer (lossless)" if kind == "integer" else "float32",
        "acquisition": metadata,
        "geometry": {
            **grid.to_dict(),
            "coordinate_system": "origin_lps/direction_lps: DICOM patient LPS (mm); the NIfTI affine is RAS",
            "affine_ras": grid.affine_ras().tolist(),
            "index_order": "i = DICOM column, j = DICOM row, k = slice (increasing along the normal)",
        },
        "qc": qc,
        "qc_flags": flags,
        "pet_suv": pet,
        "n_files": len({f.path for f in files}),
        "n_frames": len(files),
        "volumes": volumes,
        "slice_timing_s": _slice_timing(stack.files, lay.n_slices),
        "philips_scaling": philips,
        "deidentified": bool(job.deidentified),
        "input_hash": job.input_hash,
        "content_hash": content_hash,
        "converter": f"biomarkers.dicom.convert/{CONVERTER_VERSION}",
    }
    write_json(dest.with_name(dest.name[: -len(".nii.gz")] + ".json"), sidecar)
    return job.row(Status.CONVERTED, "", grid, flags, content_hash)


def _slice_timing(files: list[DicomFile], n_slices: int) -> list[float] | None:
    """Acquisition time of each output slice k (s from the volume's start; Siemens mosaic
    ``MosaicRefAcqTimes``), None when not known for every slice."""
    times = [f.slice_time_ms for f in files]
    if len(files) != n_slices or any(t is None for t in times):
        return None
    return [round(t / 1000.0, 6) for t in times]


def _write_bval_bvec(dest: Path, volumes: dict, grid: Grid) -> Path | None:
    """``<stem>.bval`` (s/mm^2) and ``<stem>.bvec`` (FSL convention, :func:`biomarkers.dicom.dims.fsl_bvecs`);
    None (nothing written) when a diffusion-weighted volume has no direction."""
    from ..io import write_text
    from .dims import fsl_bvecs

    stem = dest.name[: -len(".nii.gz")]
    grads = volumes.get("gradient_lps") or [None] * volumes["count"]
    if any(g is None and b > 0 for g, b in zip(grads, volumes["b_value"])):
        return None  # a diffusion-weighted volume without direction
    bvec = fsl_bvecs([g if g is not None else (0.0, 0.0, 0.0) for g in grads], grid)
    write_text(dest.with_name(stem + ".bval"), " ".join(f"{b:.6g}" for b in volumes["b_value"]) + "\n")
    return write_text(dest.with_name(stem + ".bvec"), "".join(" ".join(f"{x:.6f}" for x in r) + "\n" for r in bvec))


def _metadata(ds, deid_settings: dict) -> dict:
    """Whitelisted acquisition metadata via :meth:`biomarkers.deid.Deidentifier.metadata`.

    Metadata needs no secret: the worker's Deidentifier gets a random throwaway key, so
    the site secret never travels to workers (e.g. a remote dask cluster).
    """
    import os

    from ..deid import DeidSettings, Deidentifier, Pseudonymizer

    d = Deidentifier(DeidSettings(**deid_settings), pseudonymizer=Pseudonymizer(os.urandom(32)))
    return d.metadata(metadata_elements(ds))


def metadata_elements(ds):
    """The top-level elements of ``ds`` (a pydicom Dataset) that the sidecar metadata reads, as a
    new Dataset: the whitelisted and identifying attributes (:mod:`biomarkers.deid.whitelist`) and
    every person name (VR PN in the file or in the dictionary; its value is a forbidden string).

    The metadata of this subset equals that of the whole header; only these elements are decoded
    (a vendor header holds hundreds of others, e.g. Siemens CSA and GE private blocks, which
    the whitelist filter would otherwise decode one by one to look for person names).
    """
    from pydicom import Dataset
    from pydicom.datadict import dictionary_VR, keyword_for_tag

    from ..deid.whitelist import IDENTIFYING_ATTRIBUTES, SIDECAR_ATTRIBUTES

    wanted = {*SIDECAR_ATTRIBUTES, *IDENTIFYING_ATTRIBUTES}
    out = Dataset()
    for raw in ds.elements():  # raw elements: nothing decoded
        tag = raw.tag
        if tag.is_private:  # no keyword: never read by the whitelist
            continue
        try:
            known = dictionary_VR(tag)
        except KeyError:
            known = ""
        if keyword_for_tag(tag) in wanted or "PN" in str(raw.VR or "") or "PN" in known:
            out[tag] = ds[tag]  # decoded in its own dataset (character set)
    return out


# ----------------------------------------------------------------- masks (work item)
def convert_masks(job: MaskJob) -> list[ManifestRow]:
    """Masks of one segmentation object (or of NIfTI masks beside one stack) -> manifest rows.

    Calls :func:`biomarkers.dicom.masks.masks_from_object` / ``masks_from_nifti`` and
    writes every converted array with ``nifti_image(arr, stack.grid, like=<image>)``
    to ``masks/<patient>/<MODALITY>_<series_tag>__<roi>.nii.gz``.
    """
    import nibabel as nib

    from .masks import masks_from_nifti, masks_from_object
    from .roi import safe_name

    out = Path(job.out)
    by_key = {s.key: s for s in job.stacks}
    if job.object is not None:
        results = masks_from_object(job.object, job.stacks, job.settings, job.roi_reference)
    else:
        results = masks_from_nifti(job.stacks[0], [Path(p) for p in job.nifti_paths], job.settings, job.roi_reference)
    rows: list[ManifestRow] = []
    used: set[str] = set()
    likes: dict[str, object] = {}
    for r in results:
        st = by_key.get(r.stack_key) if r.stack_key else None
        info = job.images.get(r.stack_key) if r.stack_key else None
        roi = r.roi or ""
        row = job.row(info, roi if roi else safe_name(r.source_name) if r.source_name else "", r.status,
                      r.reason if r.status != Status.CONVERTED else "", grid=st.grid if st is not None else None,
                      flags=r.flags, case=f"{job.patient_id}/{info.tag}__{roi or 'object'}" if info else "")
        if r.status == Status.CONVERTED and r.array is not None and st is not None and info is not None:
            name = f"{info.tag}__{safe_name(roi)}"
            n = 2
            base = name
            while name in used:
                name, n = f"{base}_{n}", n + 1
            used.add(name)
            rel = f"masks/{job.patient_id}/{name}.nii.gz"
            if info.path not in likes:
                likes[info.path] = nib.load(str(out / info.path))
            arr = np.asarray(r.array, dtype=np.uint8)
            img = nifti_image(arr, st.grid, like=likes[info.path])
            write_nifti(img, out / rel, job.compresslevel)
            row.path, row.content_hash = rel, sha256_array(arr)
            row.voxel_count = int(np.count_nonzero(arr))
            row.volume_ml = float(row.voxel_count * st.grid.voxel_volume_ml)
            if r.reason:
                row.reason = r.reason  # notes on a converted mask (e.g. clipped contours)
        rows.append(row)
    return rows
