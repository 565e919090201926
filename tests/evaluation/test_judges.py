"""Judges: verdict parsing, cache, retries, concurrency limit; the real OpenAI-compatible provider on 127.0.0.1."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from backends.base import Completion
from evaluation.cache import JudgeCache
from evaluation.judges import (
    JUDGE_PROMPTS,
    JudgeClient,
    JudgeOutputError,
    make_judges,
    parse_verdict,
)
from llmops.errors import BackendError, ConfigError

from tests.support.judge_server import JudgeServer

ROW = {"inputs": {"question": "How to reverse a list?"},
       "outputs": {"answer": "Use items[::-1] to reverse.", "citations": [{"source_id": "1", "link": "l"}]},
       "expectations": {"expected_response": "Use items[::-1] to reverse."}}


class FakeProvider:
    """Implements `complete` like backends' providers; scripted replies, optional failures, tracks concurrency."""

    def __init__(self, replies=None, fail_first: int = 0, delay_s: float = 0.0) -> None:
        self.replies = list(replies or [])
        self.fail_first = fail_first
        self.delay_s = delay_s
        self.calls = 0
        self.active = 0
        self.max_active = 0
        self._lock = threading.Lock()

    def complete(self, messages, **params):
        with self._lock:
            self.calls += 1
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            call = self.calls
        try:
            time.sleep(self.delay_s)
            if call <= self.fail_first:
                raise BackendError("HTTP 503")
            text = self.replies[(call - 1) % len(self.replies)] if self.replies else '{"verdict": "yes"}'
            return Completion(text=text)
        finally:
            with self._lock:
                self.active -= 1


def test_parse_verdict_formats() -> None:
    assert parse_verdict('```json\n{"verdict": "YES", "rationale": "same"}\n```') == (1.0, "same")
    assert parse_verdict('Sure! {"verdict": "no"}')[0] == 0.0
    for bad, match in [("fine by me", "no JSON object"), ('{"verdict": maybe}', "not valid JSON"),
                       ('{"score": 3}', "lacks a 'verdict'"), ('{"verdict": "perhaps"}', "yes or no")]:
        with pytest.raises(JudgeOutputError, match=match):
            parse_verdict(bad)


def test_cache_makes_rerun_free_and_identical(tmp_path: Path) -> None:
    provider = FakeProvider(['{"verdict": "yes", "rationale": "r1"}', '{"verdict": "no", "rationale": "r2"}'])
    first = make_judges(JudgeClient(provider, "judge-m", JudgeCache(tmp_path)), ["correctness", "relevance"])
    scores = [j.run(**ROW).value for j in first]
    assert provider.calls == 2
    client = JudgeClient(provider, "judge-m", JudgeCache(tmp_path))
    again = [j.run(**ROW).value for j in make_judges(client, ["correctness", "relevance"])]
    assert again == scores and provider.calls == 2 and client.cache.hits == 2
    # another judge model is another key
    make_judges(JudgeClient(provider, "other-m", JudgeCache(tmp_path)), ["correctness"])[0].run(**ROW)
    assert provider.calls == 3


def test_retries_happen_in_one_layer_counted_in_http_requests(tmp_path: Path) -> None:
    """judge.retries = 2 means 3 HTTP requests in all against a server that keeps failing (not 3 x 3)."""
    from tests.support.stub_server import Reply
    from evaluation.judges import client_from_settings
    from llmops.settings import load_settings

    server = JudgeServer().start()
    try:
        server.default = Reply(status=503, body='{"error": {"message": "overloaded"}}')
        judge_cfg = load_settings({"evaluation": {"judge": {
            "provider": "openai", "model": "j", "base_url": server.base_url, "retries": 2,
            "cache_dir": str(tmp_path / "c")}}}).evaluation.judge
        client = client_from_settings(judge_cfg)
        client.provider.backoff_s = 0.0
        judge = make_judges(client, ["relevance"])[0]
        with pytest.raises(BackendError, match=r"HTTP 503.*gave up after 3 attempt"):
            judge.run(**ROW)
        assert len(server.requests) == 3 and client.calls == 1
        server.default = Reply(status=400, body='{"error": {"message": "bad request"}}')
        with pytest.raises(BackendError, match="HTTP 400"):
            judge.run(**ROW)
        assert len(server.requests) == 4, "a client error is not retried"
    finally:
        server.stop()


def test_provider_failure_and_garbage_are_not_cached(tmp_path: Path) -> None:
    dead = FakeProvider(fail_first=99)
    judge = make_judges(JudgeClient(dead, "m", None), ["relevance"])[0]
    with pytest.raises(BackendError, match="HTTP 503"):
        judge.run(**ROW)
    assert dead.calls == 1
    garbage = FakeProvider(["I would say it is good"])
    client = JudgeClient(garbage, "g", JudgeCache(tmp_path / "g"))
    judge = make_judges(client, ["groundedness"])[0]
    for _ in range(2):
        with pytest.raises(JudgeOutputError):
            judge.run(**ROW)
    assert garbage.calls == 2, "unparseable output is never cached"


def test_concurrency_limit(tmp_path: Path) -> None:
    provider = FakeProvider(delay_s=0.05)
    client = JudgeClient(provider, "m", None, max_concurrency=2)
    threads = [threading.Thread(target=client.ask, args=(JUDGE_PROMPTS["relevance"], {"question": str(i),
                                                                                      "answer": "a"}))
               for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert provider.calls == 8 and provider.max_active <= 2


def test_judge_validation() -> None:
    with pytest.raises(ConfigError):
        JudgeClient(object(), "m")
    with pytest.raises(ConfigError):
        make_judges(JudgeClient(FakeProvider(), "m"), ["helpfulness"])
    judge = make_judges(JudgeClient(FakeProvider(), "m"), ["correctness"])[0]
    with pytest.raises(ConfigError, match="reference"):
        judge.run(inputs=ROW["inputs"], outputs=ROW["outputs"], expectations={})


def test_openai_compatible_provider_on_localhost(tmp_path: Path) -> None:
    from backends.openai_compat import OpenAICompatibleProvider

    server = JudgeServer().start()
    try:
        provider = OpenAICompatibleProvider(server.base_url, "local-judge", max_retries=0)
        judges = make_judges(JudgeClient(provider, "local-judge", JudgeCache(tmp_path)),
                             ["correctness", "relevance", "groundedness"])
        assert [j.run(**ROW).value for j in judges] == [1.0, 1.0, 1.0]
        wrong = {**ROW, "outputs": {"answer": "Install numpy."}}
        assert judges[0].run(**wrong).value == 0.0
        assert len(server.requests) == 4
        assert [j.run(**ROW).value for j in judges] == [1.0, 1.0, 1.0] and len(server.requests) == 4
    finally:
        server.stop()
