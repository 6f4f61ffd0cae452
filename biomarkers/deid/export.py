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

#: DICOM PS3.15 Table E.1-1 (basic profile column) as data: see the file's header for its source.
TABLE_E1_1 = Path(__file__).with_name("data") / "ps3.15_table_e1-1.csv"

#: CID 7050 De-identification Method codes (DCM) of the profile and the options this export applies.
CID_7050 = {
    "113100": "Basic Application Confidentiality Profile",
    "113101": "Clean Pixel Data Option",
    "113104": "Clean Structured Content Option",
    "113105": "Clean Descriptors Option",
    "113107": "Retain Longitudinal Temporal Information Modified Dates Option",
    "113108": "Retain Patient Characteristics Option",
}
METHOD_CODES = [(c, CID_7050[c]) for c in ("113100", "113104", "113105", "113107")]
CHARACTERISTICS_CODE = ("113108", CID_7050["113108"])
PIXEL_CODE = ("113101", CID_7050["113101"])

#: Descriptors that name structures (Clean Descriptors, 113105): kept as written when allowed
#: (standard words or ``allow_roi_names``, see :func:`biomarkers.dicom.roi.name_allowed`), else their keyed
#: reference ``roi-XXXXXXXX`` -- the same reference ingest writes, so a re-ingested export keeps its masks.
ROI_DESCRIPTORS = frozenset({"ROIName", "SegmentLabel", "ROIObservationLabel"})
#: Coding schemes whose codes are public (kept); any other scheme (``99...``, ``L``, private) is local:
#: its code becomes a keyed reference and its meaning ``local code`` (Clean Structured Content).
STANDARD_SCHEMES = frozenset({"DCM", "SCT", "SRT", "SNM3", "LN", "UCUM", "FMA", "RADLEX", "NCIT", "NCIt", "UMLS",
                              "MDC", "I10", "ICD10", "I9C", "HL7", "RXNORM", "UBERON", "NEU", "IBSI", "MA", "DC"})
_CODE_ATTRS = ("CodeValue", "LongCodeValue", "URNCodeValue")


def profile_actions() -> dict[str, str]:
    """Keyword -> basic-profile action of Table E.1-1 (``D``, ``Z``, ``X``, ``U``, ``X/Z``, ``X/Z/U*``...)."""
    import csv

    global _ACTIONS
    if _ACTIONS is None:
        with open(TABLE_E1_1, encoding="utf-8", newline="") as fh:
            rows = csv.DictReader(line for line in fh if not line.startswith("#"))
            _ACTIONS = {r["keyword"]: r["action"] for r in rows if r["keyword"]}
    return _ACTIONS


_ACTIONS: dict[str, str] | None = None


class BlankRule(Settings):
    """One known screen layout to blank (as RSNA CTP's DicomPixelAnonymizer): rectangles ``[x, y, width,
    height]`` (pixels, column/row from the top-left corner) of images of this manufacturer/model/size."""

    manufacturer: str  # regex, full match, case-insensitive
    model: str = ".*"  # regex on ManufacturerModelName
    rows: int
    columns: int
    rectangles: list[list[int]]


class ExportSettings(Settings):
    """Options of ``biomarkers deid-export`` (config section ``export``)."""

    retain_patient_characteristics: bool = False  # keep sex, weight, size and age (capped at max_age): option 113108
    skip_burned_in: bool = True  # skip burned-in text / screen captures (dicom.refusals) unless a blank rule applies
    #: unconfigured ROI/segment names allowed as written (regexes; None: standard structure words only)
    allow_roi_names: list[str] | None = None
    #: the site's own identifying words (institution, city, in-house tool names): any kept text containing one,
    #: normalised (biomarkers.deid.normalise), is removed -- e.g. an RTSTRUCT Manufacturer naming the hospital
    site_identifiers: list[str] = []
    blank: list[BlankRule] = []  # known burned-in layouts to blank instead of skipping (option 113101)


def _uid_mapper(deid: Deidentifier) -> Callable[[str], str]:
    def f(v: str) -> str:
        v = str(v).strip()
        if not v or v.startswith(WELL_KNOWN_UID_PREFIX):
            return v
        return deid.uid(v)

    return f


def _dummy(vr: str):
    return {"DA": "19000101", "TM": "000000", "DT": "19000101", "UI": "2.25.0", "PN": "REMOVED", "AS": "000Y",
            "DS": "0", "IS": "0", "CS": "REMOVED"}.get(vr, "REMOVED")


def site_matcher(ds, settings: "ExportSettings", extra=()):
    """The identifying values of a dataset (and of the site) as a :class:`~biomarkers.deid.normalise.Matcher`."""
    from .normalise import Matcher
    from .whitelist import identifying_strings

    m = Matcher()
    for v in identifying_strings(ds):
        m.add("dataset", v, "text")
    for kw in ("PatientBirthDate", "StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate"):
        m.add("date", ds.get(kw, None), "date")
    for v in (*settings.site_identifiers, *extra):
        m.add("site", v, "institution")
    return m


def deidentify_dataset(ds, deid: Deidentifier, settings: ExportSettings | None = None, *, known=(), blanked=False):
    """De-identify a pydicom Dataset in place (and its file meta) and return it.

    Every attribute of PS3.15 Table E.1-1 gets its action (:func:`profile_actions`; a choice ``X/Z``:
    removed; ``Z/D``: emptied), with these options (declared in DeidentificationMethodCodeSequence,
    appended to the source's own history): Retain Longitudinal Temporal Information with Modified Dates
    (dates that the profile keeps, empties or replaces are shifted by the patient's offset; date-times
    keep the shifted date only; times are emptied/removed as the table says), Clean Descriptors (ROI and
    segment names keyed unless allowed, other descriptors removed), Clean Structured Content (codes of
    local schemes keyed, meanings naming the site or patient replaced). Attributes outside the table
    follow the whitelist of this module (text kept only in :data:`TEXT_KEEP` and only without the
    dataset's or the site's identifying values). ``known``: more identifying values (other files of
    the same export, e.g. the institution of the images for their RTSTRUCT).

    Raises:
        ValueError: when the dataset has no PatientID (no pseudonym can be derived) or
            a date attribute does not hold a DICOM date.
    """
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    from ..dicom.roi import name_allowed

    settings = settings or ExportSettings()
    pid = str(ds.get("PatientID", "") or "").strip()
    if not pid:
        raise ValueError("no PatientID: cannot derive a pseudonym")
    pseudonym = deid.patient_id(pid)
    map_uid = _uid_mapper(deid)
    keep_chars = settings.retain_patient_characteristics
    actions = profile_actions()
    matcher = site_matcher(ds, settings, known)
    # the persons the profile removes must not survive elsewhere: every person name anywhere in the
    # dataset (any PN: reviewers, operators, physicians, in sequences too) is matched in kept text
    def collect(d, e) -> None:
        if e.VR == "PN" and e.value:
            for v in (e.value if e.VM > 1 else [e.value]):
                matcher.add("person", str(v), "name")

    ds.walk(collect)
    roi_ref = deid.pseudonymizer.referencer("roi")
    code_ref = deid.pseudonymizer.referencer("code")
    history = [it for it in ds.get("DeidentificationMethodCodeSequence", [])]

    def safe_text(v) -> bool:
        return not matcher.find(v)

    def date(v: str, kw: str, vr: str) -> str:
        try:
            out = deid.dicom_date(str(v)[:8] if vr == "DT" else str(v), pid)
        except ValueError:  # the message names the attribute, never the value
            raise ValueError(f"{kw}: not a DICOM date") from None
        return out[:8] if vr == "DT" else out

    def clean_code(item) -> None:
        scheme = str(item.get("CodingSchemeDesignator", "") or "").strip()
        value = next((str(item.get(a)) for a in _CODE_ATTRS if item.get(a)), "")
        if not value:
            return
        if scheme in STANDARD_SCHEMES:
            meaning = str(item.get("CodeMeaning", "") or "")
            if meaning and not safe_text(meaning):
                item.CodeMeaning = f"{scheme} {value}"[:64]
            return
        for a in _CODE_ATTRS:
            if a in item:
                delattr(item, a)
        item.CodeValue = code_ref(f"{scheme}\x00{value}")
        item.CodingSchemeDesignator = "99BIOMARKERS"
        item.CodeMeaning = "local code"
        if "CodingSchemeVersion" in item:
            del item.CodingSchemeVersion

    def clean(d) -> None:
        if any(a in d for a in _CODE_ATTRS) and "CodingSchemeDesignator" in d:
            clean_code(d)
        for elem in list(d):
            tag, vr, kw = elem.tag, elem.VR, elem.keyword
            if tag.is_private or (tag.group & 0xFF00) in (0x5000, 0x6000) or tag.group == 0xFFFA:
                del d[tag]  # private tags; curves and overlays (may carry burned-in text); signatures
                continue
            if tag.element == 0 or kw in ("DeidentificationMethod", "DeidentificationMethodCodeSequence"):
                if tag.element == 0:
                    del d[tag]  # group lengths: recomputed
                continue
            if kw in ("CodeValue", "CodingSchemeDesignator", "CodeMeaning", "LongCodeValue", "URNCodeValue",
                      "CodingSchemeVersion", "ContextIdentifier", "MappingResource"):
                continue  # handled by clean_code
            action = actions.get(kw)
            if vr == "SQ":
                if kw in REMOVE_SEQUENCES or not kw or (action is not None and action.startswith("X")
                                                         and not action.endswith("U*")):
                    del d[tag]
                    continue
                if action == "Z":
                    elem.value = Sequence()
                    continue
                for item in elem.value:  # D (e.g. ContentSequence) and U*: cleaned inside (113104)
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
            if kw in ("PatientName", "PatientID"):
                elem.value = pseudonym
            elif kw in EMPTY:  # birth date, accession number...: emptied, never shifted
                elem.value = ""
            elif vr == "UI":
                if action is not None and action.startswith("X"):
                    del d[tag]
                elif elem.VM > 1:
                    elem.value = [map_uid(v) for v in elem.value]
                elif elem.value:
                    elem.value = map_uid(elem.value)
            elif vr in ("DA", "DT"):
                if action == "X" or (action is None and vr == "DT"):
                    del d[tag]
                elif elem.VM > 1:
                    elem.value = [date(v, kw or str(tag), vr) for v in elem.value]
                elif elem.value:
                    elem.value = date(elem.value, kw or str(tag), vr)
            elif vr == "TM":  # times of day: as the table says (never kept verbatim)
                if action is None or action.startswith("X"):
                    del d[tag]
                else:
                    elem.value = "" if "Z" in action else "000000"
            elif kw in ROI_DESCRIPTORS:  # Clean Descriptors: allowed names as written, others keyed
                v = str(elem.value or "")
                if v and not (name_allowed(v, settings.allow_roi_names) and safe_text(v)):
                    elem.value = roi_ref(v)
            elif kw in DUMMY:
                if elem.value not in (None, ""):
                    elem.value = DUMMY[kw]
            elif action is not None:
                if action.startswith("X"):
                    del d[tag]
                elif action.startswith("Z"):
                    elem.value = Sequence() if vr == "SQ" else ""
                else:  # D
                    elem.value = _dummy(vr)
            elif vr in TEXT_VRS:
                if kw not in TEXT_KEEP or not safe_text(elem.value):
                    del d[tag]
            elif vr == "CS":  # code strings are kept, unless one holds an identifying value
                if kw != "Modality" and elem.value not in (None, "") and not safe_text(elem.value):
                    del d[tag]
            elif vr in BINARY_VRS:
                if kw not in BINARY_KEEP:
                    del d[tag]
            elif not kw:  # unknown public tag: nothing says it is safe
                del d[tag]

    clean(ds)
    ds.PatientIdentityRemoved = "YES"
    ds.LongitudinalTemporalInformationModified = "MODIFIED"
    codes = METHOD_CODES + ([CHARACTERISTICS_CODE] if keep_chars else []) + ([PIXEL_CODE] if blanked else [])
    ds.DeidentificationMethod = "biomarkers PS3.15 E.1 DCM " + " ".join(c for c, _ in codes)  # LO: <= 64 chars
    items = []
    for old in history:  # the source's own history first (its codes cleaned like any code), then ours
        it = Dataset()
        for a in ("CodeValue", "CodingSchemeDesignator", "CodingSchemeVersion", "CodeMeaning"):
            if a in old:
                setattr(it, a, old.get(a))
        if "CodeValue" in it:
            clean_code(it)
            items.append(it)
    have = {(str(it.get("CodingSchemeDesignator")), str(it.get("CodeValue"))) for it in items}
    for value, meaning in codes:
        if ("DCM", value) in have:
            continue
        it = Dataset()
        it.CodeValue, it.CodingSchemeDesignator, it.CodeMeaning = value, "DCM", meaning
        items.append(it)
    ds.DeidentificationMethodCodeSequence = Sequence(items)
    ds.preamble = b"\0" * 128  # the preamble may carry anything (a TIFF header, a site's text)
    if getattr(ds, "file_meta", None) is not None:
        fm = ds.file_meta
        if "MediaStorageSOPInstanceUID" in fm:
            fm.MediaStorageSOPInstanceUID = map_uid(fm.MediaStorageSOPInstanceUID)
        for kw in ("SourceApplicationEntityTitle", "SendingApplicationEntityTitle", "ReceivingApplicationEntityTitle",
                   "SourcePresentationAddress", "SendingPresentationAddress", "ReceivingPresentationAddress",
                   "PrivateInformationCreatorUID", "PrivateInformation"):
            if kw in fm:
                delattr(fm, kw)
        for elem in list(fm):
            if elem.tag.is_private:
                del fm[elem.tag]
        from pydicom.uid import PYDICOM_IMPLEMENTATION_UID

        fm.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        fm.ImplementationVersionName = "BIOMARKERS_DEID"
    return ds


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
    """Set the rule's rectangles of every frame to the image minimum (native pixel data; in place)."""
    import numpy as np

    arr = ds.pixel_array.copy()
    frames = arr if int(ds.get("NumberOfFrames", 1) or 1) > 1 else arr[None]
    low = arr.min()
    for x, y, w, h in rule.rectangles:
        frames[:, y:y + h, x:x + w, ...] = low
    out = frames if arr.ndim == frames.ndim else frames[0]
    ds.PixelData = np.ascontiguousarray(out).tobytes()
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
        InputError: ``src`` is not a folder, or ``out`` lies inside ``src``.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    from ..dicom.refusals import screen_capture_reason
    from ..errors import InputError, PrivacyError
    from ..logs import file_ref

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
    token = {f: deid.pseudonymizer.reference("src", str(f.relative_to(src))) for f in files}

    # pass 1: headers (SOP instances, identifying values of the whole export)
    headers: dict[Path, object] = {}
    by_sop: dict[str, list[Path]] = {}
    known: set[str] = set()
    from .whitelist import identifying_strings

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
        headers[f] = h
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
            deidentify_dataset(ds, deid, settings, known=sorted(known), blanked=rule is not None)
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
