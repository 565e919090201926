"""The OpenAI-compatible provider against a real HTTP server on 127.0.0.1 speaking /v1/chat/completions."""

from __future__ import annotations

import pytest

from backends.openai_compat import OpenAICompatibleProvider
from tests.support.stub_server import Reply, StubChatServer
from llmops.errors import BackendError, ConfigError

MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "How do I sort a dict?"}]


@pytest.fixture
def server():
    with StubChatServer() as stub:
        yield stub


def provider(server: StubChatServer, **kwargs) -> OpenAICompatibleProvider:
    return OpenAICompatibleProvider(server.base_url, "qwen2.5-coder", backoff_s=0.01, **kwargs)


def test_complete_sends_messages_and_maps_parameters(server):
    server.queue(Reply(text="Use sorted(d.items())."))
    completion = provider(server, params={"temperature": 0.1}).complete(MESSAGES, max_output_tokens=64)
    assert completion.text == "Use sorted(d.items())."
    assert completion.usage["total_tokens"] == completion.usage["prompt_tokens"] + completion.usage["completion_tokens"]
    assert completion.safety is None and completion.citations == []
    sent = server.requests[-1]
    assert sent["model"] == "qwen2.5-coder"
    assert sent["messages"] == MESSAGES
    assert sent["max_tokens"] == 64 and sent["temperature"] == 0.1
    assert "authorization" not in server.headers[-1]


def test_api_key_comes_from_the_named_environment_variable(server, monkeypatch):
    monkeypatch.setenv("MY_LLM_KEY", "sk-test-123")
    provider(server, api_key_env="MY_LLM_KEY").complete(MESSAGES)
    assert server.headers[-1]["authorization"] == "Bearer sk-test-123"
    monkeypatch.delenv("MY_LLM_KEY")
    with pytest.raises(ConfigError, match="MY_LLM_KEY"):
        provider(server, api_key_env="MY_LLM_KEY").complete(MESSAGES)


def test_generate_implements_the_backend_interface(server):
    server.echo_prompt = True
    generation = provider(server).generate("q", "rendered prompt text")
    assert generation.text == "rendered prompt text"
    assert generation.safety is None and not generation.abstained


def test_transient_errors_are_retried_then_succeed(server):
    server.queue(Reply(status=503, body='{"error": "overloaded"}'), Reply(status=429, body="{}"), Reply(text="done"))
    assert provider(server, max_retries=3).complete(MESSAGES).text == "done"
    assert len(server.requests) == 3


def test_gives_up_after_max_retries_naming_provider_and_cause(server):
    server.default = Reply(status=503, body='{"error": "overloaded"}')
    with pytest.raises(BackendError, match=r"openai_compat.*HTTP 503.*gave up after 3 attempt"):
        provider(server, max_retries=2).complete(MESSAGES)
    assert len(server.requests) == 3


def test_client_error_is_not_retried(server):
    server.queue(Reply(status=400, body='{"error": {"message": "model not found"}}'))
    with pytest.raises(BackendError, match=r"HTTP 400.*model not found"):
        provider(server).complete(MESSAGES)
    assert len(server.requests) == 1


def test_timeout_is_named(server):
    server.default = Reply(text="late", delay_s=1.0)
    with pytest.raises(BackendError, match=r"openai_compat.*timed out after 0.2s"):
        provider(server, timeout_s=0.2, max_retries=1).complete(MESSAGES)


@pytest.mark.parametrize("body, problem", [
    ("this is not json", "malformed JSON"),
    ('{"choices": []}', "lacks choices"),
    ('{"choices": [{"message": {"content": 42}}]}', "expected a string"),
])
def test_malformed_responses_are_clear_errors(server, body, problem):
    server.queue(Reply(status=200, body=body))
    with pytest.raises(BackendError, match=problem):
        provider(server).complete(MESSAGES)


def test_connection_refused_is_a_backend_error():
    with StubChatServer() as stub:
        url = stub.base_url
    p = OpenAICompatibleProvider(url, "m", max_retries=1, backoff_s=0.01, timeout_s=2)
    with pytest.raises(BackendError, match="cannot connect"):
        p.complete(MESSAGES)


@pytest.mark.parametrize("kwargs, problem", [
    ({"base_url": "localhost:8000", "model": "m"}, "http"),
    ({"base_url": "http://x/v1", "model": ""}, "model id"),
    ({"base_url": "http://x/v1", "model": "m", "params": {"temprature": 1}}, "unknown model parameter"),
])
def test_bad_configuration(kwargs, problem):
    with pytest.raises(ConfigError, match=problem):
        OpenAICompatibleProvider(**kwargs)


def test_bad_messages_are_rejected_before_any_call(server):
    from llmops.errors import InputError

    with pytest.raises(InputError, match="unknown role"):
        provider(server).complete([{"role": "robot", "content": "x"}])
    assert server.requests == []


@pytest.mark.live
def test_live_openai_compatible_server():
    import os

    base_url = os.environ.get("OPENAI_COMPAT_LIVE_BASE_URL")
    if not base_url:
        pytest.skip("set OPENAI_COMPAT_LIVE_BASE_URL (and OPENAI_COMPAT_LIVE_MODEL) to run against a real server")
    p = OpenAICompatibleProvider(base_url, os.environ.get("OPENAI_COMPAT_LIVE_MODEL", "default"),
                                 api_key_env="OPENAI_COMPAT_LIVE_KEY" if os.environ.get("OPENAI_COMPAT_LIVE_KEY")
                                 else None)
    assert p.complete([{"role": "user", "content": "Say OK."}], max_output_tokens=8).text
