"""De-identified DICOM copies (DICOM PS3.15 Annex E): the per-dataset transform.

:func:`deidentify_dataset` applies the Basic Application Level Confidentiality Profile, every
attribute of Table E.1-1 with its action (the table as data: :data:`TABLE_E1_1`), with the options
Retain Longitudinal Temporal Information with Modified Dates (113107), Clean Descriptors (113105),
Clean Structured Content (113104), optionally Retain Patient Characteristics (113108) and, for an
image a :class:`BlankRule` cleaned, Clean Pixel Data (113101); they are declared in
DeidentificationMethodCodeSequence after the source's own history. UIDs use
:meth:`Deidentifier.uid` (the same function as ingest, so exported copies carry the manifest's UIDs
and RTSTRUCT/SEG references stay consistent). Attributes outside the table are whitelisted
(:data:`TEXT_KEEP`), and kept text never holds an identifying value of the file, of the export or
of the site (:func:`site_matcher`, :mod:`biomarkers.deid.normalise`). The file-level driver
(``biomarkers deid-export``: refusals, duplicates, report) is :func:`biomarkers.dicom.export.export_dicom`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

from pydantic import model_validator

from ..config import Settings
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
#: Temporal attributes Retain Longitudinal Temporal Information with Modified Dates (113107) does not
#: retain: the patient's own (PS3.15 Table E.1-1 gives them no entry in the option's column). Every
#: other date, time and date-time of the table is kept *modified*: dates (and the date part of
#: date-times) shifted by the patient's whole-day offset, so times of day (``TM``, the time part of
#: ``DT``) stay as they are -- the intervals SUV decay correction needs (injection to series start)
#: are unchanged. Our CSV holds the basic-profile column only, so this rule is derived from the
#: option's definition (PS3.15 E.3.6) rather than read per row. With ``dates: year`` (no whole-day
#: shift: every date collapses to the year) times are removed as the basic profile says.
NOT_RETAINED_TEMPORAL = frozenset({"PatientBirthDate", "PatientBirthTime"})


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

    @model_validator(mode="after")
    def _check(self) -> "BlankRule":
        """A rule that would blank nothing, or not what it says, is refused: its copies would be
        declared clean (BurnedInAnnotation NO, 113101) with the text still in the pixels."""
        import re

        for field in ("manufacturer", "model"):
            try:
                re.compile(getattr(self, field))
            except re.error as err:
                raise ValueError(f"{field}: not a regular expression ({err})") from None
        if not self.rectangles:
            raise ValueError("rectangles: at least one [x, y, width, height] is needed")
        for i, r in enumerate(self.rectangles):
            if len(r) != 4 or min(r) < 0 or r[2] == 0 or r[3] == 0 or r[0] + r[2] > self.columns \
                    or r[1] + r[3] > self.rows:
                raise ValueError(f"rectangles[{i}] {r}: expected [x, y, width, height] (x, y >= 0; width, "
                                 f"height > 0) inside the {self.columns} x {self.rows} image")
        return self


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


def known_matcher(known=()):
    """More identifying values (e.g. of every file of an export) as a
    :class:`~biomarkers.deid.normalise.Matcher`, normalised once: pass it to :func:`site_matcher`
    (``deidentify_dataset(known=...)``) for each file instead of the values themselves."""
    from .normalise import Matcher

    m = Matcher()
    for v in known:
        m.add("site", v, "institution")
    return m


def site_matcher(ds, settings: "ExportSettings", extra=()):
    """The identifying values of a dataset (and of the site) as a :class:`~biomarkers.deid.normalise.Matcher`.

    ``extra``: more identifying values, or a :func:`known_matcher` of them (copied, not changed)."""
    from .normalise import Matcher
    from .whitelist import identifying_strings

    m = extra.copy() if isinstance(extra, Matcher) else known_matcher(extra)
    for v in identifying_strings(ds):
        m.add("dataset", v, "text")
    for kw in ("PatientBirthDate", "StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate"):
        m.add("date", ds.get(kw, None), "date")
    for v in settings.site_identifiers:
        m.add("site", v, "institution")
    return m


def deidentify_dataset(ds, deid: Deidentifier, settings: ExportSettings | None = None, *, known=(), blanked=False):
    """De-identify a pydicom Dataset in place (and its file meta) and return it.

    Every attribute of PS3.15 Table E.1-1 gets its action (:func:`profile_actions`; a choice ``X/Z``:
    removed; ``Z/D``: emptied), with these options (declared in DeidentificationMethodCodeSequence,
    appended to the source's own history): Retain Longitudinal Temporal Information with Modified Dates
    (dates that the profile keeps, empties or replaces are shifted by the patient's offset; date-times
    keep their time part; times of day are kept, see :data:`NOT_RETAINED_TEMPORAL`), Clean Descriptors (ROI and
    segment names keyed unless allowed, other descriptors removed), Clean Structured Content (codes of
    local schemes keyed, meanings naming the site or patient replaced). Attributes outside the table
    follow the whitelist of this module (text kept only in :data:`TEXT_KEEP` and only without the
    dataset's or the site's identifying values). ``known``: more identifying values (other files of
    the same export, e.g. the institution of the images for their RTSTRUCT), or their
    :func:`known_matcher` (built once for a whole export).

    Raises:
        ValueError: when the dataset has no PatientID (no pseudonym can be derived) or
            a date attribute does not hold a DICOM date.
    """
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    from .roinames import name_allowed

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
    retain_times = deid.settings.dates == "shift"  # 113107 with a whole-day shift: times of day kept

    def safe_text(v) -> bool:
        return not matcher.find(v)

    def date(v: str, kw: str, vr: str) -> str:
        try:
            if vr == "DT" and retain_times:  # date part shifted, time (and UTC offset) kept
                return deid.dicom_date(str(v).strip(), pid)
            out = deid.dicom_date(str(v)[:8] if vr == "DT" else str(v), pid)
        except ValueError:  # the message names the attribute, never the value
            raise ValueError(f"{kw}: not a DICOM date") from None
        return out[:8] if vr == "DT" else out

    def clean_code(item) -> None:
        scheme = str(item.get("CodingSchemeDesignator", "") or "").strip()
        value = next((str(item.get(a)) for a in _CODE_ATTRS if item.get(a)), "")
        if not value:  # an incomplete code: its meaning (free text) has no code to stand for
            for a in ("CodeMeaning", "CodingSchemeVersion"):
                if a in item:
                    delattr(item, a)
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
        # a code item (any code attribute, even without its scheme or value): cleaned as a whole; a
        # missing scheme is a local one (keyed), a missing value drops the meaning
        if any(a in d for a in (*_CODE_ATTRS, "CodingSchemeDesignator", "CodeMeaning")):
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
            if kw in (*_CODE_ATTRS, "CodingSchemeDesignator", "CodeMeaning"):
                continue  # handled by clean_code (version, context and mapping: kept text, checked below)
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
                if (kw in NOT_RETAINED_TEMPORAL or (action is None and vr == "DT")
                        or (action == "X" and not retain_times)):
                    del d[tag]
                elif elem.VM > 1:
                    elem.value = [date(v, kw or str(tag), vr) for v in elem.value]
                elif elem.value:
                    elem.value = date(elem.value, kw or str(tag), vr)
            elif vr == "TM":  # times of day: kept under 113107 (whole-day shift), else as the table says
                if retain_times and action is not None and kw not in NOT_RETAINED_TEMPORAL:
                    continue
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
