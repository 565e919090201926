"""Choosing a provider is a settings change; bad provider settings fail with one clear error."""

from __future__ import annotations

import pytest

from backends.factory import make_backend, make_provider, model_id
from backends.openai_compat import OpenAICompatibleProvider
from backends.vertex import VertexGeminiProvider
from llmops.errors import ConfigError
from llmops.settings import load_settings


def test_default_is_the_local_retrieval_answerer(tmp_path):
    from backends.retrieval import RetrievalAnswerer

    settings = load_settings()
    assert settings.chain.provider.kind == "retrieval"
    examples = [{"question_id": 1, "question": "reverse a list", "answer": "xs[::-1]"}]
    RetrievalAnswerer.fit(examples).save(tmp_path / "r")
    assert isinstance(make_backend(settings.chain.provider, retriever_dir=tmp_path / "r"), RetrievalAnswerer)
    with pytest.raises(ConfigError, match="fitted retrieval index"):
        make_backend(settings.chain.provider)


def test_swapping_provider_is_a_settings_change(monkeypatch):
    monkeypatch.setenv("LLMOPS_CHAIN__PROVIDER__KIND", "openai_compat")
    monkeypatch.setenv("LLMOPS_CHAIN__PROVIDER__BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("LLMOPS_CHAIN__PROVIDER__MODEL", "llama3")
    monkeypatch.setenv("LLMOPS_CHAIN__PROVIDER__TIMEOUT_S", "7")
    provider = make_backend(load_settings().chain.provider, params={"temperature": 0.2, "max_output_tokens": 9})
    assert isinstance(provider, OpenAICompatibleProvider)
    assert (provider.model, provider.timeout_s) == ("llama3", 7.0)
    assert provider.params == {"temperature": 0.2, "max_output_tokens": 9}

    monkeypatch.setenv("LLMOPS_CHAIN__PROVIDER__KIND", "vertex")
    monkeypatch.setenv("LLMOPS_CHAIN__PROVIDER__MODEL", "gemini-2.5-flash")
    monkeypatch.setenv("LLMOPS_CHAIN__PROVIDER__PARAMS", '{"temperature": 0.0}')
    settings = load_settings()
    vertex = make_provider(settings.chain.provider, params={"temperature": 0.2})
    assert isinstance(vertex, VertexGeminiProvider)
    assert vertex.params == {"temperature": 0.0}  # settings win over the prompt's parameters
    assert model_id(settings.chain.provider) == "gemini-2.5-flash"


def test_unknown_provider_in_settings_is_named(monkeypatch):
    monkeypatch.setenv("LLMOPS_CHAIN__PROVIDER__KIND", "anthropic")
    with pytest.raises(ConfigError, match="chain.provider.kind"):
        load_settings()


@pytest.mark.parametrize("spec, problem", [
    ({"kind": "bedrock"}, "unknown provider 'bedrock'"),
    ({"kind": "openai_compat", "model": "m"}, "base_url"),
    ({"kind": "vertex"}, "model"),
    ({"kind": "vertex", "model": "m", "temperature": 1}, "unknown provider setting"),
])
def test_bad_provider_specs(spec, problem):
    with pytest.raises(ConfigError, match=problem):
        make_backend(spec)
