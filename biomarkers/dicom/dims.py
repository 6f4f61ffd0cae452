"""Dimensions of multi-volume series: what varies between frames that share a slice position.

Two halves, both pure (no I/O):

* :func:`dimension_values` reads, from one file's header, the per-frame values a series may
  vary along (the :class:`~biomarkers.dicom.model.DicomFile` fields ``series_number``,
  ``echo_time``, ``temporal_position``, ``trigger_time``, ``frame_reference_time``,
  ``frame_duration``, ``b_value``, ``gradient``, ``complex_part``). Standard attributes
  first, then the vendors' private ones as dcm2niix reads them (GE, Siemens, Philips;
  Canon/Toshiba write the standard ones).
* :func:`assemble_volumes` orders the frames of one stack (same geometry, series number,
  echo and image type) into volumes: one 3-D volume when no position repeats, else a 4-D
  series along the first dimension that explains the repeats, in the order vendors encode
  it: temporal position (TemporalPositionIdentifier, TriggerTime, AcquisitionNumber,
  FrameReferenceTime), then diffusion (b-value and gradient direction). Repeats that no
  dimension explains raise :class:`VolumeError` with a reason naming the positions.

Echoes and image types (magnitude / phase / real / imaginary) are never a 4th dimension:
:func:`biomarkers.dicom.stacks.build_stacks` splits them into separate stacks before.

Coordinates: gradient directions are stored in DICOM patient coordinates (LPS). GE's
private vector (0019,10bb..bd) is in GE's image frame; it becomes LPS at assembly, when the
slice order is known, as dcm2niix's bvecs encode it (:func:`ge_to_patient`).
"""

from __future__ import annotations

import functools

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .model import DicomFile


class VolumeError(ValueError):
    """Frames that cannot be ordered into volumes (the message is the skip reason)."""


def _num(v) -> float | None:
    if v is not None and not isinstance(v, (str, bytes, int, float)):  # a multi-value: its first
        v = next(iter(v), None)
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _vec(v) -> tuple[float, float, float] | None:
    try:
        vals = tuple(float(x) for x in v)
    except (TypeError, ValueError):
        return None
    return vals if len(vals) == 3 and all(np.isfinite(vals)) else None


#: ImageType / ComplexImageComponent / vendor codes -> complex part ("" = magnitude).
_COMPLEX = {"P": "phase", "PHASE": "phase", "PHASE MAP": "phase", "R": "real", "REAL": "real",
            "I": "imaginary", "IMAGINARY": "imaginary", "M": "", "MAGNITUDE": "", "MIXED": ""}
_GE_COMPLEX = {0: "", 1: "phase", 2: "real", 3: "imaginary"}


def vendor(get: Callable) -> str:
    """"siemens", "ge", "philips" or "" from Manufacturer (0008,0070), as dcm2niix tells them apart.

    A vendor's private elements (:data:`biomarkers.dicom.fastheader.PRIVATE_TAGS`, read by tag
    number) mean what the names say only in that vendor's files: another vendor may use the same
    numbers for something else, so each is read only when the file is that vendor's.
    """
    m = str(get("Manufacturer") or "").strip().upper()
    return "siemens" if m.startswith("SI") else "ge" if m.startswith("GE") else "philips" if m.startswith("PH") else ""


def complex_part(get: Callable, image_type: tuple[str, ...]) -> str:
    """"" (magnitude or not stated), "phase", "real" or "imaginary".

    ComplexImageComponent (0008,9208), else Philips (2005,1011), else the ImageType values
    (Siemens writes ``ORIGINAL\\PRIMARY\\P\\ND``), else GE (0043,102f) (private elements:
    in that vendor's files only, :func:`vendor`).
    """
    made_by = vendor(get)
    for key in ("ComplexImageComponent", "Philips_ImageType"):
        if key == "Philips_ImageType" and made_by != "philips":
            continue
        v = str(get(key) or "").strip().upper()
        if v in _COMPLEX:
            return _COMPLEX[v]
    for v in image_type[2:]:
        if v in ("P", "PHASE", "R", "REAL", "I", "IMAGINARY"):
            return _COMPLEX[v]
    ge = _num(get("GE_ImageType")) if made_by == "ge" else None
    return _GE_COMPLEX.get(int(ge), "") if ge is not None else ""


def diffusion(get: Callable) -> tuple[float | None, tuple[float, float, float] | None, tuple | None]:
    """(b-value in s/mm^2, gradient direction in LPS, GE image-frame vector) of one frame, or Nones.

    Standard DiffusionBValue (0018,9087) / DiffusionGradientOrientation (0018,9089) (LPS);
    Siemens (0019,100c) / (0019,100e) (LPS); Philips (2001,1003) / (2005,10b0..b2)
    (RL, AP, FH: LPS); GE (0043,1039) first value (minus the 10^9 some releases add) /
    (0019,10bb..bd): a vector in GE's image frame, returned as the third value and turned
    into LPS by :func:`assemble_volumes` (it needs the slice order, :func:`ge_to_patient`);
    a GE vector of length 0.03 to 0.97 scales GE's b-value by its squared length (multi-shell
    tensor files) and is normalised. A vendor's private elements are read in its files only
    (:func:`vendor`, Manufacturer).
    """
    b = _num(get("DiffusionBValue"))
    g = _vec(get("DiffusionGradientOrientation"))
    ge = None
    made_by = vendor(get)
    if b is None and made_by == "siemens":
        b = _num(get("Siemens_B_value"))
        if g is None:
            g = _vec(get("Siemens_DiffusionGradientDirection"))
    if b is None and made_by == "philips":
        b = _num(get("Philips_DiffusionBFactor"))
        if g is None:
            g = _vec([get(f"Philips_DiffusionDirection{a}") for a in ("RL", "AP", "FH")])
    ge_b = _num(get("GE_SlopInt_6_9")) if made_by == "ge" else None
    ge_g = _vec([get(f"GE_UserData{n}") for n in (20, 21, 22)]) if made_by == "ge" else None
    if ge_b is not None and ge_b >= 1e9:
        ge_b = ge_b % 1e9
    if ge_g is not None and g is None:
        n = float(np.linalg.norm(ge_g))
        if ge_b is not None and 0.03 < n < 0.97:  # dcm2niix's limits
            ge_b, ge_g = ge_b * n * n, tuple(x / n for x in ge_g)
        ge = ge_g
    if g is not None and (n := float(np.linalg.norm(g))) > 1e-6:
        g = tuple(float(x) / n for x in g)  # unit vectors, as dcm2niix writes them (GE's: as stored)
    if b is None or (ge is not None and ge_b is not None):
        b = ge_b  # a GE direction goes with GE's (scaled) b-value, as dcm2niix reads them
    if b is not None and (b <= 0 or str(get("DiffusionDirectionality") or "").strip().upper() == "ISOTROPIC"):
        g, ge = (0.0, 0.0, 0.0), None  # b = 0, or a trace (isotropic) image: no direction
    return b, g, ge


#: dcm2niix's sign flips of GE's image-frame vector per slice plane (dominant axis of the normal).
_GE_FLIP = {0: (1, 1, 0), 1: (0, 1, 1), 2: (0, 0, 1)}  # sagittal, coronal, axial


def ge_to_patient(v, iop, phase_encoding: str, slice_sign: int) -> tuple[float, float, float] | None:
    """GE's diffusion vector (0019,10bb..bd) -> LPS, as dcm2niix's bvecs encode it.

    dcm2niix (``geCorrectBvecs``, after Xiangrui Li's dicm2nii) swaps the first two components
    for ROW phase encoding (``(y, -x, z)``), negates components per slice plane (axial: z;
    coronal: y, z; sagittal: x, y; the third toggled when the slices are acquired against the
    normal, ``slice_sign`` < 0), then negates y and the whole vector, in its voxel frame
    (row direction, minus the column direction, the normal). Returns None when dcm2niix
    leaves the vector unconverted (phase encoding neither ROW nor COL): no direction then.
    """
    if phase_encoding not in ("ROW", "COL") or iop is None:
        return None
    x, y, z = v
    w = [x, y, z] if phase_encoding == "COL" else [y, -x, z]
    row, col = np.asarray(iop[:3], float), np.asarray(iop[3:], float)
    normal = np.cross(row, col)
    flip = list(_GE_FLIP[int(np.argmax(np.abs(normal)))])
    if slice_sign < 0:
        flip[2] = 1 - flip[2]
    w = [-a if f else a for a, f in zip(w, flip)]
    w[1] = -w[1]
    w = [-a for a in w]
    lps = w[0] * row - w[1] * col + w[2] * normal
    return tuple(float(a) + 0.0 for a in lps)


def csa_diffusion(csa: dict, frame: DicomFile) -> dict:
    """``b_value`` / ``gradient`` (LPS) from a Siemens CSA image header (``B_value``,
    ``DiffusionGradientDirection``) for a frame that has none from (0019,100c)/(0019,100e)."""
    if frame.b_value is not None or not csa.get("B_value"):
        return {}
    b = _num([x for x in csa.get("B_value", []) if x][:1] or None)
    if b is None:
        return {}
    g = _vec([x for x in csa.get("DiffusionGradientDirection", []) if x][:3])
    return {"b_value": b, "gradient": (0.0, 0.0, 0.0) if b <= 0 else g}


def dimension_values(get: Callable, image_type: tuple[str, ...], iop) -> dict:
    """The dimension fields of :class:`DicomFile` from a header accessor ``get(name)``
    (names of :data:`biomarkers.dicom.fastheader.HEADER_TAGS` / ``PRIVATE_TAGS``)."""
    b, g, ge = diffusion(get)
    tp = _num(get("TemporalPositionIdentifier"))
    sn = _num(get("SeriesNumber"))
    return dict(
        series_number=int(sn) if sn is not None else None,
        echo_time=_num(get("EchoTime")),
        repetition_time=_num(get("RepetitionTime")),
        temporal_position=int(tp) if tp is not None else None,
        trigger_time=_num(get("TriggerTime")),
        frame_reference_time=_num(get("FrameReferenceTime")),
        frame_duration=_num(get("ActualFrameDuration")),
        b_value=b,
        gradient=g,
        gradient_image=ge,
        phase_encoding=str(get("InPlanePhaseEncodingDirection") or "").strip().upper(),
        patient_position=str(get("PatientPosition") or "").strip().upper(),
        complex_part=complex_part(get, image_type),
    )


# --------------------------------------------------------------------------- assembly
#: Attributes that order volumes in time, in the order they are tried (DICOM keyword, field).
TIME_DIMENSIONS = (
    ("TemporalPositionIdentifier", "temporal_position"),
    ("TriggerTime", "trigger_time"),
    ("AcquisitionNumber", "acquisition_number"),
    ("FrameReferenceTime", "frame_reference_time"),
)


@dataclass
class Volumes:
    """Frames ordered into volumes: ``volumes[t]`` holds one frame per slice position, sorted
    along the slice normal (the same positions in every volume)."""

    volumes: list[list[DicomFile]]
    dimension: str = ""  # "", "time" or "diffusion"
    ordered_by: str = ""  # the attribute whose values order the volumes
    removed_isotropic: int = 0  # diffusion: trace volumes (b > 0, no direction) left out


def along_normal(fs: list[DicomFile]) -> np.ndarray | None:
    """Position of every frame along its slice normal (mm), None without geometry."""
    iop = fs[0].image_orientation
    if iop is None or any(f.image_position is None for f in fs):
        return None
    normal = np.cross(np.asarray(iop[:3], float), np.asarray(iop[3:], float))
    return np.asarray([f.image_position for f in fs], dtype=float) @ normal


def _position_labels(d: np.ndarray, tol: float) -> np.ndarray:
    """Cluster positions along the normal: frames closer than ``tol`` mm share a label (0, 1... in order)."""
    order = np.argsort(d, kind="stable")
    labels = np.empty(len(d), dtype=int)
    lab, prev = -1, None
    for i in order:
        if prev is None or d[i] - prev > tol:
            lab += 1
        labels[i] = lab
        prev = d[i]
    return labels


def _acquisition_order(f: DicomFile):
    return (f.instance_number if f.instance_number is not None else 0, f.frame or 0, f.rel)


def _repeat_reason(d: np.ndarray, labels: np.ndarray) -> str:
    counts = np.bincount(labels)
    rep = [float(np.mean(d[labels == lab])) for lab in np.flatnonzero(counts > 1)]
    shown = ", ".join(f"{x:.1f}" for x in rep[:5]) + (", ..." if len(rep) > 5 else "")
    n = len(rep)
    where = (f"duplicate slice positions: {n} position{'s' if n != 1 else ''} repeat{'s' if n == 1 else ''} "
             f"(at {shown} mm along the slice normal)")
    if len(set(counts.tolist())) > 1:
        return (f"{where} unequally ({counts.min()} to {counts.max()} frames per position): incomplete "
                "volumes or overlapping acquisitions")
    return f"{where} and no temporal/diffusion/echo attribute explains them"


def _ge_gradients(fs: list[DicomFile], d: np.ndarray) -> list[DicomFile]:
    """Frames with GE image-frame vectors get their LPS ``gradient`` (:func:`ge_to_patient`); the
    slice order is the direction of InstanceNumber along the normal. Only for head-first supine
    scans (dcm2niix converts no other): else the direction stays unknown."""
    import dataclasses

    if all(f.gradient_image is None for f in fs):
        return fs
    seen: list[float] = []
    for i in sorted(range(len(fs)), key=lambda i: _acquisition_order(fs[i])):
        if not seen or abs(d[i] - seen[0]) > 1e-3:
            seen.append(float(d[i]))
        if len(seen) == 2:
            break
    sign = 1 if len(seen) < 2 or seen[1] > seen[0] else -1
    return [f if f.gradient_image is None else dataclasses.replace(
        f, gradient=ge_to_patient(f.gradient_image, f.image_orientation, f.phase_encoding, sign)
        if f.patient_position == "HFS" else None) for f in fs]


def assemble_volumes(fs: list[DicomFile], tol: float = 0.01) -> Volumes:
    """Order the frames of one stack into volumes (see the module docstring).

    A dimension explains the repeats when every frame has a value and, at every slice
    position, the frames' values are all different (time) or not all equal across the
    series (diffusion: repeated b=0 volumes are allowed, frames are then ordered by
    InstanceNumber and each volume must have one b-value and direction). Raises
    :class:`VolumeError` otherwise.
    """
    d = along_normal(fs)
    if d is None or len(fs) < 2:
        return Volumes([fs])
    fs = _ge_gradients(fs, d)
    labels = _position_labels(d, tol)
    n_pos = int(labels.max()) + 1
    if n_pos == len(fs):
        return Volumes([fs])
    counts = np.bincount(labels)
    if len(set(counts.tolist())) > 1:
        raise VolumeError(_repeat_reason(d, labels))
    n_vol = int(counts[0])
    at = [[i for i in range(len(fs)) if labels[i] == p] for p in range(n_pos)]

    def build(rank: Callable[[DicomFile], tuple]) -> list[list[DicomFile]]:
        vols: list[list[DicomFile | None]] = [[None] * n_pos for _ in range(n_vol)]
        for p, idx in enumerate(at):
            for t, i in enumerate(sorted(idx, key=lambda i: rank(fs[i]))):
                vols[t][p] = fs[i]
        return vols  # type: ignore[return-value]

    diff = [(f.b_value, f.gradient) for f in fs]
    is_dwi = all(b is not None for b, _ in diff) and len(set(diff)) > 1
    vols, by = None, ""
    for keyword, attr in TIME_DIMENSIONS:
        vals = [getattr(f, attr) for f in fs]
        if all(v is not None for v in vals) and all(len({vals[i] for i in idx}) == n_vol for idx in at):
            vols, by = build(lambda f, a=attr: (getattr(f, a), *_acquisition_order(f))), keyword
            break
    if vols is None and is_dwi:
        vols, by = build(_acquisition_order), "InstanceNumber"
    if vols is None:
        raise VolumeError(_repeat_reason(d, labels))
    if is_dwi:
        for t, v in enumerate(vols):
            g0 = np.asarray(v[0].gradient if v[0].gradient is not None else (np.nan,) * 3)
            for f in v[1:]:
                g = np.asarray(f.gradient if f.gradient is not None else (np.nan,) * 3)
                if abs(f.b_value - v[0].b_value) > 1e-3 or not np.allclose(g, g0, atol=1e-4, equal_nan=True):
                    raise VolumeError(
                        f"diffusion series not orderable: volume {t + 1} of {n_vol} (ordered by {by}) mixes "
                        "b-values or gradient directions across its slices")
    removed = 0
    if is_dwi:  # isotropic (trace) volumes: b > 0, direction (0, 0, 0) (Philips appends one); dcm2niix drops them
        def trace(v: list[DicomFile]) -> bool:
            return v[0].b_value > 0 and v[0].gradient is not None and not any(v[0].gradient)

        keep = [v for v in vols if not trace(v)]
        if any(v[0].b_value > 0 for v in keep) and len(keep) < len(vols):
            removed, vols = len(vols) - len(keep), keep
    return Volumes(vols, "diffusion" if is_dwi else "time", by, removed)


# --------------------------------------------------------------------------- per-volume values
def _seconds(f: DicomFile) -> float | None:
    """Acquisition time of a frame in seconds (of its day, or since 0001 with a date); None if absent."""
    raw = f.acquisition_datetime or ((f.acquisition_date or "") + (f.acquisition_time or "") if f.acquisition_time else "")
    digits = raw.split("+")[0].split("-")[0].strip()
    whole, _, frac = digits.partition(".")
    try:
        if len(whole) >= 14:
            return _since_0001(whole[:14]) + float("0." + (frac or "0"))
        hms = whole[-6:].ljust(6, "0") if len(whole) > 8 else whole.ljust(6, "0")
        return int(hms[:2]) * 3600 + int(hms[2:4]) * 60 + int(hms[4:6]) + float("0." + (frac or "0"))
    except ValueError:
        return None


@functools.lru_cache(maxsize=4096)
def _since_0001(stamp: str) -> float:
    """Seconds from 0001-01-01 to a ``YYYYMMDDHHMMSS`` stamp (ValueError if it is not one); the frames
    of a series repeat a few stamps, parsed once each."""
    import datetime as dt

    return (dt.datetime.strptime(stamp, "%Y%m%d%H%M%S") - dt.datetime(1, 1, 1)).total_seconds()


def volume_metadata(volumes: list[list[DicomFile]], dimension: str, ordered_by: str) -> dict:
    """Per-volume values for the sidecar (lists in volume order; relative times only, never a
    date or time of day): ``count``, ``dimension``, ``ordered_by``, and where known
    ``temporal_position``, ``acquisition_number``, ``trigger_time_ms`` (earliest slice),
    ``start_s`` (acquisition time since the first volume's), ``frame_reference_time_ms`` and
    ``frame_duration_ms`` (PET), ``echo_time_ms``, ``repetition_time_ms``, ``b_value``
    (s/mm^2) and ``gradient_lps`` (unit vectors, DICOM patient coordinates)."""
    out: dict = {"count": len(volumes), "dimension": dimension, "ordered_by": ordered_by}

    def per(name: str, value) -> None:
        vals = [value(v) for v in volumes]
        if any(x is not None for x in vals):
            out[name] = vals

    def first(attr: str):
        return lambda v: getattr(v[0], attr)

    def earliest(attr: str):
        return lambda v: min((getattr(f, attr) for f in v if getattr(f, attr) is not None), default=None)

    per("temporal_position", first("temporal_position"))
    per("acquisition_number", first("acquisition_number"))
    per("trigger_time_ms", earliest("trigger_time"))
    starts = [min((s for s in map(_seconds, v) if s is not None), default=None) for v in volumes]
    if all(s is not None for s in starts):
        out["start_s"] = [round(s - starts[0], 6) for s in starts]
    per("frame_reference_time_ms", first("frame_reference_time"))
    per("frame_duration_ms", first("frame_duration"))
    per("echo_time_ms", first("echo_time"))
    per("repetition_time_ms", first("repetition_time"))
    if dimension == "diffusion":
        per("b_value", first("b_value"))
        per("gradient_lps", lambda v: list(v[0].gradient) if v[0].gradient is not None else None)
    return out


def fsl_bvecs(gradients_lps, grid) -> np.ndarray:
    """FSL bvecs (3 x T) of LPS gradient directions on a NIfTI written from ``grid``.

    FSL's convention: components along the voxel axes i, j, k, with the first one negated
    when the voxel-to-world matrix has a positive determinant (as :meth:`Grid.affine_ras` does
    for every grid whose k axis follows the slice normal). Zero vectors stay zero.
    """
    g = np.asarray(gradients_lps, dtype=float).reshape(-1, 3)
    d = grid.direction_matrix  # columns: LPS unit vectors of i, j, k
    b = g @ d
    if np.linalg.det(grid.affine_ras()[:3, :3]) > 0:
        b[:, 0] *= -1
    return b.T + 0.0  # no negative zeros
