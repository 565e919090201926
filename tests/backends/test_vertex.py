"""Vertex Gemini provider, offline: (1) a real `genai.Client(vertexai=True)` against a local HTTP server that speaks
Vertex's REST `:generateContent` (the SDK's transport boundary), (2) a fake `client.models` returning the SDK's own
`types.GenerateContentResponse` objects for the edge cases. Plus a live test skipped without credentials."""

from __future__ import annotations

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from google.genai import errors, types

from backends.vertex import VertexGeminiProvider
from llmops.errors import BackendError, ConfigError

MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "How do I sort a dict?"}]

VERTEX_JSON = {
    "candidates": [{
        "content": {"role": "model", "parts": [{"text": "Use sorted(d.items()) [11]."}]},
        "finishReason": "STOP",
        "safetyRatings": [
            {"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE", "probabilityScore": 0.01,
             "severity": "HARM_SEVERITY_NEGLIGIBLE", "severityScore": 0.02},
            {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "LOW", "probabilityScore": 0.21,
             "severity": "HARM_SEVERITY_LOW", "severityScore": 0.12},
        ],
        "citationMetadata": {"citations": [
            {"startIndex": 0, "endIndex": 22, "uri": "https://stackoverflow.com/questions/613183", "title": "Sort"}]},
    }],
    "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 7, "totalTokenCount": 19},
}


class _VertexREST:
    """Answers POST .../models/MODEL:generateContent with scripted (status, json) pairs; records requests."""

    def __init__(self) -> None:
        self.replies: list[tuple[int, object]] = []
        self.requests: list[tuple[str, dict]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                outer.requests.append((self.path, body))
                status, payload = outer.replies.pop(0) if outer.replies else (200, VERTEX_JSON)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def client(self, factory=None):
        from google import genai
        from google.oauth2.credentials import Credentials

        return (factory or genai.Client)(vertexai=True, project="my-proj", location="us-central1",
                            credentials=Credentials(token="offline-test-token"),
                            http_options=types.HttpOptions(base_url=f"http://127.0.0.1:{self.server.server_address[1]}/"))


@pytest.fixture
def rest():
    server = _VertexREST()
    yield server
    server.server.shutdown()
    server.server.server_close()


def test_real_sdk_request_and_response_mapping(rest):
    provider = VertexGeminiProvider("gemini-2.5-flash", client=rest.client(), params={"temperature": 0.2},
                                    backoff_s=0.01)
    completion = provider.complete(MESSAGES, max_output_tokens=128, stop="```")
    path, body = rest.requests[-1]
    assert path.endswith("/projects/my-proj/locations/us-central1/publishers/google/models/"
                         "gemini-2.5-flash:generateContent")
    assert body["systemInstruction"]["parts"][0]["text"] == "be brief"
    assert body["contents"] == [{"parts": [{"text": "How do I sort a dict?"}], "role": "user"}]
    assert body["generationConfig"] == {"temperature": 0.2, "maxOutputTokens": 128, "stopSequences": ["```"]}
    assert completion.text == "Use sorted(d.items()) [11]."
    assert completion.usage == {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19}
    assert completion.safety.source == "vertex" and not completion.safety.blocked
    dangerous = {c.category: c for c in completion.safety.categories}["dangerous_content"]
    assert (dangerous.probability, dangerous.severity, dangerous.probability_label) == (0.21, 0.12, "LOW")
    [citation] = completion.citations
    assert citation.link == "https://stackoverflow.com/questions/613183"
    assert (citation.start_index, citation.end_index, citation.kind) == (0, 22, "provider")


def test_rows_answered_on_several_threads_share_one_client(rest, monkeypatch):
    """The evaluation answers rows on several threads: the lazily built client is built once (a replaced
    google-genai client closes its transport under the requests still using it)."""
    import time

    from google import genai

    real, built = genai.Client, []

    def slow_client(**kwargs):  # the provider's own genai.Client(...) call, pointed at the fake REST server
        time.sleep(0.2)  # as slow as building a real client: every thread arrives before the first is done
        built.append(kwargs)
        return rest.client(factory=real)

    monkeypatch.setattr(genai, "Client", slow_client)
    provider = VertexGeminiProvider("gemini-2.5-flash", backoff_s=0.01, max_retries=0)
    results, errors_seen = [], []

    def answer() -> None:
        try:
            results.append(provider.complete(MESSAGES).text)
        except Exception as exc:  # noqa: BLE001 - collected for the assertion
            errors_seen.append(exc)

    threads = [threading.Thread(target=answer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors_seen and len(results) == 8 and len(built) == 1


def test_tuned_endpoint_model_id_is_sent_as_is(rest):
    endpoint = "projects/my-proj/locations/us-central1/endpoints/1234567890"
    VertexGeminiProvider(endpoint, client=rest.client()).generate("q", "prompt")
    assert rest.requests[-1][0].endswith(f"/{endpoint}:generateContent")


def test_server_errors_are_retried_client_errors_are_not(rest):
    rest.replies = [(503, {"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}})]
    provider = VertexGeminiProvider("gemini-2.5-flash", client=rest.client(), max_retries=2, backoff_s=0.01)
    assert provider.complete(MESSAGES).text.startswith("Use sorted")
    before = len(rest.requests)
    rest.replies = [(400, {"error": {"code": 400, "message": "model not found", "status": "INVALID_ARGUMENT"}})]
    with pytest.raises(BackendError, match=r"vertex \(model gemini-2.5-flash\): HTTP 400.*model not found"):
        provider.complete(MESSAGES)
    assert len(rest.requests) == before + 1


def test_gives_up_naming_the_provider(rest):
    rest.replies = [(503, {"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}})] * 3
    provider = VertexGeminiProvider("gemini-2.5-flash", client=rest.client(), max_retries=1, backoff_s=0.01)
    with pytest.raises(BackendError, match=r"vertex.*HTTP 503.*gave up after 2 attempt"):
        provider.complete(MESSAGES)


class _FakeModels:
    """Implements `client.models.generate_content` as the SDK does, returning (or raising) scripted objects."""

    def __init__(self, *outcomes):
        self.outcomes = list(outcomes)
        self.calls = []

    def generate_content(self, *, model, contents, config=None):
        self.calls.append({"model": model, "contents": contents, "config": config})
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


class _FakeClient:
    def __init__(self, *outcomes):
        self.models = _FakeModels(*outcomes)


def _rating(category, probability, score, blocked=None):
    return types.SafetyRating(category=category, probability=probability, probability_score=score,
                              severity=types.HarmSeverity.HARM_SEVERITY_MEDIUM, severity_score=score, blocked=blocked)


def test_blocked_candidate_maps_to_blocked_safety():
    response = types.GenerateContentResponse(candidates=[types.Candidate(
        content=types.Content(role="model", parts=[]), finish_reason=types.FinishReason.SAFETY,
        safety_ratings=[_rating(types.HarmCategory.HARM_CATEGORY_DANGEROUS_CONTENT, types.HarmProbability.HIGH, 0.93,
                                blocked=True)])])
    completion = VertexGeminiProvider("gemini-2.5-flash", client=_FakeClient(response)).complete(MESSAGES)
    assert completion.safety.blocked and completion.text == ""
    assert completion.safety.categories[0].blocked and completion.safety.categories[0].severity_label == "MEDIUM"
    assert "SAFETY" in completion.safety.reason


def test_blocked_prompt_maps_to_blocked_safety():
    response = types.GenerateContentResponse(prompt_feedback=types.GenerateContentResponsePromptFeedback(
        block_reason=types.BlockedReason.SAFETY,
        safety_ratings=[_rating(types.HarmCategory.HARM_CATEGORY_HATE_SPEECH, types.HarmProbability.HIGH, 0.9)]))
    completion = VertexGeminiProvider("gemini-2.5-flash", client=_FakeClient(response)).complete(MESSAGES)
    assert completion.safety.blocked and "prompt blocked: SAFETY" in completion.safety.reason
    assert completion.safety.categories[0].category == "hate_speech"


def test_label_only_ratings_get_documented_scores():
    response = types.GenerateContentResponse(candidates=[types.Candidate(
        content=types.Content(role="model", parts=[types.Part(text="fine")]),
        safety_ratings=[types.SafetyRating(category=types.HarmCategory.HARM_CATEGORY_HARASSMENT,
                                           probability=types.HarmProbability.MEDIUM)])])
    [category] = VertexGeminiProvider("m", client=_FakeClient(response)).complete(MESSAGES).safety.categories
    assert category.probability == 0.6 and category.severity is None


def test_sdk_errors_and_timeouts_are_retried_then_named():
    import httpx

    ok = types.GenerateContentResponse(candidates=[types.Candidate(
        content=types.Content(role="model", parts=[types.Part(text="fine")]))])
    fake = _FakeClient(httpx.ReadTimeout("slow"), errors.ServerError(500, {"error": {"message": "boom"}}), ok)
    assert VertexGeminiProvider("m", client=fake, max_retries=2, backoff_s=0.01).complete(MESSAGES).text == "fine"
    assert len(fake.models.calls) == 3
    fake = _FakeClient(*[httpx.ReadTimeout("slow")] * 2)
    with pytest.raises(BackendError, match=r"vertex.*timed out after 5s"):
        VertexGeminiProvider("m", client=fake, timeout_s=5, max_retries=1, backoff_s=0.01).complete(MESSAGES)


def test_empty_response_is_a_clear_error():
    with pytest.raises(BackendError, match="no candidates"):
        VertexGeminiProvider("m", client=_FakeClient(types.GenerateContentResponse())).complete(MESSAGES)


def test_bad_configuration():
    with pytest.raises(ConfigError, match="model id"):
        VertexGeminiProvider("")
    with pytest.raises(ConfigError, match="unknown model parameter"):
        VertexGeminiProvider("m", params={"max_tokens": 5})


@pytest.mark.live
def test_live_vertex_gemini():
    if not os.environ.get("GOOGLE_CLOUD_PROJECT"):
        pytest.skip("set GOOGLE_CLOUD_PROJECT (and Application Default Credentials) to call Vertex AI")
    provider = VertexGeminiProvider(os.environ.get("VERTEX_LIVE_MODEL", "gemini-2.5-flash"),
                                    project=os.environ["GOOGLE_CLOUD_PROJECT"],
                                    location=os.environ.get("GOOGLE_CLOUD_LOCATION", "us-central1"))
    completion = provider.complete([{"role": "user", "content": "Reply with the word OK."}], max_output_tokens=16)
    assert completion.text and completion.safety is not None
