"""Siemens MOSAIC: one classic DICOM file holding every slice of one volume as tiles.

Siemens V-series EPI (fMRI, DWI) stores a volume's N slices as tiles of one image
(``ImageType`` contains ``MOSAIC``), ``ceil(sqrt(N))`` tiles per side, row by row from the
top-left tile. The count N and the slice normal are only in the Siemens CSA image header
(0029,1010): ``NumberOfImagesInMosaic`` and ``SliceNormalVector``. :func:`mosaic_frames`
turns one such file into one :class:`~biomarkers.dicom.model.DicomFile` per slice (the
"frames" record the stack builder assembles into 3-D or 4-D, see ARCHITECTURE.md):

* ``rows``/``columns``: the tile size; ``tile``: ``(stored rows, stored columns, first row,
  first column)`` of the slice in the stored image (read by :func:`biomarkers.dicom.convert.read_frames`);
  ``frame``: the tile index (0-based).
* ``image_position``: the stored ImagePositionPatient is the corner of the whole mosaic; the
  centre of slice 0's first voxel is ``IPP + row_dir * (Mc - c)/2 * dc + col_dir * (Mr - r)/2 * dr``
  (Mr x Mc stored, r x c tile, dr x dc = PixelSpacing), as dcm2niix and nibabel's
  ``MosaicWrapper`` do; slice k lies ``k * SpacingBetweenSlices`` (else SliceThickness) further
  along ``SliceNormalVector``. In "H>>F" mosaics that vector points against
  ``row_dir x col_dir``, so the tiles run head to foot; the stack builder sorts slices
  along the normal either way (never in tile or acquisition order).
* ``slice_time_ms``: ``MosaicRefAcqTimes`` of the tile (slice timing, ms from the volume's start).

A mosaic whose CSA header lacks the count or the normal, or whose count does not fit the
stored image, raises :class:`MosaicError` (the caller skips the file with that reason: a
mosaic is never written as one 2-D image). Coordinates are DICOM patient LPS (mm).
"""

from __future__ import annotations

import dataclasses
import math
import struct

import numpy as np

from .model import DicomFile

#: Private creator of the Siemens CSA headers (block 0x10: (0029,1010) image, (0029,1020) series).
CSA_CREATOR = "SIEMENS CSA HEADER"
_MAX_ITEMS = 10_000


class MosaicError(ValueError):
    """A mosaic that cannot be split into slices (the message is the skip reason)."""


def read_csa(raw: bytes) -> dict[str, list[str]]:
    """Parse a Siemens CSA header (CSA1 or CSA2 ``SV10``) -> element name -> its item strings.

    Layout (little endian): [``SV10`` + 4 bytes], n_tags (uint32), 4 unused bytes, then per
    element: name (64 bytes, NUL-terminated), VM (int32), VR (4 bytes), SyngoDT, item count,
    1 unused (int32 each); per item four int32 (CSA2: the second is the length; CSA1: the
    first minus the second element's item count) and the value padded to 4 bytes.
    Raises :class:`MosaicError` on a header that does not parse.
    """
    n = len(raw)
    try:
        pos = 8 if raw[:4] == b"SV10" else 0
        csa2 = pos == 8
        n_tags = struct.unpack_from("<I", raw, pos)[0]
        pos += 8
        if not 0 < n_tags <= 1000:
            raise MosaicError(f"unreadable Siemens CSA header ({n_tags} elements)")
        out: dict[str, list[str]] = {}
        tag0_items = 0
        for t in range(n_tags):
            name_raw, vm, _vr, _dt, n_items, _ = struct.unpack_from("<64si4s3i", raw, pos)
            pos += 84
            if not 0 <= n_items <= _MAX_ITEMS:
                raise MosaicError("unreadable Siemens CSA header (item count)")
            if t == 1:
                tag0_items = n_items
            n_values = vm if vm > 0 else n_items
            items: list[str] = []
            for k in range(n_items):
                x = struct.unpack_from("<4i", raw, pos)
                pos += 16
                length = x[1] if csa2 else x[0] - tag0_items
                if length < 0 or pos + length > n:
                    if csa2:
                        raise MosaicError("unreadable Siemens CSA header (item past the end)")
                    break
                if k < n_values:
                    items.append(raw[pos : pos + length].split(b"\x00", 1)[0].decode("latin-1").strip())
                pos += length + (-length % 4)
            out[name_raw.split(b"\x00", 1)[0].decode("latin-1")] = items
        return out
    except struct.error:
        raise MosaicError("unreadable Siemens CSA header (truncated)") from None


def _floats(items: list[str]) -> list[float]:
    vals = []
    for s in items:
        if not s:
            break
        try:
            vals.append(float(s))
        except ValueError:
            break
    return vals


def read_mosaic(base: DicomFile) -> list[DicomFile]:
    """The slices of the mosaic file ``base`` (reads its CSA image header and SpacingBetweenSlices
    with pydicom, header only; :func:`mosaic_frames`). Raises :class:`MosaicError`."""
    from .header import load_pydicom

    pydicom = load_pydicom()  # validation silenced inside the index's quiet_pydicom

    ds = pydicom.dcmread(base.path, stop_before_pixels=True, force=True, specific_tags=[
        "SpacingBetweenSlices", 0x00290010, 0x00290011, 0x00290012, 0x00291010, 0x00291110, 0x00291210])
    csa = None
    for block in (0x10, 0x11, 0x12):  # the creator may reserve another block than 0x10
        creator = ds.get((0x0029, block))
        if creator is not None and str(creator.value).strip().upper() == CSA_CREATOR:
            el = ds.get((0x0029, (block << 8) | 0x10))
            if el is not None and isinstance(el.value, bytes) and el.value:
                csa = read_csa(el.value)
            break
    try:
        sbs = float(ds.get("SpacingBetweenSlices"))
    except (TypeError, ValueError):
        sbs = None
    return mosaic_frames(base, csa, sbs)


def mosaic_frames(base: DicomFile, csa: dict[str, list[str]] | None,
                  spacing_between_slices: float | None) -> list[DicomFile]:
    """Split the mosaic ``base`` (its header record) into one record per slice (module docstring).

    ``csa``: :func:`read_csa` of its CSA image header (None: absent). Raises :class:`MosaicError`.
    """
    if csa is None:
        raise MosaicError("Siemens mosaic without its CSA image header (cannot tell the number of slices)")
    count = _floats(csa.get("NumberOfImagesInMosaic", []))
    if not count or count[0] != int(count[0]) or count[0] < 1:
        raise MosaicError("Siemens mosaic without NumberOfImagesInMosaic in its CSA header (cannot split the tiles)")
    n = int(count[0])
    per_side = math.ceil(math.sqrt(n))
    rows, cols = int(base.rows or 0), int(base.columns or 0)
    if rows % per_side or cols % per_side or rows < per_side or cols < per_side:
        raise MosaicError(f"Siemens mosaic: NumberOfImagesInMosaic={n} does not fit a {rows} x {cols} image "
                          f"({per_side} x {per_side} tiles)")
    r, c = rows // per_side, cols // per_side
    if base.image_orientation is None or base.image_position is None or base.pixel_spacing is None:
        raise MosaicError("Siemens mosaic without ImagePositionPatient/ImageOrientationPatient/PixelSpacing")
    iop = np.asarray(base.image_orientation, float)
    row_dir, col_dir = iop[:3], iop[3:]
    normal = np.cross(row_dir, col_dir)
    snv = _floats(csa.get("SliceNormalVector", []))
    if len(snv) != 3 or not np.isfinite(snv).all() or np.linalg.norm(snv) == 0:
        raise MosaicError("Siemens mosaic without SliceNormalVector in its CSA header (slice order unknown)")
    snv_u = np.asarray(snv) / np.linalg.norm(snv)
    cos = float(snv_u @ normal)
    if abs(cos) < 0.999:
        raise MosaicError("Siemens mosaic: CSA SliceNormalVector disagrees with ImageOrientationPatient "
                          f"(cosine {cos:.4f})")
    step = spacing_between_slices if spacing_between_slices and spacing_between_slices > 0 else base.slice_thickness
    if n > 1 and not step:
        raise MosaicError("Siemens mosaic without SpacingBetweenSlices or SliceThickness (slice positions unknown)")
    direction = np.sign(cos) * normal  # the exact normal of the orientation, pointing as the CSA's
    dr, dc = float(base.pixel_spacing[0]), float(base.pixel_spacing[1])
    p0 = np.asarray(base.image_position, float) + row_dir * (cols - c) / 2 * dc + col_dir * (rows - r) / 2 * dr
    times = _floats(csa.get("MosaicRefAcqTimes", []))
    from .dims import csa_diffusion

    diffusion = csa_diffusion(csa, base)  # B_value / DiffusionGradientDirection of a DWI mosaic
    out = []
    for k in range(n):
        pos = p0 + k * float(step or 0.0) * direction
        out.append(dataclasses.replace(
            base, rows=r, columns=c, frame=k, tile=(rows, cols, (k // per_side) * r, (k % per_side) * c),
            image_position=tuple(float(x) for x in pos), slice_time_ms=times[k] if len(times) == n else None,
            **diffusion,
        ))
    return out
