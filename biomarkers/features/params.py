"""pyradiomics parameter files: loading, validation, hashing, per-modality selection.

Parameter files are pyradiomics' own YAML format (``setting``, ``imageType``,
``featureClass``, ``voxelSetting``), kept in ``configs/radiomics/``. One extra
top-level section is understood by biomarkers and never handed to pyradiomics:

``ibsi:``
    settings of the IBSI image-processing mode (owned by :mod:`biomarkers.features.ibsi`).
    When present, the item function also calls
    ``biomarkers.features.ibsi.extract_ibsi(image, mask, params)``.

Several files can be used in one run, one per modality::

    biomarkers extract DATASET --params CT=configs/radiomics/ct.yaml --params PT=configs/radiomics/pet.yaml

A file given without ``MODALITY=`` applies to every modality that has no file of its own.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..errors import ConfigError
from ..io import sha256_file, sha256_json

#: Top-level keys pyradiomics accepts (anything else is rejected with the file name).
PYRADIOMICS_KEYS = ("setting", "imageType", "featureClass", "voxelSetting")
#: Keys biomarkers adds and strips before pyradiomics sees the parameters (``volumes``: which
#: volumes of a 4-D image are extracted, :func:`volume_selection`).
EXTRA_KEYS = ("ibsi", "volumes")

#: Modality spellings accepted on the command line -> manifest modality (DICOM Modality).
MODALITY_ALIASES = {"PET": "PT", "PT": "PT", "CT": "CT", "MR": "MR", "MRI": "MR", "MR_T1": "MR", "MR_T2": "MR"}

DEFAULT = "*"  # modality key of a file given without MODALITY=


def normalise_modality(name: str) -> str:
    up = str(name).strip().upper()
    return MODALITY_ALIASES.get(up, up)


@dataclass(frozen=True)
class ParamSet:
    """One parameter file, loaded and validated.

    Attributes:
        name: file stem (``ct`` for ``ct.yaml``), used in report case names and provenance.
        path: the file.
        params: the whole parsed file (including an ``ibsi`` section if any).
        param_hash: SHA-256 of the parsed parameters (canonical JSON): comments and key order
            do not change it; any value that changes features does.
        file_hash: SHA-256 of the file's bytes (provenance).
    """

    name: str
    path: Path
    params: dict
    param_hash: str
    file_hash: str
    modality: str = DEFAULT

    @property
    def ibsi(self) -> dict | None:
        section = self.params.get("ibsi")
        return dict(section) if isinstance(section, Mapping) else (None if section is None else {})

    @property
    def settings(self) -> dict:
        return dict(self.params.get("setting") or {})

    @property
    def volumes(self) -> str | list[int]:
        """``first`` (default), ``all`` or a list of 0-based volume indices (validated at load)."""
        return volume_selection(self.params.get("volumes"), str(self.path))


def volume_selection(value: Any, source: str) -> str | list[int]:
    """The ``volumes:`` key of a parameter file: ``first`` (default: the first volume of a 4-D
    image), ``all``, or a list of 0-based volume indices. Raises ConfigError naming ``source``."""
    if value is None or value == "first":
        return "first"
    if value == "all":
        return "all"
    if (isinstance(value, list) and value and len(set(value)) == len(value)
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)):
        return list(value)
    raise ConfigError(f"{source}: volumes: must be 'first', 'all' or a list of distinct 0-based volume indices "
                      f"(e.g. [0, 2]), got {value!r}")


def strip_extra(params: Mapping[str, Any]) -> dict:
    """Parameters without biomarkers' own top-level sections (what pyradiomics accepts)."""
    return {k: copy.deepcopy(v) for k, v in params.items() if k not in EXTRA_KEYS}


#: pyradiomics settings that the IBSI mode replaces by its own processing.
IBSI_REPLACED_SETTINGS = ("resampledPixelSpacing", "interpolator", "resegmentRange", "resegmentMode",
                          "resegmentShape", "preCrop", "padDistance", "label")


def ibsi_prepared_pyradiomics_params(pyr: dict) -> dict:
    """pyradiomics parameters for data already prepared by the IBSI mode.

    Resampling, resegmentation and label selection were done by
    :func:`biomarkers.features.ibsi.prepare_sitk` (the mask it returns is 0/1), so the
    corresponding pyradiomics settings are removed. Discretisation stays pyradiomics' own:
    with ``binWidth`` its bins start at ``floor(min/binWidth)*binWidth``, which equals IBSI's
    "bins start at the resegmentation lower bound" when that bound is a multiple of the width
    (as in the IBSI configurations); the IBSI-coded rows always come from the IBSI module.
    """
    out = dict(pyr)
    out["setting"] = {k: v for k, v in dict(pyr.get("setting") or {}).items() if k not in IBSI_REPLACED_SETTINGS}
    return out


_PROBLEM = re.compile(r"- (?P<msg>.+?)\.? Path: '(?P<path>/[^']*)'")


def schema_problems(exc: Exception, params: Mapping[str, Any]) -> list[str]:
    """pyradiomics' refusal of a parameter file as ``key.path: what is wrong`` lines (one per problem; no
    pykwalify internals): unknown keys get the closest allowed names."""
    import difflib

    text = str(exc)
    found = list(_PROBLEM.finditer(text))
    if not found:  # pyradiomics' own checks (feature class, image type, interpolator): already in words
        return [f"invalid pyradiomics parameters: {' '.join(text.split())}"]
    out = []
    for m in found:
        msg, key = m["msg"], ".".join(p for p in m["path"].split("/") if p)
        unknown = re.match(r"Key '(.+)' was not defined", msg)
        if unknown:
            section = params.get(key) if key else params
            known = _schema_keys(key)
            close = difflib.get_close_matches(unknown[1], known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else (f"; allowed: {', '.join(known)}" if known else "")
            out.append(f"{key + '.' if key else ''}{unknown[1]}: unknown pyradiomics key{hint}"
                       if section is not None else f"{key}: {msg}")
            continue
        typed = re.match(r"Value '(.*)' is not of type '(\w+)'", msg)
        out.append(f"{key}: {typed[1]!r} is not of type {typed[2]}" if typed else f"{key or '<top level>'}: {msg}")
    return out


def _schema_keys(section: str) -> list[str]:
    """The keys pyradiomics' parameter schema allows in ``section`` (``setting``; '' for the top level)."""
    import radiomics
    import yaml

    schema = yaml.safe_load((Path(radiomics.__file__).parent / "schemas" / "paramSchema.yaml").read_text(encoding="utf-8"))
    node = schema
    for part in [p for p in section.split(".") if p]:
        node = (node.get("mapping") or {}).get(part) or (node.get("mapping") or {}).get("regex;(.+)") or {}
    return sorted(k for k in (node.get("mapping") or {}) if not k.startswith("regex;"))


def validate_params(params: Mapping[str, Any], source: str) -> None:
    """Check a parameter dict with pyradiomics' own schema; raise ConfigError naming ``source``."""
    if not isinstance(params, Mapping):
        raise ConfigError(f"{source}: a pyradiomics parameter file must be a mapping, got {type(params).__name__}")
    unknown = [k for k in params if k not in PYRADIOMICS_KEYS + EXTRA_KEYS]
    if unknown:
        raise ConfigError(
            f"{source}: unknown top-level key(s) {unknown}; allowed: {list(PYRADIOMICS_KEYS + EXTRA_KEYS)}"
        )
    import logging

    from radiomics import featureextractor

    logging.getLogger("radiomics").setLevel(logging.ERROR)
    logging.getLogger("pykwalify").setLevel(logging.CRITICAL)  # its own report of what we report below
    try:
        featureextractor.RadiomicsFeatureExtractor(strip_extra(params))
    except Exception as exc:  # pykwalify SchemaError, ValueError, ...
        raise ConfigError("\n".join(f"{source}: {p}" for p in schema_problems(exc, params))) from None
    volume_selection(params.get("volumes"), source)
    if isinstance(params.get("ibsi"), Mapping) and params["ibsi"].get("filters"):
        from .ibsi import settings_from_params

        try:  # the ibsi: section with its IBSI 2 filters, validated once here (not per item)
            settings_from_params(dict(params))
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None


def load_params(path: str | Path, modality: str = DEFAULT) -> ParamSet:
    """Read, validate and hash one pyradiomics parameter file."""
    from ..config import read_yaml  # pydantic: not needed in worker processes

    path = Path(path)
    data = read_yaml(path)
    if data is None:
        data = {}
    validate_params(data, str(path))
    return ParamSet(
        name=path.name.split(".")[0],
        path=path,
        params=data,
        param_hash=sha256_json(data),
        file_hash=sha256_file(path),
        modality=modality,
    )


ParamsSpec = str | Path | Sequence[str | Path] | Mapping[str, str | Path]


@dataclass
class ParamsByModality:
    """Which parameter file applies to which modality."""

    by_modality: dict[str, ParamSet] = field(default_factory=dict)

    def for_modality(self, modality: str) -> ParamSet | None:
        m = normalise_modality(modality)
        return self.by_modality.get(m) or self.by_modality.get(DEFAULT)

    def all(self) -> list[ParamSet]:
        return list(self.by_modality.values())

    def describe(self) -> str:
        return ", ".join(f"{'any' if m == DEFAULT else m}={p.path}" for m, p in self.by_modality.items())


def parse_params(spec: ParamsSpec) -> ParamsByModality:
    """Turn ``--params`` values into a modality -> ParamSet table.

    Accepts a path, a ``MODALITY=path`` string, a list of those, or a mapping
    ``{modality: path}`` (``"*"`` or ``"default"`` for every other modality).
    """
    entries: list[tuple[str, Path]] = []
    if isinstance(spec, Mapping):
        for k, v in spec.items():
            key = DEFAULT if str(k).lower() in ("*", "default", "") else normalise_modality(k)
            entries.append((key, Path(v)))
    else:
        items = [spec] if isinstance(spec, (str, Path)) else list(spec)
        if not items:
            raise ConfigError("no parameter file given: use --params PARAMS.yaml or --params CT=ct.yaml")
        for it in items:
            s = str(it)
            if "=" in s and not Path(s).exists():
                mod, p = s.split("=", 1)
                entries.append((normalise_modality(mod), Path(p)))
            else:
                entries.append((DEFAULT, Path(s)))
    out: dict[str, ParamSet] = {}
    for mod, p in entries:
        if mod in out:
            what = "every modality" if mod == DEFAULT else f"modality {mod}"
            raise ConfigError(f"{p}: a parameter file for {what} was already given ({out[mod].path}); give one per modality")
        out[mod] = load_params(p, mod)
    return ParamsByModality(out)
