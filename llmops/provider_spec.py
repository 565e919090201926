"""The provider spec: what a tuning run produced, as data. It crosses every step after tuning.

tuning run (writes it) -> evaluation (builds the chain from it) -> release plan (packs it into the model's config)
-> the models-from-code file (builds the served chain from it). Kinds and what they need are in
`backends.providers`; this module only holds the record, so every layer can read it.

No secret is ever in a spec: an API key is named by the environment variable that holds it (`api_key_env`),
and a URL with credentials in it is refused.
"""

from __future__ import annotations

import json
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from llmops.errors import ConfigError

PROVIDER_KINDS = ("retrieval", "hf", "vertex", "openai_compat")
SPEC_TAG = "llmops.provider_spec"
SPEC_ARTIFACT = "provider_spec.json"


class ProviderSpec(BaseModel):
    """kind + where the model is (artifact URIs or an endpoint) + how to call it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["retrieval", "hf", "vertex", "openai_compat"]
    model: str | None = Field(default=None, description="Endpoint / model id the provider calls; hf: a display id.")
    base_model: str | None = Field(default=None, description="What was tuned: a Gemini id, a local model dir.")
    artifacts: dict[str, str] = Field(default_factory=dict, description="name -> URI (retriever, adapter, grounding)")
    base_url: str | None = Field(default=None, description="openai_compat: the /v1 URL; vertex: an API endpoint.")
    api_key_env: str | None = None
    project: str | None = None
    location: str | None = None
    timeout_s: float = Field(default=30.0, gt=0)
    max_retries: int = Field(default=3, ge=0, le=10)
    params: dict[str, Any] = Field(default_factory=dict, description="Generation parameters over the prompt's.")
    max_new_tokens: int | None = Field(default=None, ge=1, description="hf: tokens generated per answer.")
    requirements: list[str] = Field(default_factory=list, description="Distributions this model needs beyond "
                                    "its kind's (e.g. the embedding model of a MiniLM retrieval index).")

    @field_validator("base_url")
    @classmethod
    def _no_credentials(cls, value: str | None) -> str | None:
        if value and (urlsplit(value).username or urlsplit(value).password):
            raise ValueError("must not hold credentials; put the key in the variable named by api_key_env")
        return value

    def to_json(self) -> str:
        return self.model_dump_json(exclude_defaults=False)


def parse_spec(data: Any, where: str) -> ProviderSpec:
    """A spec from a dict or JSON text; anything malformed (an unknown kind, key or value) is a ConfigError."""
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{where}: provider spec is not JSON ({exc.msg})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: provider spec must be an object, got {type(data).__name__}")
    if data.get("kind") not in PROVIDER_KINDS:
        raise ConfigError(f"{where}: unknown provider kind {data.get('kind')!r} "
                          f"(known: {', '.join(PROVIDER_KINDS)})")
    try:
        return ProviderSpec.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "spec"
        reason = "unknown key" if first["type"] == "extra_forbidden" else first["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{where}: provider spec {loc}: {reason}") from exc


def spec_of_run(run: Any) -> ProviderSpec:
    """The spec a tuning run recorded (tag `llmops.provider_spec`); a run without one is not a tuning run."""
    text = run.data.tags.get(SPEC_TAG)
    if not text:
        raise ConfigError(f"run {run.info.run_id} records no provider spec (tag {SPEC_TAG}): it is not a finished "
                          "tuning run of this platform; run `llmops tune` first")
    return parse_spec(text, f"run {run.info.run_id}")
