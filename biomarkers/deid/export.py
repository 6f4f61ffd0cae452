"""De-identified DICOM copies (DICOM PS3.15 Annex E, Basic Application Level
Confidentiality Profile with the Retain Longitudinal Temporal Information with
Modified Dates option), for sites that must ship DICOM rather than NIfTI.

Written from the standard's table (Table E.1-1), as a whitelist:

* **UIDs** (VR ``UI``) are replaced by :meth:`Deidentifier.uid` (the same function as
  in ingest, so the exported copies carry the UIDs of the manifest and RTSTRUCT/SEG
  references stay consistent); well-known DICOM UIDs (``1.2.840.10008.*``: SOP classes,
  transfer syntaxes, coding schemes) are kept.
* **Dates** (``DA``, ``DT``) are shifted by the patient's offset (or reduced to the year,
  per :class:`DeidSettings.dates`); times of day are kept (option 113107).
* **Patient** name and id become the pseudonym; type-2 identifying attributes
  (birth date, sex, accession number, study id, referring physician...) are emptied (Z).
* **Text** (``AE AS LO LT PN SH ST UC UR UT``) is kept only for attributes listed in
  :data:`TEXT_KEEP` (codes and labels the images need, e.g. Manufacturer, ROIName);
  every other text attribute is removed (X) -- descriptions, protocol names, comments,
  institution, station, operators, serial numbers, in sequences too.
* **Private tags** are removed; **sequences** are recursed; the sequences of Table E.1-1
  that hold identity (ContributingEquipmentSequence, OtherPatientIDsSequence,
  RequestAttributesSequence...) are removed whole.
* Other binary data (``OB OW OF OD OL OV UN``) is removed except the pixel data and LUTs.
* ``PatientIdentityRemoved=YES``, ``LongitudinalTemporalInformationModified=MODIFIED``,
  ``DeidentificationMethod`` and ``DeidentificationMethodCodeSequence`` (DCM 113100,
  113107, and 113108 with ``retain_patient_characteristics``) are set.

Pixel data is not cleaned (no Clean Pixel Data option): files flagged
``BurnedInAnnotation=YES`` are skipped with a reason.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Callable

from ..config import Settings
from ..io import atomic_path
from ..report import RunReport
from .deidentifier import Deidentifier

log = logging.getLogger(__name__)

#: Text attributes kept (everything else with a text VR is removed).
TEXT_KEEP: frozenset[str] = frozenset(
    {
        # equipment codes (not serial numbers, not station/institution)
        "Manufacturer", "ManufacturerModelName", "ConvolutionKernel", "FilterType", "ReconstructionMethod",
        "Modality", "BodyPartExamined", "ImagedNucleus", "RescaleType", "LossyImageCompressionRatio",
        # PET corrections and tracer
        "AttenuationCorrectionMethod", "ScatterCorrectionMethod", "Radiopharmaceutical", "RadionuclideTotalDose",
        # codes in code sequences
        "CodeValue", "CodingSchemeDesignator", "CodingSchemeVersion", "CodeMeaning", "LongCodeValue", "URNCodeValue",
        # RTSTRUCT / SEG structure needed to rebuild masks
        "ROIName", "SegmentLabel", "SegmentAlgorithmName", "ContentLabel",
        # de-identification attributes written below
        "DeidentificationMethod",
    }
)

#: Emptied (type 2 attributes in Table E.1-1 with action Z or D).
EMPTY: frozenset[str] = frozenset(
    {
        "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID", "ReferringPhysicianName",
        "PositionReferenceIndicator", "ContentCreatorName", "ContentDescription", "ROIInterpreter",
    }
)

#: Replaced by a fixed dummy (type 1 attributes with action D).
DUMMY: dict[str, str] = {"StructureSetLabel": "RTSTRUCT", "ContrastBolusAgent": "CONTRAST"}

#: Removed whole (sequences of Table E.1-1 that hold identity; and the de-identification
#: sequences of the source, rewritten below).
REMOVE_SEQUENCES: frozenset[str] = frozenset(
    {
        "ContributingEquipmentSequence", "OtherPatientIDsSequence", "RequestAttributesSequence",
        "ReferencedPatientSequence", "ReferencedPatientPhotoSequence", "ReferringPhysicianIdentificationSequence",
        "PerformingPhysicianIdentificationSequence", "OperatorIdentificationSequence",
        "PhysiciansOfRecordIdentificationSequence", "PhysiciansReadingStudyIdentificationSequence",
        "OriginalAttributesSequence", "ModifiedAttributesSequence", "DigitalSignaturesSequence",
        "PatientInsurancePlanCodeSequence", "PatientPrimaryLanguageCodeSequence", "InstitutionCodeSequence",
        "ProcedureCodeSequence", "PerformedProtocolCodeSequence", "RequestedProcedureCodeSequence",
        "ReferencedPerformedProcedureStepSequence", "ReferencedStudySequence", "ActualHumanPerformersSequence",
        "HumanPerformerCodeSequence", "DeidentificationMethodCodeSequence", "EncryptedAttributesSequence",
        "AdmittingDiagnosesCodeSequence", "ConsultingPhysicianIdentificationSequence", "IssuerOfPatientIDQualifiersSequence",
        "SourcePatientGroupIdentificationSequence", "GroupOfPatientsIdentificationSequence", "VerifyingObserverSequence",
        "AuthorObserverSequence", "ParticipantSequence", "CustodialOrganizationSequence",
    }
)

#: Patient characteristics (Table E.1-1: X; kept with option 113108, age capped).
PATIENT_CHARACTERISTICS: frozenset[str] = frozenset({"PatientAge", "PatientWeight", "PatientSize", "PatientSex"})

#: Binary attributes kept.
BINARY_KEEP: frozenset[str] = frozenset(
    {
        "PixelData", "FloatPixelData", "DoubleFloatPixelData", "FileMetaInformationVersion", "LUTData",
        "RedPaletteColorLookupTableData", "GreenPaletteColorLookupTableData", "BluePaletteColorLookupTableData",
        "SegmentedRedPaletteColorLookupTableData", "SegmentedGreenPaletteColorLookupTableData",
        "SegmentedBluePaletteColorLookupTableData", "ContourData",
    }
)

TEXT_VRS = frozenset({"AE", "AS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})
BINARY_VRS = frozenset({"OB", "OW", "OF", "OD", "OL", "OV", "UN"})
WELL_KNOWN_UID_PREFIX = "1.2.840.10008."

METHOD_CODES = [
    ("113100", "Basic Application Confidentiality Profile"),
    ("113107", "Retain Longitudinal With Modified Dates Option"),
]
CHARACTERISTICS_CODE = ("113108", "Retain Patient Characteristics Option")


class ExportSettings(Settings):
    """Options of ``biomarkers deid-export`` (config section ``export``)."""

    retain_patient_characteristics: bool = False  # keep sex, weight, size and age (capped at max_age): option 113108
    skip_burned_in: bool = True  # skip files with BurnedInAnnotation=YES (pixel data is not cleaned)


def _uid_mapper(deid: Deidentifier) -> Callable[[str], str]:
    def f(v: str) -> str:
        v = str(v).strip()
        if not v or v.startswith(WELL_KNOWN_UID_PREFIX):
            return v
        return deid.uid(v)

    return f


def deidentify_dataset(ds, deid: Deidentifier, settings: ExportSettings | None = None):
    """De-identify a pydicom Dataset in place (and its file meta) and return it.

    Raises:
        ValueError: when the dataset has no PatientID (no pseudonym can be derived) or
            a date attribute does not hold a DICOM date.
    """
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    settings = settings or ExportSettings()
    pid = str(ds.get("PatientID", "") or "").strip()
    if not pid:
        raise ValueError("no PatientID: cannot derive a pseudonym")
    pseudonym = deid.patient_id(pid)
    map_uid = _uid_mapper(deid)
    keep_chars = settings.retain_patient_characteristics

    def clean(d) -> None:
        for elem in list(d):
            tag, vr, kw = elem.tag, elem.VR, elem.keyword
            if tag.is_private or (tag.group & 0xFF00) in (0x5000, 0x6000):
                del d[tag]  # private tags; curves and overlays (may carry burned-in text)
                continue
            if vr == "SQ":
                if kw in REMOVE_SEQUENCES or not kw:
                    del d[tag]
                    continue
                for item in elem.value:
                    clean(item)
                continue
            if kw in PATIENT_CHARACTERISTICS:
                if not keep_chars:
                    if kw == "PatientSex":
                        elem.value = ""
                    else:
                        del d[tag]
                elif kw == "PatientAge":
                    elem.value = deid.dicom_age(str(elem.value or ""))
                continue
            if kw == "PatientName":
                elem.value = pseudonym
            elif kw == "PatientID":
                elem.value = pseudonym
            elif kw in EMPTY:
                elem.value = ""
            elif kw in DUMMY:
                if elem.value not in (None, ""):
                    elem.value = DUMMY[kw]
            elif vr == "UI":
                if elem.VM > 1:
                    elem.value = [map_uid(v) for v in elem.value]
                elif elem.value:
                    elem.value = map_uid(elem.value)
            elif vr in ("DA", "DT"):
                try:
                    if elem.VM > 1:
                        elem.value = [deid.dicom_date(str(v), pid) for v in elem.value]
                    elif elem.value:
                        elem.value = deid.dicom_date(str(elem.value), pid)
                except ValueError:  # the message names the attribute, never the value
                    raise ValueError(f"{kw or tag}: not a DICOM date") from None
            elif vr in TEXT_VRS:
                if kw not in TEXT_KEEP:
                    del d[tag]
            elif vr in BINARY_VRS:
                if kw not in BINARY_KEEP:
                    del d[tag]
            elif not kw:  # unknown public tag: nothing says it is safe
                del d[tag]

    clean(ds)
    ds.PatientIdentityRemoved = "YES"
    ds.LongitudinalTemporalInformationModified = "MODIFIED"
    codes = METHOD_CODES + ([CHARACTERISTICS_CODE] if keep_chars else [])
    ds.DeidentificationMethod = "biomarkers PS3.15 E.1 DCM " + " ".join(c for c, _ in codes)  # LO: <= 64 chars
    items = []
    for value, meaning in codes:
        it = Dataset()
        it.CodeValue, it.CodingSchemeDesignator, it.CodeMeaning = value, "DCM", meaning
        items.append(it)
    ds.DeidentificationMethodCodeSequence = Sequence(items)
    if getattr(ds, "file_meta", None) is not None:
        fm = ds.file_meta
        if "MediaStorageSOPInstanceUID" in fm:
            fm.MediaStorageSOPInstanceUID = map_uid(fm.MediaStorageSOPInstanceUID)
        for kw in ("SourceApplicationEntityTitle", "SendingApplicationEntityTitle", "ReceivingApplicationEntityTitle",
                   "SourcePresentationAddress", "SendingPresentationAddress", "ReceivingPresentationAddress",
                   "PrivateInformationCreatorUID", "PrivateInformation"):
            if kw in fm:
                delattr(fm, kw)
        from pydicom.uid import PYDICOM_IMPLEMENTATION_UID

        fm.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        fm.ImplementationVersionName = "BIOMARKERS_DEID"
    return ds


def _src_token(rel: str) -> str:
    """A report-safe name for a source file (source paths may contain patient ids)."""
    return "src-" + hashlib.sha256(rel.encode()).hexdigest()[:12]


def export_dicom(
    src: str | Path,
    out: str | Path,
    deidentifier: Deidentifier | None = None,
    settings: ExportSettings | None = None,
) -> RunReport:
    """Write de-identified copies of every DICOM file under ``src`` to ``out``.

    Layout: ``OUT/<patient pseudonym>/<new series UID>/<new SOP instance UID>.dcm`` and
    ``OUT/report.json``. Non-DICOM files are skipped, unreadable ones fail (the report
    names them by a hash of their relative path; the console log shows the path).
    Existing outputs are not rewritten (resumable). De-identification cannot be turned
    off for an export.

    Raises:
        InputError: ``src`` is not a folder, or ``out`` lies inside ``src``.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    from ..errors import InputError, PrivacyError

    src, out = Path(src).resolve(), Path(out).resolve()
    if not src.is_dir():
        raise InputError(f"{src}: not a folder")
    if out == src or src in out.parents:
        raise InputError(f"{out}: the export folder must not lie inside the source folder {src}")
    deid = deidentifier or Deidentifier()
    if not deid.enabled:
        raise PrivacyError("deid-export always de-identifies: it cannot run with de-identification disabled")
    if deid.pseudonymizer.demo:
        from .keys import require_synthetic

        require_synthetic(src)
    settings = settings or ExportSettings()
    report = RunReport("deid-export", extra={"deid": deid.run_info(), "profile": [c for c, _ in METHOD_CODES]})
    files = sorted(p for p in src.rglob("*") if p.is_file())
    for f in files:
        rel = str(f.relative_to(src))
        token = _src_token(rel)
        try:
            ds = pydicom.dcmread(f)
        except InvalidDicomError:
            report.add(token, "skipped", "not a DICOM file")
            continue
        except Exception as err:  # noqa: BLE001 - one bad file never stops the export
            log.warning("%s: cannot read DICOM (%s)", rel, err)
            report.add(token, "failed", f"unreadable DICOM: {type(err).__name__}")
            continue
        if settings.skip_burned_in and str(ds.get("BurnedInAnnotation", "")).upper() == "YES":
            log.warning("%s: skipped, BurnedInAnnotation=YES", rel)
            report.add(token, "skipped", "burned-in annotation: pixel data may show identity")
            continue
        try:
            deidentify_dataset(ds, deid, settings)
            dest = out / str(ds.PatientID) / str(ds.get("SeriesInstanceUID", "no-series")) / f"{ds.SOPInstanceUID}.dcm"
            case = f"{ds.PatientID}/{ds.SOPInstanceUID}"
            if dest.is_file():
                report.add(case, "done", cached=True)
                continue
            with atomic_path(dest) as tmp:
                ds.save_as(tmp, enforce_file_format=True)
            report.add(case, "done", modality=str(ds.get("Modality", "")))
        except Exception as err:  # noqa: BLE001
            log.warning("%s: export failed (%s)", rel, err)
            # ValueErrors raised above name attributes, never values; others are reported by type only
            report.add(token, "failed", f"{err}"[:200] if isinstance(err, ValueError) else type(err).__name__)
    report.write(out / "report.json")
    return report
