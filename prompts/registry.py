"""Versioning prompt templates in MLflow's Prompt Registry: a new version only when the file's content changed."""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from typing import Any

import mlflow
import mlflow.genai
from mlflow.exceptions import MlflowException

from llmops.errors import ConfigError, NotFoundError
from prompts.template import PromptTemplate

CONTENT_HASH_TAG = "llmops.content_hash"
INSTRUCTION_HASH_TAG = "llmops.instruction_hash"
MODEL_PARAMETERS_TAG = "llmops.model_parameters"


@dataclass(frozen=True)
class PinnedPrompt:
    """A prompt version as used by a dataset or a model: everything needed to render it again offline."""

    name: str
    version: int
    template: str
    instruction_hash: str
    model_parameters: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def uri(self) -> str:
        return f"prompts:/{self.name}/{self.version}"

    @property
    def variables(self) -> list[str]:
        return sorted(_variables(self.template))

    def format(self, **values: str) -> str:
        from prompts.template import render_template

        return render_template(self.template, self.variables, values)

    def as_config(self) -> dict[str, object]:
        return {
            "prompt_name": self.name,
            "prompt_version": self.version,
            "prompt_template": self.template,
            "instruction_hash": self.instruction_hash,
            "prompt_model_parameters": json.dumps(self.model_parameters, sort_keys=True),
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> PinnedPrompt:
        """Inverse of `as_config` (what a logged model stores); older configs without parameters still load."""
        return cls(name=config["prompt_name"], version=int(config["prompt_version"]),
                   template=config["prompt_template"], instruction_hash=config["instruction_hash"],
                   model_parameters=json.loads(config.get("prompt_model_parameters") or "{}"))


def _variables(template: str) -> set[str]:
    from prompts.template import _VARIABLE

    return set(_VARIABLE.findall(template))


def registry_text(template: PromptTemplate) -> str:
    """The template with its fixed parts (instruction, few-shot) filled in: `{{var}}` remains for the rest."""
    fixed = template.fixed_values
    others = {name: "{{" + name + "}}" for name in template.variables if name not in fixed}
    return template.render(**others)


def sync_prompt(template: PromptTemplate, commit_message: str | None = None) -> tuple[PinnedPrompt, bool]:
    """Register `template` unless the newest registry version already has its content; returns (version, created)."""
    latest = _latest_version(template.name)
    if latest is not None and latest.tags.get(CONTENT_HASH_TAG) == template.content_hash:
        return _pin(latest), False
    version = mlflow.genai.register_prompt(
        name=template.name,
        template=registry_text(template),
        commit_message=commit_message or f"sync from prompts/templates/{template.name}.yaml",
        tags={
            CONTENT_HASH_TAG: template.content_hash,
            INSTRUCTION_HASH_TAG: template.instruction_hash,
            MODEL_PARAMETERS_TAG: json.dumps(template.model_parameters, sort_keys=True),
            **template.tags,
        },
    )
    return _pin(version), True


def _latest_version(name: str):
    try:
        return mlflow.genai.load_prompt(f"prompts:/{name}@latest", allow_missing=True)
    except MlflowException:
        return None


def parse_prompt_uri(uri: str) -> tuple[str, str]:
    """`prompts:/NAME/VERSION` or `prompts:/NAME@ALIAS` -> (name, version-or-@alias); anything else is an error."""
    if not isinstance(uri, str) or not uri.startswith("prompts:/"):
        raise ConfigError(f"prompt URI must look like prompts:/NAME/VERSION or prompts:/NAME@ALIAS, got {uri!r}")
    rest = uri.removeprefix("prompts:/")
    if "@" in rest:
        name, alias = rest.split("@", 1)
        if name and alias and "/" not in rest:
            return name, "@" + alias
    elif rest.count("/") == 1:
        name, version = rest.split("/")
        if name and version.isdigit():
            return name, version
    raise ConfigError(f"prompt URI must look like prompts:/NAME/VERSION or prompts:/NAME@ALIAS, got {uri!r}")


def load_pinned(uri: str) -> PinnedPrompt:
    """Resolve a prompt URI (alias or version) to the exact version it names now; loading inside a run links it."""
    parse_prompt_uri(uri)
    try:
        version = mlflow.genai.load_prompt(uri, cache_ttl_seconds=0) if "@" in uri else mlflow.genai.load_prompt(uri)
    except MlflowException as exc:
        raise NotFoundError(f"prompt {uri} not found: {exc.message.splitlines()[0]}") from exc
    if version is None:
        raise NotFoundError(f"prompt {uri} not found")
    return _pin(version)


def set_alias(name: str, version: int, alias: str) -> PinnedPrompt:
    """Point `prompts:/name@alias` at `version` (moving it if set); the version must exist."""
    if alias == "latest" or not alias.replace("-", "").replace("_", "").isalnum():
        raise ConfigError(f"invalid prompt alias {alias!r} (letters, digits, '-', '_'; 'latest' is reserved)")
    pinned = load_pinned(f"prompts:/{name}/{int(version)}")
    try:
        mlflow.genai.set_prompt_alias(name=name, alias=alias, version=int(version))
    except MlflowException as exc:
        raise NotFoundError(f"cannot set alias {alias} on prompt {name} v{version}: {exc.message}") from exc
    return pinned


def diff_versions(name: str, v1: int, v2: int) -> str:
    """A unified diff of two versions' templates and their llmops tags (empty string when identical)."""
    a = mlflow.genai.load_prompt(f"prompts:/{name}/{int(v1)}", allow_missing=True)
    b = mlflow.genai.load_prompt(f"prompts:/{name}/{int(v2)}", allow_missing=True)
    for number, found in ((v1, a), (v2, b)):
        if found is None:
            raise NotFoundError(f"prompt {name} version {number} not found")

    def lines(version) -> list[str]:
        tags = [f"# tag {k} = {v}" for k, v in sorted(version.tags.items()) if not k.startswith("mlflow.")]
        return [*tags, *str(version.template).splitlines()]

    return "\n".join(difflib.unified_diff(lines(a), lines(b), fromfile=f"prompts:/{name}/{v1}",
                                          tofile=f"prompts:/{name}/{v2}", lineterm=""))


def _pin(version) -> PinnedPrompt:
    return PinnedPrompt(
        name=version.name,
        version=int(version.version),
        template=version.template,
        instruction_hash=version.tags.get(INSTRUCTION_HASH_TAG, ""),
        model_parameters=json.loads(version.tags.get(MODEL_PARAMETERS_TAG) or "{}"),
    )
