"""The one normaliser of identifying values: what the sidecar filter and ``biomarkers scan`` compare.

Hospital systems write the same value many ways: ``MÜLLER-SCHÖN^ERIKA`` (ISO_IR 192),
``MULLERSCHON`` (an ASCII-only system), ``Mueller-Schoen`` (German transliteration), ``15.08.2019``
for ``20190815``. :func:`fold_key` maps all of them to one key, and a value "occurs" in a text when
its key occurs in the text's key:

* Unicode folded to ASCII (NFKD, combining marks dropped; ``ß`` -> ``ss``, ``æ`` -> ``ae``,
  ``ø`` -> ``o``, ``đ`` -> ``d``, ``ł`` -> ``l``), then the German transliterations ``ae oe ue``
  reduced to ``a o u`` -- so ``ü``, ``u`` and ``ue`` meet;
* case folded; whitespace and separators (anything not a letter or digit) removed.

Dates (:func:`date_keys`) are compared as their digit strings (``YYYYMMDD``, ``DDMMYYYY``,
``MMDDYYYY``) against the text's digits with separators removed, so ``2019-08-15``, ``15.08.2019``,
``15/08/2019`` and ``20190815`` all match. Person names are matched by component (DICOM PN
``family^given^middle``, :func:`name_components`), institutions by their distinctive words
(:func:`institution_words`). Keys shorter than :data:`MIN_KEY` are not matched on their own.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Iterable

#: Shortest key matched on its own (shorter ones match too many innocent texts).
MIN_KEY = 4

_SPECIAL = str.maketrans({"ß": "ss", "ẞ": "ss", "æ": "ae", "Æ": "ae", "ø": "o", "Ø": "o", "đ": "d", "Đ": "d",
                          "ł": "l", "Ł": "l", "œ": "oe", "Œ": "oe", "þ": "th", "Þ": "th", "ı": "i"})
_NOT_ALNUM = re.compile(r"[^a-z0-9]+")
_TRANSLIT = re.compile(r"(?<=[aou])e")

#: Words of institution names that do not identify one (matched on their own they would hit everything).
INSTITUTION_STOPWORDS = frozenset(
    """hospital hospitals klinikum klinik kliniken clinic clinics clinique clinica university universitat
    universitaet universite universidad universita univ medical medicine medizin medizinische center centre
    zentrum centro institute institut instituto department abteilung radiology radiologie imaging the and
    und der die das des fur fuer for von van of st saint sankt general allgemeines city stadt national
    regional county district health care services service group gmbh inc ltd foundation stiftung""".split()
)


def fold_text(text: object) -> str:
    """Unicode folded to lower-case ASCII, separators kept (``"Müller-Schön"`` -> ``"muller-schon"``)."""
    s = unicodedata.normalize("NFKD", str(text).translate(_SPECIAL))
    return "".join(c for c in s if not unicodedata.combining(c)).encode("ascii", "ignore").decode().lower()


def fold_key(text: object) -> str:
    """The matching key of a text: folded to ASCII, ``ae/oe/ue`` -> ``a/o/u``, letters and digits only.

    ``MÜLLER-SCHÖN``, ``Mueller Schoen`` and ``mullerschon`` all give ``mullerschon``.
    """
    return _TRANSLIT.sub("", _NOT_ALNUM.sub("", fold_text(text)))


def digits_key(text: object) -> str:
    """The digits of a text (separators dropped): ``15.08.2019`` -> ``15082019``."""
    return re.sub(r"\D+", "", str(text))


def date_keys(value: object) -> set[str]:
    """Digit strings of a date in the usual written forms (``YYYYMMDD``, ``DDMMYYYY``, ``MMDDYYYY``);
    empty when ``value`` is not a date."""
    from .dates import parse_date

    d = parse_date(str(value).strip()) if not hasattr(value, "year") else value
    if d is None:
        return set()
    return {d.strftime("%Y%m%d"), d.strftime("%d%m%Y"), d.strftime("%m%d%Y")}


def name_components(value: object) -> list[str]:
    """Components of a person name: DICOM PN ``family^given^middle^prefix^suffix`` (each ``=`` group:
    alphabetic, ideographic, phonetic), ``Family, Given`` or ``Given Family``; hyphenated parts too."""
    v = str(value).strip()
    groups = v.split("=") if "=" in v else [v]
    parts: list[str] = []
    for g in groups:
        if "^" in g:
            parts += g.split("^")
        elif "," in g:
            last, _, first = g.partition(",")
            parts += [last, *first.split()]
        else:
            parts += g.split()
    out = [p.strip() for p in parts if p.strip()]
    out += [h for p in out if "-" in p for h in p.split("-") if h.strip()]
    return out


def institution_words(name: object) -> list[str]:
    """The distinctive words of an institution name (``Klinikum Musterstadt-Süd`` -> ``Musterstadt``,
    ``Sud``...): words of at least :data:`MIN_KEY` letters that are not :data:`INSTITUTION_STOPWORDS`."""
    words = re.split(r"[^0-9A-Za-z]+", fold_text(name))
    return [w for w in words if len(w) >= MIN_KEY and w not in INSTITUTION_STOPWORDS]


class Matcher:
    """Known identifying values, normalised once; :meth:`find` says whether a text contains one.

    Args:
        values: ``(label, value, kind)`` with kind ``name`` (a person: the whole name and each
            component of >= :data:`MIN_KEY` characters), ``institution`` (the name and its distinctive
            words), ``date`` (its digit forms), ``id``/``text`` (the value's key).
    """

    def __init__(self, values: Iterable[tuple[str, object, str]] = ()):
        self.keys: list[tuple[str, str]] = []
        self.dates: list[tuple[str, str]] = []
        for label, value, kind in values:
            self.add(label, value, kind)

    def add(self, label: str, value: object, kind: str = "text") -> None:
        if value is None or str(value).strip() == "":
            return
        if kind == "date":
            self.dates += [(label, k) for k in date_keys(value)]
            return
        keys = {fold_key(value)}
        if kind == "name":
            keys |= {fold_key(p) for p in name_components(value)}
        elif kind == "institution":
            keys |= {fold_key(w) for w in institution_words(value)}
        self.keys += [(label, k) for k in keys if len(k) >= MIN_KEY]

    def __bool__(self) -> bool:
        return bool(self.keys or self.dates)

    def copy(self) -> "Matcher":
        """An independent matcher with the same keys (to extend without normalising them again)."""
        m = Matcher()
        m.keys, m.dates = list(self.keys), list(self.dates)
        return m

    def find(self, text: object) -> str | None:
        """Label of the first known value the text contains (normalised), else None."""
        key = fold_key(text)
        for label, k in self.keys:
            if k in key:
                return label
        if self.dates:
            digits = digits_key(text)
            for label, k in self.dates:
                if k in digits:
                    return label
        return None
