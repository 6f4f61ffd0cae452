"""ROI name selection: map free-text ROI names to canonical names.

Hospitals spell the same structure many ways (``GTV_Mass``, ``GTV_Mass_CT``,
``gtv mass``, ``GTV-Mass``). :func:`match_roi_names` maps the names found in one
segmentation object to the canonical names configured in
:class:`biomarkers.dicom.masks.MaskSettings` (``rois``), and says why a name was
not used (matches nothing / matches several canonical names / several names
claim the same canonical name).

Matching is done on *normalised* names: case-folded, runs of spaces, ``-``,
``_`` and ``.`` collapsed to one ``_``, leading/trailing separators removed, so
``"GTV Mass"``, ``"gtv-mass"`` and ``"GTV__Mass"`` all become ``gtv_mass``.
A name matches canonical ``C`` when its normalised form

* equals the normalised ``C``, or ``C`` followed by a modality suffix
  (``_ct``, ``_mr``, ``_mr_t1``, ``_mr_t2``, ``_pet``, ``_pt``...), or
* equals a configured synonym (normalised the same way), or
* matches a configured glob pattern (``*``, ``?``, ``[...]``; normalised, so
  patterns are case-insensitive), or a regular expression written ``re:<regex>``
  (searched with ``re.fullmatch`` on the normalised name, case-insensitive).
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

#: Suffixes that name the modality a structure was drawn on (``GTV_Mass_CT``).
MODALITY_SUFFIXES: tuple[str, ...] = (
    "ct",
    "cect",
    "mr",
    "mri",
    "mr_t1",
    "mr_t2",
    "t1",
    "t2",
    "flair",
    "pet",
    "pt",
    "pet_ct",
    "petct",
)

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
_SAFE = re.compile(r"[^A-Za-z0-9_\-]+")


def normalise_name(name: str) -> str:
    """Case-folded name with separator runs collapsed to ``_`` (``"GTV Mass-CT"`` -> ``gtv_mass_ct``)."""
    return _SEP.sub("_", str(name).strip().casefold()).strip("_")


def safe_name(name: str) -> str:
    """A file-name-safe version of an ROI name (letters, digits, ``_`` and ``-`` only)."""
    s = _SAFE.sub("_", str(name).strip()).strip("_")
    return s or "roi"


def standard_words_only(name: str) -> bool:
    """True when ``name`` is made only of :data:`STANDARD_ROI_WORDS` and short numbers (``GTV_Mass_CT``, ``PTV 2``)."""
    words = [w for w in normalise_name(name).split("_") if w]
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


def _matches(norm: str, canonical: str, patterns: Sequence[str]) -> bool:
    c = normalise_name(canonical)
    if norm == c:
        return True
    if norm.startswith(c + "_") and norm[len(c) + 1 :] in MODALITY_SUFFIXES:
        return True
    for p in patterns:
        if p.startswith("re:"):
            if re.fullmatch(p[3:], norm, flags=re.IGNORECASE):
                return True
        elif any(ch in p for ch in "*?["):
            if fnmatch.fnmatchcase(norm, _norm_glob(p)):
                return True
        elif norm == normalise_name(p):
            return True
    return False


def _norm_glob(p: str) -> str:
    # normalise the literal parts of a glob, keep the wildcards
    out, buf = [], ""
    for ch in p:
        if ch in "*?[]!":
            if buf:
                out.append(_SEP.sub("_", buf.casefold()))
                buf = ""
            out.append(ch)
        else:
            buf += ch
    if buf:
        out.append(_SEP.sub("_", buf.casefold()))
    return "".join(out)


@dataclass(frozen=True)
class RoiMatch:
    """Decision for one ROI name of a segmentation object."""

    name: str  # the ROI name as found in the object (site side only: never written to an output)
    canonical: str | None  # canonical name, None when not used
    reason: str = ""  # why not used ("" when used); names the ROI by ``display``, never by ``name``
    display: str = ""  # what outputs may show for ``name``: itself when allowed, else its keyed reference


def match_roi_names(names: Sequence[str], rois: Mapping[str, Sequence[str]] | None,
                    allow: Sequence[str] | None = None,
                    reference: Callable[[str], str] | None = None) -> list[RoiMatch]:
    """Map the ROI ``names`` of one object to canonical names.

    Args:
        names: ROI names in the object, in order.
        rois: canonical name -> list of synonyms / glob patterns / ``re:`` regexes.
            Empty or None: every ROI is used under a file-name-safe version of its
            own name (``safe_name``) when :func:`name_allowed`, else under its keyed reference.
        allow: ``masks.allow_roi_names`` (see :func:`name_allowed`).
        reference: the keyed reference of a name (``roi-XXXXXXXX``,
            :meth:`biomarkers.deid.keys.Pseudonymizer.referencer`); None (de-identification off):
            names are shown as they are.

    Returns:
        One :class:`RoiMatch` per name. A name that matches no canonical name, a
        name that matches several, and several names matching the same canonical
        name (all of them) get ``canonical=None`` and a reason. Reasons and ``display``
        name an ROI by its reference unless it is allowed: a name that matches no configured
        ROI may be a patient's name.
    """
    def shown(n: str) -> str:
        return n if reference is None or name_allowed(n, allow) else reference(n)

    if not rois:
        out = [RoiMatch(n, safe_name(shown(n)), display=shown(n)) for n in names]
        seen: dict[str, list[int]] = {}
        for idx, m in enumerate(out):
            seen.setdefault(m.canonical.casefold(), []).append(idx)
        for idxs in seen.values():
            if len(idxs) > 1:
                dup = ", ".join(repr(out[i].display) for i in idxs)
                for i in idxs:
                    out[i] = RoiMatch(names[i], None, f"ambiguous ROI: names {dup} give the same ROI name",
                                      out[i].display)
        return out

    decisions: list[RoiMatch] = []
    for n in names:
        norm = normalise_name(n)
        hits = [c for c, pats in rois.items() if _matches(norm, c, list(pats or []))]
        if not hits:
            decisions.append(
                RoiMatch(n, None, f"ROI {shown(n)!r} matches no configured ROI ({', '.join(rois)})", shown(n))
            )
        elif len(hits) > 1:
            decisions.append(
                RoiMatch(n, None, f"ambiguous ROI: {shown(n)!r} matches several configured ROIs ({', '.join(hits)})",
                         shown(n))
            )
        else:
            shown_n = shown(n)  # a configured ROI's own spelling when allowed, else its canonical name
            decisions.append(RoiMatch(n, hits[0], display=hits[0] if shown_n != n else n))
    by_canonical: dict[str, list[int]] = {}
    for idx, d in enumerate(decisions):
        if d.canonical is not None:
            by_canonical.setdefault(d.canonical, []).append(idx)
    for c, idxs in by_canonical.items():
        if len(idxs) > 1:
            dup = ", ".join(repr(shown(names[i])) for i in idxs)
            for i in idxs:
                decisions[i] = RoiMatch(
                    names[i], None, f"ambiguous ROI: several ROIs ({dup}) match configured ROI {c!r}", shown(names[i])
                )
    return decisions
