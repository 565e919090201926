"""Versioning prompt templates in MLflow's Prompt Registry: a new version only when the file's content changed."""

from __future__ import annotations

import json
from dataclasses import dataclass

import mlflow
import mlflow.genai
from mlflow.exceptions import MlflowException

from prompts.template import PromptTemplate

CONTENT_HASH_TAG = "llmops.content_hash"
INSTRUCTION_HASH_TAG = "llmops.instruction_hash"


@dataclass(frozen=True)
class PinnedPrompt:
    """A prompt version as used by a dataset or a model: everything needed to render it again offline."""

    name: str
    version: int
    template: str
    instruction_hash: str

    @property
    def uri(self) -> str:
        return f"prompts:/{self.name}/{self.version}"

    def format(self, **values: str) -> str:
        from prompts.template import render_template

        return render_template(self.template, sorted(_variables(self.template)), values)

    def as_config(self) -> dict[str, object]:
        return {
            "prompt_name": self.name,
            "prompt_version": self.version,
            "prompt_template": self.template,
            "instruction_hash": self.instruction_hash,
        }


def _variables(template: str) -> set[str]:
    from prompts.template import _VARIABLE

    return set(_VARIABLE.findall(template))


def registry_text(template: PromptTemplate) -> str:
    """The template with its instruction filled in: what the registry stores, with `{{var}}` for the rest."""
    others = {name: "{{" + name + "}}" for name in template.variables if name != "instruction"}
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
            "llmops.model_parameters": json.dumps(template.model_parameters, sort_keys=True),
            **template.tags,
        },
    )
    return _pin(version), True


def _latest_version(name: str):
    try:
        return mlflow.genai.load_prompt(f"prompts:/{name}@latest", allow_missing=True)
    except MlflowException:
        return None


def load_pinned(uri: str) -> PinnedPrompt:
    """Resolve a prompt URI (alias or version) to the exact version it names now."""
    from llmops.errors import NotFoundError

    try:
        version = mlflow.genai.load_prompt(uri)
    except MlflowException as exc:
        raise NotFoundError(f"prompt {uri} not found: {exc.message}") from exc
    return _pin(version)


def _pin(version) -> PinnedPrompt:
    return PinnedPrompt(
        name=version.name,
        version=int(version.version),
        template=version.template,
        instruction_hash=version.tags.get(INSTRUCTION_HASH_TAG, ""),
    )
