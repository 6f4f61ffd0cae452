"""DICOM writers for the synthetic cohort (pydicom): CT, PET and RT Structure Set objects.

Objects are valid Storage SOP instances (Explicit VR Little Endian, Part 10 file meta)
with the attributes ingest needs: UIDs, Frame of Reference, ImagePositionPatient /
ImageOrientationPatient (LPS, mm), PixelSpacing, SliceThickness, rescale, and for PET
Units BQML with the radiopharmaceutical information SUV conversion needs.
Everything is deterministic given the inputs (no 'now' timestamps), so re-synthesising
the same cohort rewrites byte-identical files.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID

from .phantom import F18_HALF_LIFE_S, Centre, Lesion, lesion_contour

CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
PET_STORAGE = "1.2.840.10008.5.1.4.1.1.128"
RTSTRUCT_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"


def det_uid(*parts: object) -> str:
    """Deterministic ``2.25.<int>`` UID from the given parts (synthetic data only)."""
    digest = hashlib.sha256("\x00".join(str(p) for p in parts).encode()).digest()
    return f"2.25.{int.from_bytes(digest[:16], 'big')}"


@dataclass(frozen=True)
class PatientInfo:
    """Identifying (synthetic) header values; de-identification must remove all of them."""

    patient_id: str  # e.g. C1-0001
    name: str  # DICOM PN, e.g. DOE^JOHN
    birth_date: dt.date
    sex: str  # M / F
    weight_kg: float
    study_date: dt.date
    accession: str
    seed: int

    def uid(self, *what: object) -> str:
        return det_uid("biomarkers-synth", self.seed, self.patient_id, *what)


def _file_meta(sop_class: str, sop_uid: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "BIOMARKERS_SYNTH"
    return meta


def _da(d: dt.date) -> str:
    return d.strftime("%Y%m%d")


def _base(p: PatientInfo, centre: Centre, sop_class: str, sop_uid: str, modality: str) -> Dataset:
    ds = Dataset()
    ds.file_meta = _file_meta(sop_class, sop_uid)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = _da(p.study_date)
    ds.StudyTime = "093000"
    ds.AccessionNumber = p.accession
    ds.Modality = modality
    ds.Manufacturer = centre.manufacturer
    ds.InstitutionName = f"Synthetic Hospital {centre.code}"
    ds.ReferringPhysicianName = "HOUSE^GREGORY"
    ds.StudyDescription = "PET-CT THORAX"
    ds.PatientName = p.name
    ds.PatientID = p.patient_id
    ds.PatientBirthDate = _da(p.birth_date)
    ds.PatientSex = p.sex
    ds.PatientAge = f"{(p.study_date - p.birth_date).days // 365:03d}Y"
    ds.PatientWeight = f"{p.weight_kg:.1f}"
    ds.StudyInstanceUID = p.uid("study")
    ds.StudyID = p.accession[-6:]
    ds.FrameOfReferenceUID = p.uid("for")
    ds.PositionReferenceIndicator = ""
    return ds


def _image_common(ds: Dataset, p: PatientInfo, series_uid: str, series_no: int, k: int, z: float,
                  origin: float, spacing: float, thickness: float, n_xy: int) -> None:
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_no
    ds.InstanceNumber = k + 1
    ds.SeriesDate = ds.StudyDate
    ds.ContentDate = ds.StudyDate
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.PatientPosition = "FFS"
    ds.ImagePositionPatient = [f"{origin:.4f}", f"{origin:.4f}", f"{z:.4f}"]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SliceLocation = f"{z:.4f}"
    ds.SliceThickness = f"{thickness:g}"
    ds.PixelSpacing = [f"{spacing:g}", f"{spacing:g}"]
    ds.Rows = n_xy
    ds.Columns = n_xy
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15


def _slice(ds: Dataset, sop: str, k: int, z: float, origin: float) -> None:
    """Set the per-slice attributes of a series' dataset."""
    ds.SOPInstanceUID = sop
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    ds.InstanceNumber = k + 1
    ds.ImagePositionPatient = [f"{origin:.4f}", f"{origin:.4f}", f"{z:.4f}"]
    ds.SliceLocation = f"{z:.4f}"


def write_ct_series(folder: Path, p: PatientInfo, centre: Centre, hu: np.ndarray, origin: float,
                    z_positions: np.ndarray) -> tuple[str, list[tuple[str, float]]]:
    """Write a CT series (int16 stored values, RescaleIntercept -1024). Returns (series UID, [(SOP UID, z)])."""
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = p.uid("ct-series")
    stored = np.clip(np.rint(hu + 1024.0), -32768, 32767).astype(np.int16)
    refs = []
    ds = _base(p, centre, CT_STORAGE, "", "CT")  # one dataset per series, per-slice values updated
    _image_common(ds, p, series_uid, 2, 0, float(z_positions[0]), origin, centre.pixel_spacing_mm,
                  centre.slice_thickness_mm, hu.shape[1])
    ds.SeriesDescription = "CT THORAX"
    ds.KVP = "120"
    ds.XRayTubeCurrent = 200
    ds.ConvolutionKernel = centre.kernel_name
    ds.BodyPartExamined = "CHEST"
    ds.PixelRepresentation = 1
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.WindowCenter = "40"
    ds.WindowWidth = "400"
    for k, z in enumerate(z_positions):
        sop = p.uid("ct", k)
        _slice(ds, sop, k, float(z), origin)
        ds.PixelData = stored[k].tobytes()
        ds.save_as(folder / f"CT_{k + 1:04d}.dcm", enforce_file_format=True)
        refs.append((sop, float(z)))
    return series_uid, refs


def pet_times(p: PatientInfo, rng_minutes: float) -> tuple[str, str, float]:
    """(injection time, series time, seconds between) for a scan ``rng_minutes`` after injection."""
    inj = dt.datetime.combine(p.study_date, dt.time(9, 30, 0))
    scan = inj + dt.timedelta(minutes=rng_minutes)
    return inj.strftime("%H%M%S.00"), scan.strftime("%H%M%S.00"), (scan - inj).total_seconds()


def write_pet_series(folder: Path, p: PatientInfo, centre: Centre, suv: np.ndarray, origin: float,
                     z_positions: np.ndarray, dose_bq: float, uptake_min: float) -> tuple[str, list[tuple[str, float]]]:
    """Write a PET series in Bq/mL (Units BQML, decay corrected to the scan start, per-slice rescale slope).

    Activity concentration = SUVbw * injected dose decayed to the series time / body weight (g).
    """
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = p.uid("pet-series")
    inj_time, scan_time, dt_s = pet_times(p, uptake_min)
    decayed = dose_bq * 2.0 ** (-dt_s / F18_HALF_LIFE_S)
    bqml = suv * decayed / (p.weight_kg * 1000.0)
    spacing = 2.0 * centre.pixel_spacing_mm
    refs = []
    ds = _base(p, centre, PET_STORAGE, "", "PT")
    _image_common(ds, p, series_uid, 3, 0, float(z_positions[0]), origin, spacing, centre.pet_slice_mm, suv.shape[1])
    ds.SeriesDescription = "PET WB AC"
    ds.SeriesTime = scan_time.split(".")[0]
    ds.AcquisitionTime = scan_time.split(".")[0]
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.Units = "BQML"
    ds.DecayCorrection = "START"
    ds.CorrectedImage = ["ATTN", "DECY"]
    ds.SeriesType = ["WHOLE BODY", "IMAGE"]
    ds.CountsSource = "EMISSION"
    ds.NumberOfSlices = len(z_positions)
    ds.FrameReferenceTime = "0"
    ds.ActualFrameDuration = 120000
    ds.DecayFactor = "1"
    ds.ReconstructionMethod = "OSEM"
    ri = Dataset()
    ri.Radiopharmaceutical = "Fluorodeoxyglucose"
    ri.RadiopharmaceuticalStartTime = inj_time
    ri.RadionuclideTotalDose = f"{dose_bq:.1f}"
    ri.RadionuclideHalfLife = f"{F18_HALF_LIFE_S}"
    ri.RadionuclidePositronFraction = "0.9673"
    ds.RadiopharmaceuticalInformationSequence = Sequence([ri])
    ds.PixelRepresentation = 1
    ds.RescaleIntercept = "0"
    for k, z in enumerate(z_positions):
        sop = p.uid("pet", k)
        _slice(ds, sop, k, float(z), origin)
        ds.ImageIndex = k + 1
        sl = bqml[k]
        slope = max(float(sl.max()), 1e-3) / 32000.0
        stored = np.clip(np.rint(sl / slope), 0, 32767).astype(np.int16)
        ds.RescaleSlope = f"{slope:.10g}"
        ds.PixelData = stored.tobytes()
        ds.save_as(folder / f"PT_{k + 1:04d}.dcm", enforce_file_format=True)
        refs.append((sop, float(z)))
    return series_uid, refs


def write_rtstruct(path: Path, p: PatientInfo, centre: Centre, lesion: Lesion, image_series_uid: str,
                   refs: list[tuple[str, float]], tag: str) -> str:
    """Write an RT Structure Set with the lesion contoured on every referenced slice it crosses."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sop = p.uid("rtstruct", tag)
    ds = _base(p, centre, RTSTRUCT_STORAGE, sop, "RTSTRUCT")
    ds.SeriesInstanceUID = p.uid("rtstruct-series", tag)
    ds.SeriesNumber = 10 if tag == "CT" else 11
    ds.InstanceNumber = 1
    ds.SeriesDescription = f"RTSTRUCT {tag}"
    ds.StructureSetLabel = "LESION"
    ds.StructureSetName = "LESION"
    ds.StructureSetDate = ds.StudyDate
    ds.StructureSetTime = "120000"
    ds.OperatorsName = "CURIE^MARIE"

    contour_images = []
    for sop_uid, _ in refs:
        ci = Dataset()
        ci.ReferencedSOPClassUID = CT_STORAGE if tag == "CT" else PET_STORAGE
        ci.ReferencedSOPInstanceUID = sop_uid
        contour_images.append(ci)
    rs = Dataset()
    rs.SeriesInstanceUID = image_series_uid
    rs.ContourImageSequence = Sequence(contour_images)
    rstudy = Dataset()
    rstudy.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"  # Detached Study Management (retired, customary)
    rstudy.ReferencedSOPInstanceUID = ds.StudyInstanceUID
    rstudy.RTReferencedSeriesSequence = Sequence([rs])
    rfor = Dataset()
    rfor.FrameOfReferenceUID = ds.FrameOfReferenceUID
    rfor.RTReferencedStudySequence = Sequence([rstudy])
    ds.ReferencedFrameOfReferenceSequence = Sequence([rfor])

    roi = Dataset()
    roi.ROINumber = 1
    roi.ReferencedFrameOfReferenceUID = ds.FrameOfReferenceUID
    roi.ROIName = centre.roi_name
    roi.ROIGenerationAlgorithm = "MANUAL"
    ds.StructureSetROISequence = Sequence([roi])

    contours = []
    for sop_uid, z in refs:
        pts = lesion_contour(lesion, z)
        if pts is None:
            continue
        c = Dataset()
        ci = Dataset()
        ci.ReferencedSOPClassUID = CT_STORAGE if tag == "CT" else PET_STORAGE
        ci.ReferencedSOPInstanceUID = sop_uid
        c.ContourImageSequence = Sequence([ci])
        c.ContourGeometricType = "CLOSED_PLANAR"
        c.NumberOfContourPoints = len(pts)
        c.ContourData = [f"{v:.3f}" for v in pts.reshape(-1)]
        contours.append(c)
    rc = Dataset()
    rc.ReferencedROINumber = 1
    rc.ROIDisplayColor = [255, 0, 0]
    rc.ContourSequence = Sequence(contours)
    ds.ROIContourSequence = Sequence([rc])

    obs = Dataset()
    obs.ObservationNumber = 1
    obs.ReferencedROINumber = 1
    obs.RTROIInterpretedType = "GTV"
    obs.ROIInterpreter = ""
    ds.RTROIObservationsSequence = Sequence([obs])
    ds.ApprovalStatus = "UNAPPROVED"
    ds.save_as(path, enforce_file_format=True)
    return ds.SeriesInstanceUID
