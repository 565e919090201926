"""Reading a YAML data file (templates, gates, policy) into a strict pydantic model, with one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from llmops.errors import ConfigError, NotFoundError

Model = TypeVar("Model", bound=BaseModel)


def validation_message(exc: ValidationError, fallback: str = "file") -> str:
    """`where: what` for the first problem; an unknown key is called one."""
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or fallback
    if first["type"] == "extra_forbidden":
        return f"unknown key {where!r}"
    return f"{where}: {first['msg'].removeprefix('Value error, ')}"


def load_yaml_model(path: str | Path, model: type[Model], what: str) -> Model:
    """Parse `path` into `model`; a missing file is NotFoundError, anything malformed a ConfigError naming it."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise NotFoundError(f"{what} not found: {path}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {path} is not UTF-8") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {path} is not valid YAML: {str(exc).splitlines()[0]}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{what} {path} must hold a mapping at the top level")
    try:
        return model(**raw)
    except ValidationError as exc:
        raise ConfigError(f"{what} {path}: {validation_message(exc)}") from exc
