"""Benchmark: RTSTRUCT -> voxel mask, biomarkers vs dcmrtstruct2nii vs rt-utils.

Same 19 cases for every tool, in one run, on this machine: the 18 STS RTSTRUCTs
(6 patients x CT / MR_T1 / PET, ``../shared/data/sts/dicom``) and the IBSI CT
phantom. Each mask is compared (Dice, volume) with the IBSI team's reference
conversion (``../shared/data/sts/nifti/STS_00N/<MOD>_mask.nii.gz``,
``ibsi1_ct_phantom/nifti/mask/mask.nii.gz``).

Timing is wall-clock per mask, from files on disk to a voxel array in memory:

* biomarkers: read the image series headers (no pixel data; what the ingest index
  does) + ``masks_from_object`` (parse RTSTRUCT, choose the stack, rasterise).
* biomarkers-indexed: ``masks_from_object`` alone (headers indexed beforehand,
  untimed: in ``biomarkers ingest`` the index reads them once for images and masks).
* dcmrtstruct2nii 5: ``RtStructInputAdapter().ingest`` + ``DcmInputAdapter().ingest``
  (SimpleITK reads the series, pixels included: it needs the image) +
  ``DcmPatientCoords2Mask().convert``.
* rt-utils 1.2.7: ``RTStructBuilder.create_from`` (reads the series with pydicom,
  pixels included) + ``get_roi_mask_by_name``.

Optional extras, for this benchmark only (not dependencies of biomarkers)::

    .venv/bin/pip install dcmrtstruct2nii rt-utils   # bench extras

Shims (applied in this script, nothing is patched on disk):

* dcmrtstruct2nii calls ``pydicom.read_file``, removed in pydicom 3:
  ``pydicom.read_file = pydicom.dcmread``.
* rt-utils ``create_from(..., warn_only=True)`` calls ``warnings.warn`` without
  importing ``warnings`` (NameError): ``rt_utils.rtstruct_builder.warnings = warnings``.
* rt-utils places a contour only on the slice whose SOPInstanceUID its
  ContourImageSequence names; every contour in the shared data names SOP instances
  that are not in the series, so without help rt-utils returns empty masks. The shim
  replaces ``image_helper.get_slice_contour_data`` with a match by position: a
  contour goes to the slice whose position along the normal is within half a slice
  spacing of the contour's first point (what biomarkers and dcmrtstruct2nii do).
* rt-utils allocates masks as (Columns, Rows) but fills them as [row, column]: on
  non-square images the result is cropped to min(Rows, Columns) along both axes.
  The benchmark maps its [row, column, slice] array onto (i, j, k) over the
  overlapping part (that crop is part of its score).

Run:  .venv/bin/python benchmarks/masks.py [--repeat N] [--only biomarkers,biomarkers-indexed,dcmrtstruct2nii,rt-utils]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pydicom

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from biomarkers.dicom.masks import MaskSettings, dice, masks_from_object  # noqa: E402
from biomarkers.dicom.model import DicomFile, ImageStack, SegmentationObject  # noqa: E402
from biomarkers.geometry import Grid, read_nifti  # noqa: E402

SHARED = REPO.parent / "shared" / "data"


def cases(shared: Path = SHARED):
    out = []
    for p in [f"STS_00{i}" for i in range(1, 7)]:
        for m in ("CT", "MR_T1", "PET"):
            base = shared / "sts" / "dicom" / p / m
            out.append((f"{p}/{m}", base / "image", base / "mask" / "RS.dcm", shared / "sts" / "nifti" / p / f"{m}_mask.nii.gz"))
    ph = shared / "ibsi1_ct_phantom"
    out.append(("ibsi1_ct_phantom", ph / "dicom" / "image", next((ph / "dicom" / "mask").glob("*.dcm")), ph / "nifti" / "mask" / "mask.nii.gz"))
    return out


# ------------------------------------------------------------------ biomarkers
def _stack(folder: Path) -> ImageStack:
    files = []
    for p in sorted(folder.glob("*.dcm")):
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        files.append(DicomFile(
            path=p, rel=p.name, sop_class_uid=str(ds.SOPClassUID), sop_instance_uid=str(ds.SOPInstanceUID),
            modality=str(ds.Modality), patient_id="", study_uid=str(ds.StudyInstanceUID), series_uid=str(ds.SeriesInstanceUID),
            frame_of_reference_uid=str(ds.FrameOfReferenceUID), rows=int(ds.Rows), columns=int(ds.Columns),
            pixel_spacing=tuple(float(x) for x in ds.PixelSpacing),
            image_orientation=tuple(float(x) for x in ds.ImageOrientationPatient),
            image_position=tuple(float(x) for x in ds.ImagePositionPatient)))
    iop = np.asarray(files[0].image_orientation)
    n = np.cross(iop[:3], iop[3:])
    files.sort(key=lambda f: float(np.dot(n, f.image_position)))
    f0 = files[0]
    grid = Grid.from_dicom(f0.rows, f0.columns, f0.pixel_spacing, f0.image_orientation, [f.image_position for f in files])
    return ImageStack(key=str(folder), patient_id="", study_uid=f0.study_uid, series_uid=f0.series_uid, modality=f0.modality,
                      frame_of_reference_uid=f0.frame_of_reference_uid, files=files, grid=grid)


def run_biomarkers(img_dir: Path, rs: Path) -> np.ndarray:
    stack = _stack(img_dir)
    obj = SegmentationObject(path=rs, rel=rs.name, kind="RTSTRUCT", patient_id="", study_uid="", series_uid="")
    (r,) = [x for x in masks_from_object(obj, [stack], MaskSettings()) if x.status == "converted"]
    return r.array


class BiomarkersIndexed:
    """masks_from_object alone: the image headers are indexed beforehand (untimed), as in
    ``biomarkers ingest`` where the index reads them once for images and masks."""

    def __init__(self):
        self.stacks: dict[Path, ImageStack] = {}

    def prepare(self, img_dir: Path) -> None:
        if img_dir not in self.stacks:
            self.stacks[img_dir] = _stack(img_dir)

    def __call__(self, img_dir: Path, rs: Path) -> np.ndarray:
        obj = SegmentationObject(path=rs, rel=rs.name, kind="RTSTRUCT", patient_id="", study_uid="", series_uid="")
        (r,) = [x for x in masks_from_object(obj, [self.stacks[img_dir]], MaskSettings()) if x.status == "converted"]
        return r.array


# ------------------------------------------------------------------ dcmrtstruct2nii
def _dcmrtstruct2nii():
    if not hasattr(pydicom, "read_file"):  # shim: removed in pydicom 3
        pydicom.read_file = pydicom.dcmread
    with contextlib.redirect_stdout(io.StringIO()):  # it prints a citation on import
        from dcmrtstruct2nii.adapters.convert.rtstructcontour2mask import DcmPatientCoords2Mask
        from dcmrtstruct2nii.adapters.input.contours.rtstructinputadapter import RtStructInputAdapter
        from dcmrtstruct2nii.adapters.input.image.dcminputadapter import DcmInputAdapter
    import SimpleITK as sitk

    def run(img_dir: Path, rs: Path) -> np.ndarray:
        structs = RtStructInputAdapter().ingest(str(rs))
        image = DcmInputAdapter().ingest(str(img_dir))
        (st,) = [s for s in structs if "sequence" in s]
        mask = DcmPatientCoords2Mask().convert(st["sequence"], image, 0, 1)
        return np.transpose(sitk.GetArrayFromImage(mask), (2, 1, 0))  # (k, j, i) -> (i, j, k)

    return run


# ------------------------------------------------------------------ rt-utils
def _rt_utils():
    import rt_utils.image_helper as ih
    import rt_utils.rtstruct_builder as rb
    from rt_utils import RTStructBuilder

    rb.warnings = warnings  # shim: missing import in rtstruct_builder

    def slice_contours_by_position(series_slice, contour_sequence):  # shim: match by position, not SOP UID
        iop = np.asarray(series_slice.ImageOrientationPatient, float)
        n = np.cross(iop[:3], iop[3:])
        pos = float(np.dot(n, np.asarray(series_slice.ImagePositionPatient, float)))
        half = 0.5 * float(getattr(series_slice, "SliceThickness", 0) or 1.0)
        out = []
        for c in contour_sequence:
            z = float(np.dot(n, np.asarray(c.ContourData[:3], float)))
            if abs(z - pos) < half:
                out.append(c.ContourData)
        return out

    ih.get_slice_contour_data = slice_contours_by_position

    def run(img_dir: Path, rs: Path) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rt = RTStructBuilder.create_from(str(img_dir), str(rs), warn_only=True)
            m = rt.get_roi_mask_by_name(rt.get_roi_names()[0])  # shape (Columns, Rows, n), filled [row, col]
        rows, cols = int(rt.series_data[0].Rows), int(rt.series_data[0].Columns)
        out = np.zeros((cols, rows, m.shape[2]), np.uint8)  # (i, j, k)
        c = min(rows, cols)
        out[:c, :c, :] = np.transpose(m[:c, :c, :], (1, 0, 2))
        return out

    return run


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=1, help="timed runs per mask and tool (median reported)")
    ap.add_argument("--only", default="biomarkers,biomarkers-indexed,dcmrtstruct2nii,rt-utils")
    args = ap.parse_args(argv)
    tools = {"biomarkers": lambda: run_biomarkers, "biomarkers-indexed": BiomarkersIndexed}
    tools["dcmrtstruct2nii"] = _dcmrtstruct2nii
    tools["rt-utils"] = _rt_utils
    wanted = [t for t in args.only.split(",") if t]
    runners = {}
    for t in wanted:
        try:
            runners[t] = tools[t]()
        except ImportError as err:
            print(f"{t}: not installed ({err}); pip install dcmrtstruct2nii rt-utils", file=sys.stderr)
    results: dict[str, list[tuple[float, float, float]]] = {t: [] for t in runners}
    print(f"{'case':<18} " + " ".join(f"{t + ' dice':>20} {t + ' s':>18}" for t in runners))
    for label, img, rs, ref_path in cases():
        ref, ref_grid = read_nifti(ref_path)
        ref = ref > 0
        line = f"{label:<18} "
        for t, run in runners.items():
            times = []
            arr = None
            if hasattr(run, "prepare"):
                run.prepare(img)
            for _ in range(max(1, args.repeat)):
                t0 = time.perf_counter()
                try:
                    arr = run(img, rs)
                except Exception as err:  # noqa: BLE001 - a tool failing on a case is a result
                    arr = None
                    print(f"  {t} failed on {label}: {type(err).__name__}: {err}", file=sys.stderr)
                times.append(time.perf_counter() - t0)
            if arr is None or arr.shape != ref.shape:
                d, dv = 0.0, float("nan")
            else:
                d = dice(arr, ref)
                dv = 100.0 * (int(np.count_nonzero(arr)) - int(ref.sum())) / max(1, int(ref.sum()))
            tm = statistics.median(times)
            results[t].append((d, dv, tm))
            line += f"{d:20.4f} {tm:18.3f} "
        print(line, flush=True)
    print()
    print(f"{'tool':<20} {'mean dice':>10} {'min dice':>9} {'max |dvol| %':>13} {'s/mask':>8} {'x biomarkers':>13}")
    base = statistics.mean(r[2] for r in results["biomarkers"]) if "biomarkers" in results else None
    for t, rs_ in results.items():
        ds = [r[0] for r in rs_]
        dvs = [abs(r[1]) for r in rs_ if r[1] == r[1]]
        tm = statistics.mean(r[2] for r in rs_)
        ratio = f"{tm / base:13.1f}" if base else f"{'':>13}"
        print(f"{t:<20} {statistics.mean(ds):10.4f} {min(ds):9.4f} {max(dvs) if dvs else float('nan'):13.3f} {tm:8.3f} {ratio}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
