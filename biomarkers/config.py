"""Typed configuration: YAML files validated by pydantic models.

Every settings model derives from :class:`Settings` (unknown keys are errors).
:func:`load_yaml` turns pydantic's errors into a :class:`ConfigError` that names
the file and the dotted key, e.g.::

    configs/demo.yaml: extract.workers: Input should be a valid integer (got 'two')
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import ConfigError

T = TypeVar("T", bound=BaseModel)


class Settings(BaseModel):
    """Base of every settings object: strict about unknown keys, immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


_TYPE_NAMES = {"str", "int", "float", "bool", "bytes", "Path", "list", "dict", "tuple", "set", "none", "None",
               "literal", "union", "nullable"}


def _model_names() -> set[str]:
    names, todo = set(), [BaseModel]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub.__name__ not in names:
                names.add(sub.__name__)
                todo.append(sub)
    return names


def _user_key(loc: tuple, models: set[str], unknown: bool = False) -> str:
    """The key path in the user's terms: pydantic's union-branch and validator tags
    (``function-after[_check(), ClinicalSchema]``, ``lax-or-strict[...]``, ``ClinicalSchema``, ``str``) dropped.
    ``unknown``: the last part is the key the user wrote (an extra key), kept whatever it is called."""
    body, last = (loc[:-1], [str(loc[-1])]) if unknown and loc else (loc, [])
    parts = [str(p) for p in body if not (isinstance(p, str) and ("[" in p or p in _TYPE_NAMES or p in models))]
    return ".".join(parts + last) or "<root>"


def format_validation_error(err: ValidationError, source: str) -> str:
    """One line per problem, ``SOURCE: key.path: what is wrong`` in the user's terms: no pydantic
    internals (union branches, validator names, error URLs). For a value that may be given in two
    forms (e.g. ``clinical.schema``: a file path or the schema inline) only the problems of the form
    the user wrote are reported."""
    models = _model_names()
    errors = err.errors(include_url=False)
    keys = [_user_key(e["loc"], models, e["type"] == "extra_forbidden") for e in errors]
    lines: list[str] = []
    for e, key in zip(errors, keys):
        inp = e.get("input")
        # the other form of a union: e.g. "not a valid path" for an inline mapping whose keys have problems
        if isinstance(inp, (dict, list)) and e["type"] not in ("extra_forbidden", "missing", "value_error") \
                and any(k.startswith(key + ".") for k in keys):
            continue
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check spelling; see the config reference in README.md)"
        elif e["type"] == "missing":
            msg = "required key missing"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        if "input" in e and not isinstance(inp, (dict, list)) and e["type"] not in ("extra_forbidden", "missing"):
            msg = f"{msg} (got {inp!r})"
        line = f"{source}: {key}: {msg}"
        if line not in lines:
            lines.append(line)
    return "\n".join(lines)


def validate(model: type[T], data: Any, source: str = "<config>") -> T:
    """Validate ``data`` against ``model``; raise ConfigError naming ``source`` and keys."""
    try:
        return model.model_validate(data if data is not None else {})
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source)) from None


def read_yaml(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        with open(path, encoding="utf-8") as fh:
            return yaml.safe_load(fh)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None


def load_yaml(path: str | Path, model: type[T]) -> T:
    """Read a YAML file and validate it against ``model``."""
    return validate(model, read_yaml(path), source=str(path))
