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


def format_validation_error(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check spelling; see the config reference in README.md)"
        elif "input" in e and not isinstance(e["input"], (dict, list)):
            msg = f"{msg} (got {e['input']!r})"
        lines.append(f"{source}: {key}: {msg}")
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
