"""Canary identifiers: plant known identifying values into copies of DICOM files (and a
clinical table) so that a pipeline's outputs can be scanned for them.

Used by the privacy tests and by sites checking their own installation::

    needles = plant_dicom(src, work / "dicom", CANARY)          # copies + planted headers
    ...run ingest / extract / release on work/dicom...
    assert not scan_files([out], needles)

Every header that hides identity in real exports gets a value: patient name/id/other ids,
birth date, study/series dates, accession number, institution, referring physician,
station, free text (AdditionalPatientHistory, ImageComments, descriptions, protocol
name naming the hospital), ContributingEquipmentSequence serial numbers and private tags.
The copies go into folders named after the planted patient id, so path leaks show too.
"""

from __future__ import annotations

import datetime as dt
import shutil
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CanaryPatient:
    """Identifying values planted for one patient (all fictitious and distinctive)."""

    patient_id: str
    name: str  # DICOM PN, Last^First
    other_id: str
    birth_date: str  # DICOM DA
    study_date: str  # DICOM DA (the acquisition and content dates are derived from it)
    accession: str
    institution: str = "Quillfeather Canary Hospital"
    referring: str = "Vontrapsky^Bartholomew"
    station: str = "QCHCTSTATION7"
    serial: str = "SN-QCH-998127"
    protocol: str = "MGH_QCH_CANARYPROTO"
    history: str = "lives at 12 Nightingale Lane, phone +41 61 555 12 34"

    def needles(self) -> dict[str, tuple[str, str]]:
        """label -> (value, kind) for :func:`biomarkers.deid.scan.scan_files`."""
        p = self.patient_id
        return {
            f"{p}:PatientID": (p, "id"),
            f"{p}:PatientName": (self.name, "name"),
            f"{p}:OtherPatientIDs": (self.other_id, "id"),
            f"{p}:PatientBirthDate": (self.birth_date, "date"),
            f"{p}:StudyDate": (self.study_date, "date"),
            f"{p}:AccessionNumber": (self.accession, "id"),
            f"{p}:InstitutionName": (self.institution, "text"),
            f"{p}:ReferringPhysicianName": (self.referring, "name"),
            f"{p}:StationName": (self.station, "id"),
            f"{p}:DeviceSerialNumber": (self.serial, "id"),
            f"{p}:ProtocolName": (self.protocol, "text"),
            f"{p}:AdditionalPatientHistory": ("12 Nightingale Lane", "text"),
            f"{p}:phone": ("+41 61 555 12 34", "text"),
        }


def default_canaries(n: int) -> list[CanaryPatient]:
    """``n`` distinct fictitious patients."""
    out = []
    for i in range(n):
        out.append(
            CanaryPatient(
                patient_id=f"QCH{7301 + 17 * i:05d}X",
                name=f"Zyxwortel^Johannah{chr(65 + i)}",
                other_id=f"OTHERID{55821 + i}",
                birth_date=f"19{61 + i}0{3 + i % 6}{11 + i:02d}",
                study_date=f"2019{(7 + i) % 12 + 1:02d}{13 + i:02d}",
                accession=f"ACC{77310422 + 31 * i}",
            )
        )
    return out


def _plant(ds, c: CanaryPatient, study_offset_days: int) -> None:
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    study = dt.datetime.strptime(c.study_date, "%Y%m%d").date() + dt.timedelta(days=study_offset_days)
    ds.PatientName = c.name
    ds.PatientID = c.patient_id
    ds.OtherPatientIDs = c.other_id
    ds.PatientBirthDate = c.birth_date
    ds.StudyDate = study.strftime("%Y%m%d")
    ds.SeriesDate = ds.StudyDate
    # every other top-level date: a fixed interval after the study (intervals are checked after shifting)
    for kw, days in (("AcquisitionDate", 0), ("ContentDate", 3), ("InstanceCreationDate", 3), ("StructureSetDate", 5)):
        if kw in ds:
            setattr(ds, kw, (study + dt.timedelta(days=days)).strftime("%Y%m%d"))
    ds.AccessionNumber = c.accession
    ds.InstitutionName = c.institution
    ds.ReferringPhysicianName = c.referring
    ds.StationName = c.station
    ds.ProtocolName = c.protocol
    ds.AdditionalPatientHistory = f"{c.name.replace('^', ' ')} {c.history}"
    ds.ImageComments = f"scan of {c.patient_id} born {c.birth_date}"
    ds.StudyDescription = f"STUDY {c.patient_id}"
    ds.SeriesDescription = f"{c.protocol} {c.patient_id}"
    ds.StudyID = c.patient_id
    ds.PatientAge = "093Y"
    eq = Dataset()
    eq.Manufacturer = "CanaryVendor"
    eq.InstitutionName = c.institution
    eq.StationName = c.station
    eq.DeviceSerialNumber = c.serial
    ds.ContributingEquipmentSequence = Sequence([eq])
    block = ds.private_block(0x0011, "QCH CANARY", create=True)
    block.add_new(0x01, "LO", c.patient_id)
    block.add_new(0x02, "LO", c.name)
    block.add_new(0x03, "DA", c.birth_date)


def plant_dicom(
    src: str | Path,
    dst: str | Path,
    canaries: list[CanaryPatient],
    study_offsets_days: list[int] | None = None,
    modalities: list[str] | None = None,
) -> dict[str, tuple[str, str]]:
    """Copy DICOM series folders ``src`` (one entry per patient: a folder) into ``dst`` with planted
    identifiers, patient ``i`` of ``src`` getting ``canaries[i]``.

    Args:
        src: a list-like folder, or a list of patient folders (each copied recursively).
        dst: output folder; patient ``i`` is written to ``dst/<canaries[i].patient_id>/...``.
        study_offsets_days: per series-folder offset of the study date (to make several studies
            of one patient), default 0.
        modalities: copy only these first-level subfolders of each patient folder (e.g. ``["CT"]``).

    Returns:
        needles (label -> (value, kind)) of every planted value, plus the original
        PatientID/PatientName of the copied files. Top-level dates other than the study
        date are set to fixed intervals after it: acquisition +0, content and instance
        creation +3, structure set +5 days.
    """
    import pydicom

    srcs = [Path(p) for p in src] if isinstance(src, (list, tuple)) else sorted(p for p in Path(src).iterdir() if p.is_dir())
    if len(srcs) > len(canaries):
        raise ValueError(f"{len(srcs)} patient folders but only {len(canaries)} canaries")
    dst = Path(dst)
    needles: dict[str, tuple[str, str]] = {}
    for i, (folder, c) in enumerate(zip(srcs, canaries)):
        needles.update(c.needles())
        series_dirs = sorted({f.parent for f in folder.rglob("*.dcm")})
        if modalities is not None:
            series_dirs = [d for d in series_dirs if d.relative_to(folder).parts[0] in modalities]
        for j, sdir in enumerate(series_dirs):
            offset = study_offsets_days[j] if study_offsets_days and j < len(study_offsets_days) else 0
            out_dir = dst / c.patient_id / sdir.relative_to(folder)
            out_dir.mkdir(parents=True, exist_ok=True)
            for f in sorted(sdir.glob("*.dcm")):
                ds = pydicom.dcmread(f)
                for kw in ("PatientID", "PatientName"):
                    v = str(ds.get(kw, "") or "")
                    if v:
                        needles[f"original:{kw}:{v}"] = (v, "id")
                _plant(ds, c, offset)
                ds.save_as(out_dir / f.name, enforce_file_format=False)
        for extra in folder.rglob("*"):
            if extra.is_file() and extra.suffix.lower() != ".dcm" and (
                modalities is None or extra.relative_to(folder).parts[0] in modalities
            ):
                target = dst / c.patient_id / extra.relative_to(folder)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(extra, target)
    return needles


#: Fictional values for :func:`plant_hard` (accented, in several character sets and places).
HARD_NAME = "MÜLLER-SCHÖN^ERIKA^JOHANNA"
HARD_INSTITUTION = "Klinikum Quillfeather-Süd"
HARD_TOOL = "Quillfeather RT Contour 3"
HARD_BIRTH_TIME = "074512.3141"
HARD_TIME = "235917.4711"


def hard_needles(c: CanaryPatient) -> dict[str, tuple[str, str]]:
    """The values :func:`plant_hard` adds (label -> (value, kind))."""
    p = c.patient_id
    return {
        f"{p}:hard:name": (HARD_NAME, "name"),
        f"{p}:hard:institution": (HARD_INSTITUTION, "institution"),
        f"{p}:hard:tool": (HARD_TOOL, "text"),
        f"{p}:hard:birth_time": (HARD_BIRTH_TIME, "text"),
        f"{p}:hard:time": (HARD_TIME, "text"),
        f"{p}:hard:uid": (f"999.{_digits(p)}.{c.study_date}", "text"),
        f"{p}:hard:local_code": ("QCHANAT77", "id"),
        f"{p}:hard:preamble": ("PREAMBLE-QCH-SECRET", "text"),
    }


def _digits(s: str) -> str:
    return str(int("".join(ch for ch in s if ch.isdigit()) or "0"))


def plant_hard(ds, c: CanaryPatient, k: int, charset: str = "ISO_IR 100") -> None:
    """Plant identifiers where real exports hide them, beyond :func:`_plant` (issue 15): the
    accented name in ``charset`` (``ISO_IR 100`` Latin-1 or ``ISO_IR 192`` UTF-8) with PN components,
    nested sequences, GE/Siemens/Philips/site private blocks, the preamble, UIDs embedding the MRN
    and the study date, times (PatientBirthTime, acquisition/content times), a local code naming the
    hospital (AnatomicRegionSequence), RTSTRUCT labels, a second ROI named after the patient and the
    in-house tool as Manufacturer. Geometry and pixel data are not touched."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    ds.SpecificCharacterSet = charset
    ds.PatientName = HARD_NAME
    ds.PatientBirthTime = HARD_BIRTH_TIME
    for kw in ("StudyTime", "SeriesTime", "AcquisitionTime", "ContentTime", "InstanceCreationTime", "StructureSetTime"):
        if kw in ds or kw in ("StudyTime", "ContentTime"):
            setattr(ds, kw, HARD_TIME)
    ds.AcquisitionDateTime = f"{c.study_date}{HARD_TIME}"
    ds.InstitutionName = HARD_INSTITUTION
    ds.OperatorsName = HARD_NAME
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "QCHANAT77", "99QCH", f"{HARD_INSTITUTION} thorax"
    std = Dataset()
    std.CodeValue, std.CodingSchemeDesignator, std.CodeMeaning = "51185008", "SCT", f"Thorax ({HARD_INSTITUTION})"
    ds.AnatomicRegionSequence = Sequence([code, std])
    inner = Dataset()
    inner.PersonName = HARD_NAME  # nested: a sequence in a sequence
    inner.TextValue = f"{c.patient_id} {HARD_INSTITUTION}"
    outer = Dataset()
    outer.ContentSequence = Sequence([inner])
    outer.ReferencedSOPInstanceUID = f"1.2.999.{_digits(c.patient_id)}.{c.study_date}.9"
    ds.ReferencedImageSequence = Sequence([outer])
    for group, creator, vr, value in ((0x0009, "GEMS_IDEN_01", "LO", c.patient_id),
                                      (0x0019, "SIEMENS MR HEADER", "LO", HARD_NAME),
                                      (0x2001, "Philips Imaging DD 001", "LO", HARD_INSTITUTION),
                                      (0x0013, "QCH SITE CREATOR", "DA", c.birth_date)):
        ds.private_block(group, creator, create=True).add_new(0x10, vr, value)
    ds.preamble = b"PREAMBLE-QCH-SECRET".ljust(128, b"\0")
    root = f"1.2.999.{_digits(c.patient_id)}.{c.study_date}"
    if str(ds.get("Modality", "")) != "RTSTRUCT":  # image UIDs embed the MRN and the date (references follow)
        ds.SOPInstanceUID = f"{root}.{k + 1}"
        if getattr(ds, "file_meta", None) is not None:
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    else:
        ds.Manufacturer = HARD_TOOL
        ds.StructureSetLabel = f"QCH {c.patient_id}"[:16]
        ds.StructureSetName = HARD_NAME
        ds.StructureSetDescription = f"contours of {HARD_NAME}"
        rois = ds.StructureSetROISequence
        import copy

        extra = copy.deepcopy(rois[0])
        extra.ROINumber = max(int(r.ROINumber) for r in rois) + 1
        extra.ROIName = HARD_NAME.replace("^", " ")
        extra.ROIDescription = f"drawn for {c.patient_id}"
        rois.append(extra)
        contour = copy.deepcopy(ds.ROIContourSequence[0])
        contour.ReferencedROINumber = extra.ROINumber
        ds.ROIContourSequence.append(contour)
        if "RTROIObservationsSequence" in ds:
            obs = copy.deepcopy(ds.RTROIObservationsSequence[0])
            obs.ObservationNumber = extra.ROINumber
            obs.ReferencedROINumber = extra.ROINumber
            obs.ROIObservationLabel = HARD_NAME
            ds.RTROIObservationsSequence.append(obs)
