"""Strict model of a prompt template file, and rendering that refuses missing or unknown variables."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from llmops.errors import ConfigError
from llmops.yamlfile import load_yaml_model

_VARIABLE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class FewShotExample(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    question: str
    answer: str


class PromptTemplate(BaseModel):
    """A prompt as stored in `prompts/templates/NAME.yaml`. `instruction` is filled into `{{instruction}}`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    instruction: str = Field(min_length=1)
    template: str = Field(min_length=1)
    variables: list[str]
    few_shot: list[FewShotExample] = Field(default_factory=list)
    model_parameters: dict[str, Any] = Field(default_factory=dict)
    tags: dict[str, str] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"prompt name {value!r} may hold letters, digits, '_', '.', '-' only")
        return value

    @model_validator(mode="after")
    def _variables_match(self) -> PromptTemplate:
        used = set(_VARIABLE.findall(self.template))
        declared = set(self.variables)
        if used - declared:
            raise ValueError(f"template uses undeclared variable(s): {', '.join(sorted(used - declared))}")
        if declared - used:
            raise ValueError(f"declared variable(s) not used in the template: {', '.join(sorted(declared - used))}")
        if "instruction" not in declared:
            raise ValueError("the template must use {{instruction}} (its hash ties training data to serving)")
        if "question" not in declared:
            raise ValueError("the template must use {{question}}")
        if bool(self.few_shot) != ("examples" in declared):
            raise ValueError("few_shot examples and the {{examples}} variable go together: give both or neither")
        from backends.base import MODEL_PARAMETERS

        unknown = sorted(set(self.model_parameters) - set(MODEL_PARAMETERS))
        if unknown:
            raise ValueError(f"unknown model parameter(s): {', '.join(unknown)} (known: {', '.join(MODEL_PARAMETERS)})")
        return self

    @property
    def examples_text(self) -> str:
        """The few-shot block filled into `{{examples}}`: fixed at sync time, so it is part of the version."""
        return "\n\n".join(f"Question:\n{e.question}\n\nAnswer:\n{e.answer}" for e in self.few_shot)

    @property
    def fixed_values(self) -> dict[str, str]:
        """Variables the file itself fills (instruction, examples); the rest come at request time."""
        values = {"instruction": self.instruction}
        if "examples" in self.variables:
            values["examples"] = self.examples_text
        return values

    @property
    def instruction_hash(self) -> str:
        """Identifies the instruction text; training examples and serving both record it."""
        return hashlib.sha256(self.instruction.encode("utf-8")).hexdigest()[:16]

    @property
    def content_hash(self) -> str:
        """Identifies everything that affects rendering; a new registry version is made only when it changes."""
        canonical = yaml.safe_dump(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]

    def render(self, **values: str) -> str:
        """Fill the template; `instruction` comes from the file, the rest from the caller."""
        values = {**self.fixed_values, **values}
        return render_template(self.template, self.variables, values)


def render_template(template: str, variables: list[str], values: dict[str, str]) -> str:
    missing = [name for name in variables if name not in values]
    if missing:
        raise ConfigError(f"prompt variable(s) missing: {', '.join(missing)}")
    unknown = sorted(set(values) - set(variables))
    if unknown:
        raise ConfigError(f"unknown prompt variable(s): {', '.join(unknown)}")
    return _VARIABLE.sub(lambda match: str(values[match.group(1)]), template)


def load_template_file(path: Path) -> PromptTemplate:
    template = load_yaml_model(path, PromptTemplate, "prompt template")
    if template.name != Path(path).stem:
        raise ConfigError(f"prompt template {path}: name {template.name!r} must match the file name")
    return template


def load_template(name: str, templates_dir: str | Path) -> PromptTemplate:
    return load_template_file(Path(templates_dir) / f"{name}.yaml")
