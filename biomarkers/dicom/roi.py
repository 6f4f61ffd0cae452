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

from ..deid.roinames import STANDARD_ROI_WORDS, name_allowed, standard_words_only  # noqa: F401 - roi API

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

_SEP = re.compile(r"[\s_\-.]+")
_SAFE = re.compile(r"[^A-Za-z0-9_\-]+")


def normalise_name(name: str) -> str:
    """Case-folded name with separator runs collapsed to ``_`` (``"GTV Mass-CT"`` -> ``gtv_mass_ct``)."""
    return _SEP.sub("_", str(name).strip().casefold()).strip("_")


def safe_name(name: str) -> str:
    """A file-name-safe version of an ROI name (letters, digits, ``_`` and ``-`` only)."""
    s = _SAFE.sub("_", str(name).strip()).strip("_")
    return s or "roi"


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
