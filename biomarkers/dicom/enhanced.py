"""Enhanced multi-frame images (Siemens XA, Philips, Canon enhanced MR/CT/PET): one record per frame.

:func:`enhanced_frames` turns one multi-frame file into one
:class:`~biomarkers.dicom.model.DicomFile` per frame (the "frames" record the stack builder
assembles into 3-D or 4-D volumes, see ARCHITECTURE.md), from the functional groups walked by
:func:`biomarkers.dicom.header.frame_values` (per-frame group, else the shared one):

* geometry: PlanePositionSequence, PlaneOrientationSequence, PixelMeasuresSequence (LPS, mm);
* values: PixelValueTransformationSequence RescaleSlope/Intercept per frame (applied per
  frame by the converter); Philips MRScaleSlope (2005,100E) from the frame's private
  (2005,140F) item, else the file's (``ingest.philips_scaling``);
* dimensions: FrameContentSequence TemporalPositionIndex (-> ``temporal_position``),
  MREchoSequence EffectiveEchoTime (-> ``echo_time``; distinct echo times numbered 1, 2...
  as ``echo_number``, so echoes become separate outputs), MRDiffusionSequence DiffusionBValue
  and DiffusionGradientDirectionSequence DiffusionGradientOrientation (LPS),
  CardiacSynchronizationSequence NominalCardiacTriggerDelayTime (-> ``trigger_time``),
  MRImageFrameTypeSequence ComplexImageComponent (magnitude / phase / real / imaginary);
* order: ``instance_number`` is the frame's rank in the order of its DimensionIndexValues
  (FrameContentSequence), the DimensionIndexSequence's non-spatial indices first (in their
  sequence order), then the spatial ones (ImagePositionPatient, InStackPositionNumber), then
  the frame number. The stack builder orders volumes by their dimension values and falls
  back to this rank (e.g. diffusion directions in acquisition order).

A layout that cannot be ordered raises :class:`LayoutError` (the file is skipped with that
reason): frames without a position, or two frames with the same DimensionIndexValues.
"""

from __future__ import annotations

import dataclasses

from .dims import complex_part
from .header import FRAME_GEOMETRY, frame_values, to_float
from .model import DicomFile

#: Per-frame values read besides the geometry: name -> (functional group sequence, attribute).
FRAME_DIMENSIONS = {
    "temporal": ("FrameContentSequence", "TemporalPositionIndex"),
    "index": ("FrameContentSequence", "DimensionIndexValues"),
    "echo_time": ("MREchoSequence", "EffectiveEchoTime"),
    "b_value": ("MRDiffusionSequence", "DiffusionBValue"),
    "trigger": ("CardiacSynchronizationSequence", "NominalCardiacTriggerDelayTime"),
    "complex": ("MRImageFrameTypeSequence", "ComplexImageComponent"),
}
#: DimensionIndexPointer values that locate a frame in space (ordered last).
SPATIAL_POINTERS = {0x00200032, 0x00209057}  # ImagePositionPatient, InStackPositionNumber
_PHILIPS_FRAME_ITEM, _PHILIPS_SS = 0x2005140F, 0x2005100E


class LayoutError(ValueError):
    """A multi-frame layout that cannot be ordered (the message is the skip reason)."""


def _gradient(item, shared) -> tuple[float, float, float] | None:
    for src in (item, shared):
        diff = src.get("MRDiffusionSequence") if src is not None else None
        if diff and str(diff[0].get("DiffusionDirectionality", "")).upper() == "ISOTROPIC":
            return (0.0, 0.0, 0.0)  # a trace image: no direction (dims leaves it out of a diffusion series)
        gseq = diff[0].get("DiffusionGradientDirectionSequence") if diff else None
        if gseq and "DiffusionGradientOrientation" in gseq[0]:
            g = tuple(float(x) for x in gseq[0].DiffusionGradientOrientation)
            return g if len(g) == 3 else None
    return None


def _philips_scale(item, default: float | None) -> float | None:
    el = item.get(_PHILIPS_FRAME_ITEM) if item is not None else None
    seq = el.value if el is not None else None
    if seq and _PHILIPS_SS in seq[0]:
        v = seq[0][_PHILIPS_SS].value
        if isinstance(v, bytes):
            import struct

            v = struct.unpack("<f", v[:4])[0] if len(v) >= 4 else None
        return to_float(v, default)
    return default


def _index_order(ds) -> list[int]:
    """Positions in DimensionIndexValues, non-spatial dimensions first (sequence order), then spatial."""
    dims = ds.get("DimensionIndexSequence") or []
    pointers = [int(d.DimensionIndexPointer) if "DimensionIndexPointer" in d else 0 for d in dims]
    return ([i for i, p in enumerate(pointers) if p not in SPATIAL_POINTERS]
            + [i for i, p in enumerate(pointers) if p in SPATIAL_POINTERS])


def enhanced_frames(ds, base: DicomFile) -> list[DicomFile]:
    """One record per frame of the multi-frame dataset ``ds`` (header read, functional groups
    included); ``base`` is the file's record. Raises :class:`LayoutError`."""
    frames = frame_values(ds, {**FRAME_GEOMETRY, **FRAME_DIMENSIONS})
    if not frames or any(f["position"] is None for f in frames):
        raise LayoutError("unsupported object: multi-frame image without per-frame positions")
    shared = ds.get("SharedFunctionalGroupsSequence")
    shared = shared[0] if shared else None
    order = _index_order(ds)
    keys = []
    for f in frames:
        idx = f["index"]
        idx = [] if idx is None else [int(idx)] if isinstance(idx, (int, float)) else [int(x) for x in idx]
        keys.append(tuple(idx[i] for i in order if i < len(idx)) if order and idx else tuple(idx))
    if all(keys):
        seen: dict[tuple, int] = {}
        for f, k in zip(frames, keys):
            if k in seen:
                raise LayoutError(f"multi-frame layout cannot be ordered: frames {seen[k] + 1} and {f['frame'] + 1} "
                                  f"have the same DimensionIndexValues {list(k)}")
            seen[k] = f["frame"]
    rank = {f["frame"]: r for r, f in enumerate(sorted(frames, key=lambda f: (keys[f["frame"]], f["frame"])))}
    echoes = sorted({to_float(f["echo_time"]) for f in frames} - {None})
    philips = "PHILIPS" in str(ds.get("Manufacturer") or "").upper()
    out = []
    for fr in frames:
        te = to_float(fr["echo_time"])
        b = to_float(fr["b_value"])
        cc = str(fr["complex"] or "")
        out.append(dataclasses.replace(
            base,
            frame=fr["frame"],
            pixel_offset=None,
            slice_thickness=to_float(fr["thickness"], base.slice_thickness),
            pixel_spacing=tuple(float(x) for x in fr["spacing"]) if fr["spacing"] else base.pixel_spacing,
            image_orientation=(tuple(float(x) for x in fr["orientation"]) if fr["orientation"]
                               else base.image_orientation),
            image_position=tuple(float(x) for x in fr["position"]),
            instance_number=rank[fr["frame"]] + 1,
            rescale_slope=to_float(fr["slope"], base.rescale_slope),
            rescale_intercept=to_float(fr["intercept"], base.rescale_intercept),
            temporal_position=int(fr["temporal"]) if fr["temporal"] is not None else base.temporal_position,
            echo_time=te if te is not None else base.echo_time,
            echo_number=echoes.index(te) + 1 if len(echoes) > 1 and te is not None else base.echo_number,
            trigger_time=to_float(fr["trigger"], base.trigger_time),
            b_value=b if b is not None else base.b_value,
            gradient=(_gradient(fr["item"], shared) or ((0.0, 0.0, 0.0) if b is not None and b <= 0 else None))
            if b is not None else base.gradient,
            complex_part=complex_part(lambda k, c=cc: c if k == "ComplexImageComponent" else None, ())
            if cc else base.complex_part,
            philips_scale_slope=_philips_scale(fr["item"], base.philips_scale_slope) if philips else None,
        ))
    return out
