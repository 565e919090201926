"""Choose a backend/provider from settings (`chain.provider`), so swapping a model is a settings change.

Accepts the settings section object or a plain dict of the same keys (what the logged model stores in its
model_config: no secrets, only the *name* of the API-key variable).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from backends.base import Backend, Provider
from llmops.errors import ConfigError

PROVIDERS = ("retrieval", "vertex", "openai_compat")
_KEYS = {"kind", "model", "base_url", "api_key_env", "project", "location", "timeout_s", "max_retries", "params"}


def provider_spec(settings_section: Any) -> dict[str, Any]:
    """The section as a plain dict, validated: an unknown provider or key is a ConfigError naming it."""
    if hasattr(settings_section, "model_dump"):
        spec = settings_section.model_dump()
    elif isinstance(settings_section, Mapping):
        spec = dict(settings_section)
    else:
        raise ConfigError(f"provider settings must be a mapping, got {type(settings_section).__name__}")
    unknown = sorted(set(spec) - _KEYS)
    if unknown:
        raise ConfigError(f"unknown provider setting(s): {', '.join(unknown)}")
    kind = spec.get("kind", "retrieval")
    if kind not in PROVIDERS:
        raise ConfigError(f"unknown provider {kind!r} (available: {', '.join(PROVIDERS)})")
    spec["kind"] = kind
    return spec


def make_provider(settings_section: Any, params: Mapping[str, Any] | None = None, client: Any = None) -> Provider:
    """A remote chat provider. `params` are defaults (e.g. the prompt's model_parameters); settings' win."""
    spec = provider_spec(settings_section)
    kind = spec["kind"]
    merged = {**dict(params or {}), **dict(spec.get("params") or {})}
    common = {"timeout_s": spec.get("timeout_s") or 30.0, "max_retries": spec.get("max_retries", 3),
              "params": merged}
    if kind == "openai_compat":
        from backends.openai_compat import OpenAICompatibleProvider

        if not spec.get("base_url"):
            raise ConfigError("provider openai_compat needs chain.provider.base_url")
        if not spec.get("model"):
            raise ConfigError("provider openai_compat needs chain.provider.model")
        return OpenAICompatibleProvider(base_url=spec["base_url"], model=spec["model"],
                                        api_key_env=spec.get("api_key_env"), **common)
    if kind == "vertex":
        from backends.vertex import VertexGeminiProvider

        if not spec.get("model"):
            raise ConfigError("provider vertex needs chain.provider.model (e.g. gemini-2.5-flash)")
        return VertexGeminiProvider(model=spec["model"], project=spec.get("project"), location=spec.get("location"),
                                    client=client, **common)
    raise ConfigError(f"provider {kind!r} is not a remote chat provider")


def make_backend(settings_section: Any, retriever_dir: str | Path | None = None,
                 params: Mapping[str, Any] | None = None, client: Any = None) -> Backend:
    """The chain's answering backend: the local retrieval answerer (needs its fitted index) or a remote provider."""
    spec = provider_spec(settings_section)
    if spec["kind"] == "retrieval":
        from backends.retrieval import RetrievalAnswerer

        if retriever_dir is None:
            raise ConfigError("provider retrieval needs a fitted retrieval index (a tune run)")
        return RetrievalAnswerer.load(Path(retriever_dir))
    return make_provider(spec, params=params, client=client)


def model_id(settings_section: Any) -> str:
    """What the logged model records as the model id: the remote model, or the retrieval answerer."""
    spec = provider_spec(settings_section)
    return spec.get("model") or spec["kind"]
