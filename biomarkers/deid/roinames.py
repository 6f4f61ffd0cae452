"""Which ROI / segment names may appear in outputs as written (issue 15): the privacy rule, one place.

ROI names are free text and hospitals name structures after patients. :func:`name_allowed` says
whether an unconfigured name may be shown; any other is shown as its keyed reference
(``Pseudonymizer.reference("roi", name)``). Used by the ingest's mask naming
(:mod:`biomarkers.dicom.roi`) and by the export's Clean Descriptors (:mod:`biomarkers.deid.export`).
"""

from __future__ import annotations

import re
from typing import Sequence

#: Words of structure names that say nothing about a person (TG-263-style targets, organs, sides,
#: modalities): a name made only of these (and numbers of up to 3 digits) may appear in outputs as
#: itself when ``masks.allow_roi_names`` is not configured; any other name becomes a keyed reference.
STANDARD_ROI_WORDS: frozenset[str] = frozenset(
    """gtv ctv ptv itv btv htv igtv gtvp gtvn ctvp ctvn ptvp ptvn mass tumor tumour lesion primary node nodes ln
    met mets metastasis boost target roi mask seg contour total whole external body skin brain brainstem
    spinal cord spinalcord liver lung lungs heart kidney kidneys spleen bladder rectum prostate bone bones
    muscle fat breast chest thorax abdomen pelvis head neck parotid esophagus oesophagus stomach bowel colon
    pancreas adrenal thyroid eye eyes lens cochlea femur ribs aorta vessel vessels l r lt rt left right
    sup inf ant post dist prox a b c d ct cect mr mri t1 t2 t1c t1w t2w flair dwi adc pet pt petct suv
    init initial final pre post edited auto manual ref reference sphere box hot cold background bg""".split()
)
_REFERENCE = re.compile(r"^roi-[A-Z2-7]{8}$")
_SEP = re.compile(r"[\s_\-.]+")


def standard_words_only(name: str) -> bool:
    """True when ``name`` is made only of :data:`STANDARD_ROI_WORDS` and short numbers (``GTV_Mass_CT``, ``PTV 2``)."""
    words = [w for w in _SEP.split(str(name).strip().casefold()) if w]
    return bool(words) and all(w in STANDARD_ROI_WORDS or (w.isdigit() and len(w) <= 3) for w in words)


def name_allowed(name: str, allow: Sequence[str] | None) -> bool:
    """May an unconfigured ROI name appear in outputs as itself?

    ``allow`` None (``masks.allow_roi_names`` not set): only names made of standard words
    (:func:`standard_words_only`); a list: names that fully match one of its regular expressions
    (case-insensitive, on the name as written, trimmed; ``[]`` allows none). A keyed reference
    (``roi-XXXXXXXX``, e.g. in a de-identified export) is always allowed: it is already keyed.
    """
    n = str(name).strip()
    if _REFERENCE.match(n):
        return True
    if allow is None:
        return standard_words_only(n)
    return any(re.fullmatch(p, n, flags=re.IGNORECASE) for p in allow)
