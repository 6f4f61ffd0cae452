"""Thumbnails of the QC report: slices of an image with a mask's contour, written as clean PNGs.

:func:`render_item` is the work item the executor runs (in a worker): one image NIfTI and
the masks on it that need thumbnails (the image is read once). Each mask gets four views
(:data:`MASK_VIEWS`): axial, coronal and sagittal slices through the ROI's centroid and the
axial slice of largest ROI area; an image without a mask gets the three orthogonal slices
through the centre of its volume (:data:`IMAGE_VIEWS`). Orientation, windows and pixel size
follow :mod:`biomarkers.qc.display`.

Files, named by the thumbnail's content key (:func:`thumb_key`), in ``THUMBS``::

    <key>_<view>.png    palette PNG: grey levels 0-239, ROI colours 240-254, annotations 255
    <key>.json          what the card shows: slice indices, mm per pixel, window, ROI voxels, mean

PNGs carry only the chunks IHDR, PLTE, IDAT and IEND (:func:`strip_png`): no text, time,
physical size or colour-profile chunk.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np

from . import display

#: Bump when the pictures change for the same inputs (part of every thumbnail key).
RENDERER_VERSION = "qc-render/1"
MASK_VIEWS = ("axial", "coronal", "sagittal", "axial_max")
IMAGE_VIEWS = ("axial", "coronal", "sagittal")
GREY_LEVELS = 240
ANNOTATION = 255  # palette index of the scale bar and edge letters (yellow)
ANNOTATION_RGB = (255, 221, 0)

#: Contour colours (RGB), picked per ROI name by :func:`roi_colour`; none is grey or the annotation colour.
ROI_COLOURS: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
    (240, 50, 230), (210, 245, 60), (0, 128, 128), (170, 110, 40), (128, 0, 0), (0, 0, 128),
    (255, 120, 180), (128, 128, 0), (100, 255, 140),
)

_KEEP_CHUNKS = {b"IHDR", b"PLTE", b"IDAT", b"IEND"}
_PNG_SIG = b"\x89PNG\r\n\x1a\n"


def roi_colour(roi: str) -> tuple[int, int, int]:
    """The contour colour of an ROI name (stable: the same name has the same colour in every run)."""
    if (roi or "").upper().startswith("GTV"):
        return ROI_COLOURS[0]
    h = int(hashlib.sha256((roi or "").encode()).hexdigest(), 16)
    return ROI_COLOURS[1 + h % (len(ROI_COLOURS) - 1)]


def thumb_key(image_content: str, mask_content: str | None, settings: dict, colour=None) -> str:
    """Content key of one card's thumbnails: voxel content of image (and mask), display settings, renderer."""
    blob = json.dumps({"v": RENDERER_VERSION, "image": image_content, "mask": mask_content or "",
                       "settings": settings, "colour": list(colour or ())}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def strip_png(data: bytes) -> bytes:
    """``data`` (a PNG) with every chunk but IHDR, PLTE, IDAT and IEND removed."""
    if not data.startswith(_PNG_SIG):
        raise ValueError("not a PNG")
    out = [_PNG_SIG]
    pos = len(_PNG_SIG)
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        ctype = data[pos + 4:pos + 8]
        end = pos + 12 + length
        if ctype in _KEEP_CHUNKS:
            out.append(data[pos:end])
        pos = end
    return b"".join(out)


def png_chunks(data: bytes) -> list[str]:
    """Chunk types of a PNG, in order (for checks)."""
    types, pos = [], len(_PNG_SIG)
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        types.append(data[pos + 4:pos + 8].decode("latin-1"))
        pos += 12 + length
    return types


def clean_png(image) -> bytes:
    """PNG bytes of a PIL image, metadata-free (see :func:`strip_png`)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=6)
    return strip_png(buf.getvalue())


def reencode_png(data: bytes, max_width: int = 640) -> bytes:
    """Re-encode any image file's bytes (e.g. an MLflow plot) as a metadata-free RGB PNG, at most ``max_width`` wide."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        im = im.convert("RGB")
        if im.width > max_width:
            im = im.resize((max_width, round(im.height * max_width / im.width)), Image.Resampling.LANCZOS)
        return clean_png(im)


def _palette(colour) -> list[int]:
    pal: list[int] = []
    for g in range(GREY_LEVELS):
        v = round(g * 255 / (GREY_LEVELS - 1))
        pal += [v, v, v]
    for _ in range(GREY_LEVELS, ANNOTATION):
        pal += list(colour)
    return pal + list(ANNOTATION_RGB)


def load_nifti(path: str | Path):
    """(array, RAS affine) of a NIfTI file; ``.gz`` decompressed with ISA-L when installed."""
    import nibabel as nib

    p = Path(path)
    if p.name.endswith(".gz"):
        raw = p.read_bytes()
        try:
            from isal import igzip

            raw = igzip.decompress(raw)
        except ImportError:  # pragma: no cover - isal is a dependency
            raw = zlib.decompress(raw, 16 + zlib.MAX_WBITS)
        img = nib.Nifti1Image.from_bytes(raw)
    else:
        img = nib.load(str(p))
    return np.asanyarray(img.dataobj), np.asarray(img.affine, dtype=float)


def _p_image(indices: np.ndarray, colour):
    """A palette image of uint8 palette ``indices`` (rows x columns)."""
    from PIL import Image

    im = Image.frombytes("P", (indices.shape[1], indices.shape[0]), np.ascontiguousarray(indices, np.uint8).tobytes())
    im.putpalette(_palette(colour))
    return im


def _binary_resize(sl: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A binary slice resampled to ``size`` (w, h): area fraction >= 1/2, or nearest when that loses it."""
    from PIL import Image

    im = Image.frombytes("L", (sl.shape[1], sl.shape[0]), (np.ascontiguousarray(sl, dtype=np.uint8) * 255).tobytes())
    out = np.asarray(im.resize(size, Image.Resampling.BILINEAR)) >= 128
    if not out.any() and sl.any():
        out = np.asarray(im.resize(size, Image.Resampling.NEAREST)) > 0
    return out


def contour(m: np.ndarray) -> np.ndarray:
    """Pixels of ``m`` with a 4-neighbour outside ``m`` (the image edge counts as outside)."""
    p = np.pad(m, 1, constant_values=False)
    inner = p[1:-1, 1:-1] & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return m & ~inner


def render_view(vol_lps: np.ndarray, spacing_lps, view: str, index: int, win: display.Window, size: int,
                mask_plane: np.ndarray | None = None, colour=(230, 25, 75)) -> tuple[bytes, dict]:
    """PNG bytes and geometry of one displayed slice (``view`` as in :mod:`biomarkers.qc.display`);
    ``mask_plane``: the ROI in that slice, displayed the same way (its contour is drawn)."""
    from PIL import Image, ImageDraw

    sl = display.plane(vol_lps, view, index).astype(np.float32)
    rh, cw = display.plane_spacing(spacing_lps, view)
    h_mm, w_mm = sl.shape[0] * rh, sl.shape[1] * cw
    px = max(h_mm, w_mm) / size
    out_w, out_h = max(1, round(w_mm / px)), max(1, round(h_mm / px))
    grey = win.apply(np.asarray(Image.fromarray(np.ascontiguousarray(sl)).resize((out_w, out_h),
                                                                                   Image.Resampling.BILINEAR)),
                     GREY_LEVELS)
    im = _p_image(grey, colour)
    draw = ImageDraw.Draw(im)
    bar_mm = display.nice_bar_mm(w_mm)
    bar_px = max(1, round(bar_mm / (w_mm / out_w)))
    y = out_h - 6
    draw.rectangle([5, y - 2, 5 + bar_px, y], fill=ANNOTATION)
    draw.text((5, y - 14), f"{bar_mm:g} mm", fill=ANNOTATION)
    left, right, top, _bottom = display.EDGE_LETTERS[view]
    draw.text((2, out_h // 2 - 5), left, fill=ANNOTATION)
    draw.text((out_w - 8, out_h // 2 - 5), right, fill=ANNOTATION)
    draw.text((out_w // 2 - 3, 1), top, fill=ANNOTATION)
    n_contour = 0
    if mask_plane is not None:
        m = _binary_resize(mask_plane, (out_w, out_h))
        c = contour(m)
        n_contour = int(c.sum())
        arr = np.array(im)
        arr[c] = GREY_LEVELS  # contour last: never hidden by an annotation
        im = _p_image(arr, colour)
    info = {"w": out_w, "h": out_h, "mm_per_px": [h_mm / out_h, w_mm / out_w], "slice": int(index),
            "fov_mm": [h_mm, w_mm], "scale_bar_mm": bar_mm, "contour_px": n_contour}
    return clean_png(im), info


def _on_image_grid(mask: np.ndarray, mask_aff: np.ndarray, shape, img_aff: np.ndarray) -> tuple[np.ndarray, bool]:
    """The mask on the image's voxel grid (nearest neighbour when the grids differ); True if resampled."""
    if tuple(mask.shape[:3]) == tuple(shape[:3]) and np.allclose(mask_aff, img_aff, atol=1e-3):
        return mask, False
    from scipy.ndimage import affine_transform

    m = np.linalg.inv(mask_aff) @ img_aff  # image voxel -> mask voxel
    return affine_transform(np.asarray(mask, dtype=np.uint8), m[:3, :3], offset=m[:3, 3], output_shape=tuple(shape[:3]),
                            order=0, mode="constant", cval=0), True


def roi_voxels(mask: np.ndarray, index_map: np.ndarray) -> np.ndarray:
    """``(n, 3)`` indices, in the LPS-ordered view (:func:`display.to_lps`), of the mask's non-zero voxels.

    One pass over the stored array in its memory order; ``index_map`` maps view indices to stored ones.
    """
    order = "F" if mask.flags.f_contiguous and not mask.flags.c_contiguous else "C"
    flat = np.flatnonzero(np.ravel(mask, order=order))
    ijk = np.column_stack(np.unravel_index(flat, mask.shape[:3], order=order)) if flat.size else np.zeros((0, 3), int)
    inv = np.linalg.inv(index_map)  # stored -> view (a permutation with flips: exact)
    return np.rint(ijk @ inv[:3, :3].T + inv[:3, 3]).astype(np.intp)


def _mask_plane(lps: np.ndarray, shape_lps, view: str, index: int) -> np.ndarray:
    """The displayed 2-D mask of slice ``index`` (same orientation as :func:`display.plane` of the image)."""
    ax = display.SLICE_AXIS[view]
    sel = lps[lps[:, ax] == index]
    shape = list(shape_lps)
    shape[ax] = 1
    m = np.zeros(shape, dtype=bool)
    sel = sel.copy()
    sel[:, ax] = 0
    m[sel[:, 0], sel[:, 1], sel[:, 2]] = True
    return display.plane(m, view, 0)


def _slices_of_mask(lps: np.ndarray, shape_lps) -> dict | None:
    """Centroid slice of each axis and the axial slice of largest area, from the ROI's LPS voxel indices (None: empty)."""
    n = int(len(lps))
    if n == 0:
        return None
    counts = [np.bincount(lps[:, ax], minlength=shape_lps[ax]) for ax in range(3)]
    cen = [float(lps[:, ax].mean()) for ax in range(3)]
    idx = [min(shape_lps[ax] - 1, max(0, int(round(cen[ax])))) for ax in range(3)]
    for ax in range(3):  # a centroid outside the ROI (e.g. a ring): nearest slice that has ROI voxels
        if counts[ax][idx[ax]] == 0:
            nz = np.nonzero(counts[ax])[0]
            idx[ax] = int(nz[np.argmin(np.abs(nz - cen[ax]))])
    return {"voxels": n, "centroid_lps_index": cen, "sagittal": idx[0], "coronal": idx[1], "axial": idx[2],
            "axial_max": int(np.argmax(counts[2]))}


def render_item(payload: dict) -> dict:
    """Render the thumbnails of one image and of the masks on it (runs in a worker).

    ``payload``: ``image`` (NIfTI path), ``modality``, ``thumbs`` (folder), ``settings``
    (:func:`display.window` arguments + ``size``), ``image_key`` (key of the image-only card, or None),
    ``masks``: list of ``{"key", "path", "colour"}``. Returns ``{key: card info}`` (also written as
    ``<key>.json``). A mask that cannot be shown ends as ``{"error": reason}``, the others still render.
    """
    from ..io import write_bytes, write_json

    s = payload["settings"]
    thumbs = Path(payload["thumbs"])
    arr, aff = load_nifti(payload["image"])
    notes = []
    if arr.ndim > 3:
        arr = arr.reshape(arr.shape[:3] + (-1,))[..., 0]
        notes.append("4-D image: first volume shown")
    vol, spacing, index_map = display.to_lps(arr, aff)
    win = display.window(vol, payload["modality"], s.get("ct_window", "soft_tissue"), s.get("pet_max"),
                         s.get("mr_percentiles", (1.0, 99.0)))
    import os

    base = {"window": win.label, "spacing_lps_mm": list(spacing), "notes": notes, "pid": os.getpid()}
    results: dict[str, dict] = {}

    def write(key: str, info: dict, files: dict[str, bytes]) -> None:
        for view, data in files.items():  # pictures first, the card's JSON (durable, with their sizes) last
            write_bytes(thumbs / f"{key}_{view}.png", data, durable=False)
            info["views"][view]["bytes"] = len(data)
        write_json(thumbs / f"{key}.json", info)
        results[key] = info

    if payload.get("image_key"):
        views, files = {}, {}
        for view in IMAGE_VIEWS:
            files[view], views[view] = render_view(vol, spacing, view, vol.shape[display.SLICE_AXIS[view]] // 2,
                                                   win, s["size"])
        write(payload["image_key"], {**base, "views": views}, files)
    for mk in payload.get("masks", []):
        try:
            marr, maff = load_nifti(mk["path"])
            if marr.ndim > 3:
                marr = marr.reshape(marr.shape[:3] + (-1,))[..., 0]
            marr, resampled = _on_image_grid(marr, maff, arr.shape, aff)
            lps = roi_voxels(marr, index_map)
            where = _slices_of_mask(lps, vol.shape)
            mnotes = list(notes) + (["mask resampled to the image grid for display"] if resampled else [])
            if where is None:
                mnotes.append("empty mask: slices through the centre of the image")
                where = {"voxels": 0, "centroid_lps_index": None, "axial_max": vol.shape[2] // 2,
                         **{v: vol.shape[display.SLICE_AXIS[v]] // 2 for v in IMAGE_VIEWS}}
                mean = None
            else:
                mean = float(np.asarray(vol[lps[:, 0], lps[:, 1], lps[:, 2]], dtype=np.float64).mean())
            views, files = {}, {}
            for view in MASK_VIEWS:
                pv = "axial" if view == "axial_max" else view
                files[view], views[view] = render_view(vol, spacing, pv, where[view], win, s["size"],
                                                       _mask_plane(lps, vol.shape, pv, where[view]), tuple(mk["colour"]))
            write(mk["key"], {**base, "notes": mnotes, "views": views, "roi_voxels": where["voxels"],
                              "centroid_lps_index": where["centroid_lps_index"], "roi_mean": mean,
                              "colour": list(mk["colour"])}, files)
        except Exception as exc:  # noqa: BLE001 - one bad mask never stops the others
            results[mk["key"]] = {"error": f"{type(exc).__name__}: {exc}"}
    return results
