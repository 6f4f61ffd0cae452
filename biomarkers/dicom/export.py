"""``biomarkers deid-export``: de-identified DICOM copies of a source folder (the file-level driver).

The per-dataset transform, its settings and PS3.15 Table E.1-1 are :mod:`biomarkers.deid.export`
(:func:`~biomarkers.deid.export.deidentify_dataset`); this module walks the files, refuses burned-in
text with :func:`biomarkers.dicom.refusals.screen_capture_reason` (the one predicate ingest uses) or
blanks a known layout, keeps one complete copy of each SOP instance and writes the report.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..deid.deidentifier import Deidentifier
from ..deid.export import METHOD_CODES, BlankRule, ExportSettings, deidentify_dataset, known_matcher
from ..io import atomic_path
from ..report import RunReport

log = logging.getLogger(__name__)


def _expected_pixel_bytes(ds) -> int | None:
    """Bytes of native (uncompressed) pixel data the header announces; None when encapsulated or unknown."""
    try:
        if ds.file_meta.TransferSyntaxUID.is_compressed or "PixelData" not in ds:
            return None
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        return ds.Rows * ds.Columns * int(ds.get("SamplesPerPixel", 1)) * frames * ds.BitsAllocated // 8
    except (AttributeError, TypeError, ValueError):
        return None


def completeness(path: Path) -> tuple[bool, str]:
    """Is a DICOM file whole? (read in full; native pixel data at least as long as its header says)."""
    import pydicom

    try:
        ds = pydicom.dcmread(path)
        n = _expected_pixel_bytes(ds)
        if n is not None and len(ds.PixelData) < n:
            return False, f"truncated: pixel data {len(ds.PixelData)} of {n} bytes"
        if "PixelData" in ds and ds.file_meta.TransferSyntaxUID.is_compressed:
            ds.pixel_array  # noqa: B018 - decodes every fragment
    except Exception as err:  # noqa: BLE001
        return False, f"unreadable: {type(err).__name__}"
    return True, ""


def _blank_rule(ds, rules: list[BlankRule]) -> BlankRule | None:
    import re

    for r in rules:
        if (re.fullmatch(r.manufacturer, str(ds.get("Manufacturer", "")), re.I)
                and re.fullmatch(r.model, str(ds.get("ManufacturerModelName", "")), re.I)
                and int(ds.get("Rows", 0)) == r.rows and int(ds.get("Columns", 0)) == r.columns):
            return r
    return None


def blank_regions(ds, rule: BlankRule) -> None:
    """Set the rule's rectangles of every frame to the image minimum (in place).

    The pixel data is decoded (compressed, planar or YCbCr data included: YCbCr becomes RGB) and
    written back native with its Image Pixel attributes (``Dataset.set_pixel_data``: transfer syntax,
    planar configuration, photometric interpretation), so the blanked copy reads as it was shown.
    """
    import numpy as np
    from pydicom.pixels import get_decoder

    arr, meta = get_decoder(ds.file_meta.TransferSyntaxUID).as_array(ds)
    arr = arr.copy()
    frames = arr if int(ds.get("NumberOfFrames", 1) or 1) > 1 else arr[None]
    low = arr.min()
    for x, y, w, h in rule.rectangles:
        frames[:, y:y + h, x:x + w, ...] = low
    out = frames if arr.ndim == frames.ndim else frames[0]
    ds.set_pixel_data(np.ascontiguousarray(out), str(meta["photometric_interpretation"]), int(ds.BitsStored),
                      generate_instance_uid=False)
    ds.BurnedInAnnotation = "NO"


def export_dicom(
    src: str | Path,
    out: str | Path,
    deidentifier: Deidentifier | None = None,
    settings: ExportSettings | None = None,
) -> RunReport:
    """Write de-identified copies of every DICOM file under ``src`` to ``out``.

    Layout: ``OUT/<patient pseudonym>/<new series UID>/<new SOP instance UID>.dcm`` and
    ``OUT/report.json``. Every source file is named in the report and the log by its keyed reference
    (``src-XXXXXXXXXXXX``, :meth:`Pseudonymizer.reference` of its path relative to ``src``), never by
    its path. Skipped: non-DICOM files, burned-in text / screen captures
    (:func:`biomarkers.dicom.refusals.screen_capture_reason`) unless a :class:`BlankRule` cleans the
    layout (then blanked, declared 113101 and reported ``blanked``), and of several files with one
    SOP instance every copy but one complete one (pixel data length checked), reported as duplicates.
    Existing outputs are not rewritten (resumable). De-identification cannot be turned off.

    Raises:
        InputError: ``src`` is not a folder, or ``out`` and ``src`` nest (:func:`biomarkers.io.check_apart`).
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    from .refusals import screen_capture_reason
    from ..errors import InputError, PrivacyError
    from ..io import check_apart
    from ..logs import file_ref

    src, out = Path(src).resolve(), Path(out).resolve()
    if not src.is_dir():
        raise InputError(f"{src}: not a folder")
    check_apart(src, out, "source folder", "export folder")
    deid = deidentifier or Deidentifier()
    if not deid.enabled:
        raise PrivacyError("deid-export always de-identifies: it cannot run with de-identification disabled")
    if deid.pseudonymizer.demo:
        from ..deid.keys import require_synthetic

        require_synthetic(src)
    settings = settings or ExportSettings()
    report = RunReport("deid-export", extra={"deid": deid.run_info(), "profile": [c for c, _ in METHOD_CODES]})
    files = sorted(p for p in src.rglob("*") if p.is_file())
    token = {f: deid.pseudonymizer.reference("src", str(f.relative_to(src))) for f in files}

    # pass 1: headers (SOP instances, identifying values of the whole export)
    by_sop: dict[str, list[Path]] = {}
    known: set[str] = set()
    from ..deid.whitelist import identifying_strings

    for f in files:
        try:
            h = pydicom.dcmread(f, stop_before_pixels=True)
        except InvalidDicomError:
            report.add(token[f], "skipped", "not a DICOM file")
            continue
        except Exception as err:  # noqa: BLE001 - one bad file never stops the export
            log.warning("%s: cannot read DICOM (%s)", file_ref(token[f], f), type(err).__name__)
            report.add(token[f], "failed", f"unreadable DICOM: {type(err).__name__}")
            continue
        by_sop.setdefault(str(h.get("SOPInstanceUID", "")) or token[f], []).append(f)
        known.update(v for v in identifying_strings(h) if len(v) >= 4)
    # duplicates: keep one complete copy of each SOP instance
    chosen: list[Path] = []
    for uid, group in by_sop.items():
        if len(group) == 1:
            chosen.append(group[0])
            continue
        status = {f: completeness(f) for f in group}
        whole = [f for f in group if status[f][0]]
        keep = whole[0] if whole else None
        if keep is not None:
            chosen.append(keep)
        for f in group:
            if f is keep:
                continue
            why = status[f][1] or "complete copy"
            report.add(token[f], "skipped", f"duplicate of SOP instance {deid.uid(uid) if keep else ''} "
                       f"({why}); kept {token[keep] if keep else 'none: no complete copy'}".replace("  ", " "))
            log.warning("%s: duplicate SOP instance, not exported (%s)", file_ref(token[f], f), why)
    known_m = known_matcher(sorted(known))  # normalised once for the whole export
    for f in sorted(chosen):
        rel_ref = token[f]
        try:
            ds = pydicom.dcmread(f)
        except Exception as err:  # noqa: BLE001
            report.add(rel_ref, "failed", f"unreadable DICOM: {type(err).__name__}")
            continue
        reason = screen_capture_reason(ds.get) if settings.skip_burned_in else ""
        rule = _blank_rule(ds, settings.blank) if reason else None
        if reason and rule is None:
            log.warning("%s: skipped, %s", file_ref(rel_ref, f), reason)
            report.add(rel_ref, "skipped", reason)
            continue
        try:
            if rule is not None:
                blank_regions(ds, rule)
            deidentify_dataset(ds, deid, settings, known=known_m, blanked=rule is not None)
            dest = out / str(ds.PatientID) / str(ds.get("SeriesInstanceUID", "no-series")) / f"{ds.SOPInstanceUID}.dcm"
            case = f"{ds.PatientID}/{ds.SOPInstanceUID}"
            if dest.is_file():
                report.add(case, "done", cached=True)
                continue
            with atomic_path(dest) as tmp:
                ds.save_as(tmp, enforce_file_format=True)
            extra = {"blanked": True} if rule is not None else {}
            report.add(case, "done", modality=str(ds.get("Modality", "")), source=rel_ref, **extra)
        except Exception as err:  # noqa: BLE001
            log.warning("%s: export failed (%s)", file_ref(rel_ref, f), type(err).__name__)
            # ValueErrors raised above name attributes, never values; others are reported by type only
            report.add(rel_ref, "failed", f"{err}"[:200] if isinstance(err, ValueError) else type(err).__name__)
    report.write(out / "report.json")
    return report
