"""The LCEL chain: stages, grounding, Responsible-AI post-processing, tracing, bad input."""

from __future__ import annotations

import mlflow
import pytest

from backends.base import Citation, Generation, Safety, SafetyCategory
from backends.openai_compat import OpenAICompatibleProvider
from tests.support.stub_server import Reply, StubChatServer
from llmops.errors import BackendError, InputError
from prompts.chain import ChainResponse, QAChain
from prompts.grounding import GroundingIndex
from prompts.registry import PinnedPrompt

PLAIN = PinnedPrompt("so-qa", 1, "Be helpful.\n\nQuestion:\n{{question}}", "abc123")
GROUNDED = PinnedPrompt("so-qa-grounded", 2, "Be helpful.\n{{context}}\n\nQuestion:\n{{question}}", "abc123",
                        {"temperature": 0.2})
ROWS = [{"question_id": 11, "question": "How do I reverse a list?", "answer": "xs[::-1]",
         "link": "https://stackoverflow.com/questions/11"},
        {"question_id": 12, "question": "How do I sort a dict by value?", "answer": "sorted(d.items(), key=...)",
         "link": "https://stackoverflow.com/questions/12"},
        {"question_id": 13, "question": "How do I open a file?", "answer": "with open(p) as f: ...",
         "link": "https://stackoverflow.com/questions/13"}]


@pytest.fixture(autouse=True)
def _one_store(store):
    """Traces of every test here go to the module's store (else each test would create a default one)."""


class ScriptedBackend:
    """Implements the Backend protocol; answers with a fixed text and remembers what it was sent."""

    name = "scripted"
    model = "scripted-1"

    def __init__(self, text: str, safety: Safety | None = None) -> None:
        self.text, self.safety, self.prompts = text, safety, []

    def generate(self, question: str, prompt: str) -> Generation:
        self.prompts.append(prompt)
        return Generation(text=self.text, citations=[Citation("s1", "https://example.org/s1", None, 0, 4,
                                                              kind="provider")], safety=self.safety)


def test_response_matches_the_documented_schema_with_safety_and_citations():
    chain = QAChain(ScriptedBackend("Use xs[::-1]."), GROUNDED, grounding=GroundingIndex.fit(ROWS), grounding_k=2)
    response = chain.answer("  How do I   reverse a list?  ")
    ChainResponse.model_validate(response)
    assert response["answer"] == "Use xs[::-1]."
    assert response["safety"]["blocked"] is False and response["safety"]["source"] == "local-lexicon-v1"
    assert {c["category"] for c in response["safety"]["categories"]} >= {"hate_speech", "dangerous_content"}
    kinds = [(c["kind"], c["source_id"]) for c in response["citations"]]
    assert kinds[0] == ("provider", "s1") and ("grounding", "11") in kinds
    assert (response["prompt_name"], response["prompt_version"], response["chain"]) == \
        ("so-qa-grounded", 2, "so-qa-scripted")
    assert (response["provider"], response["model_id"]) == ("scripted", "scripted-1")


def test_grounding_puts_the_k_most_similar_answers_with_ids_into_the_prompt():
    backend = ScriptedBackend("ok")
    QAChain(backend, GROUNDED, grounding=GroundingIndex.fit(ROWS), grounding_k=1).answer("reverse a list please")
    prompt = backend.prompts[0]
    assert "[11] Question: How do I reverse a list?" in prompt and "xs[::-1]" in prompt
    assert "[12]" not in prompt and prompt.endswith("Question:\nreverse a list please")
    # a template without {{context}} gets no context, and still renders
    QAChain(backend, PLAIN, grounding=GroundingIndex.fit(ROWS)).answer("reverse a list")
    assert backend.prompts[-1] == "Be helpful.\n\nQuestion:\nreverse a list"


def test_harmful_output_is_replaced_by_a_refusal_and_counted():
    chain = QAChain(ScriptedBackend("Sure: here is how to build a pipe bomb."), PLAIN, refusal_message="Refused.")
    first, second = chain.answer_many(["q1", "q2"])
    assert first["answer"] == "Refused." and first["safety"]["blocked"] is True
    assert "dangerous_content" in first["safety"]["reason"]
    assert second["safety"]["blocked"] and chain.blocked_count == 2


def test_provider_safety_verdict_is_used_as_is():
    vertex_says = Safety(blocked=True, categories=[SafetyCategory("harassment", 0.9, 0.8, "HIGH", "HIGH", True)],
                         source="vertex", reason="blocked by Vertex safety filter: harassment")
    response = QAChain(ScriptedBackend("harmless words", safety=vertex_says), PLAIN).answer("q")
    assert response["safety"]["source"] == "vertex" and response["answer"] != "harmless words"
    assert response["safety"]["categories"][0]["probability_label"] == "HIGH"


@pytest.mark.parametrize("question, problem", [
    ("", "question is empty"), ("   \n\t ", "question is empty"), ("x" * 101, "101 characters long; the limit is 100"),
    (42, "must be a string"),
])
def test_bad_questions_fail_before_any_model_call(question, problem):
    backend = ScriptedBackend("ok")
    chain = QAChain(backend, PLAIN, max_question_chars=100)
    with pytest.raises(InputError, match=problem):
        chain.answer_many(["a fine question", question])
    assert backend.prompts == []


def test_each_stage_is_a_traced_span():
    chain = QAChain(ScriptedBackend("Use xs[::-1]."), GROUNDED, grounding=GroundingIndex.fit(ROWS))
    chain.answer("How do I reverse a list?")
    traces = mlflow.search_traces(return_type="list", flush=True)
    assert len(traces) == 1
    spans = {span.name: span for span in traces[0].data.spans}
    assert set(spans) >= {"so-qa-scripted", "preprocess", "grounding", "prompt", "llm", "postprocess"}
    assert spans["llm"].attributes["model_id"] == "scripted-1"
    assert spans["prompt"].attributes["prompt_uri"] == "prompts:/so-qa-grounded/2"
    assert spans["grounding"].outputs[0]["metadata"]["chunk_id"] == "11"
    assert spans["postprocess"].attributes["blocked"] is False


def test_chain_over_an_openai_compatible_server():
    with StubChatServer(default=Reply(text="Slice it: xs[::-1] [11]")) as server:
        provider = OpenAICompatibleProvider(server.base_url, "local-model", params=GROUNDED.model_parameters)
        chain = QAChain(provider, GROUNDED, grounding=GroundingIndex.fit(ROWS))
        response = chain.answer("How do I reverse a list?")
        assert server.requests[0]["temperature"] == 0.2
        assert "[11] Question: How do I reverse a list?" in server.requests[0]["messages"][-1]["content"]
        server.default = Reply(text="I will find you.")
        blocked = chain.answer("How do I reverse a list?")
        server.default = Reply(status=200, body="not json")
        with pytest.raises(BackendError, match="openai_compat.*malformed JSON"):
            chain.answer("How do I reverse a list?")
    assert response["answer"] == "Slice it: xs[::-1] [11]" and response["provider"] == "openai_compat"
    assert blocked["safety"]["blocked"] and chain.blocked_count == 1


def test_vertex_chain_rebuilt_from_a_logged_config_maps_safety_and_citations():
    """What QAChainModel.load_context does (`build_chain` from the logged config), with a fake `client.models`
    returning google.genai types."""
    from google.genai import types

    from prompts.chain import build_chain

    response = types.GenerateContentResponse(candidates=[types.Candidate(
        content=types.Content(role="model", parts=[types.Part(text="Use reversed(xs).")]),
        finish_reason=types.FinishReason.STOP,
        safety_ratings=[types.SafetyRating(category=types.HarmCategory.HARM_CATEGORY_HARASSMENT,
                                           probability=types.HarmProbability.NEGLIGIBLE, probability_score=0.02,
                                           severity=types.HarmSeverity.HARM_SEVERITY_NEGLIGIBLE,
                                           severity_score=0.01)],
        citation_metadata=types.CitationMetadata(citations=[types.Citation(
            start_index=4, end_index=16, uri="https://docs.python.org/3/library/functions.html#reversed")]))])
    blocked = types.GenerateContentResponse(candidates=[types.Candidate(
        finish_reason=types.FinishReason.SAFETY,
        safety_ratings=[types.SafetyRating(category=types.HarmCategory.HARM_CATEGORY_DANGEROUS_CONTENT,
                                           probability=types.HarmProbability.HIGH, blocked=True)])])
    calls = []

    class Models:
        def generate_content(self, *, model, contents, config=None):
            calls.append((model, config))
            return blocked if contents[-1].parts[0].text.endswith("something") else response

    class Client:
        models = Models()

    config = {**GROUNDED.as_config(), "chain": "so-qa-vertex", "model_id": "gemini-2.5-flash",
              "provider": {"kind": "vertex", "model": "gemini-2.5-flash", "timeout_s": 10, "max_retries": 0},
              "grounding_k": 2, "safety": {"threshold": 0.5, "refusal_message": "Withheld."}}
    chain = build_chain(config, {}, client=Client())
    ok, refused = chain.answer_many(["How do I reverse a list?", "something"])
    assert calls[0][0] == "gemini-2.5-flash" and calls[0][1].temperature == 0.2
    assert ok["answer"] == "Use reversed(xs)." and ok["safety"]["source"] == "vertex"
    assert ok["citations"][0]["start_index"] == 4 and ok["citations"][0]["kind"] == "provider"
    assert refused["answer"] == "Withheld." and refused["safety"]["blocked"]
    assert refused["safety"]["categories"][0]["probability"] == 0.9  # HIGH label, no score
    assert chain.blocked_count == 1


def test_the_chain_is_an_lcel_runnable_in_stage_order():
    from langchain_core.runnables import Runnable

    from prompts.chains.definition import STAGES

    chain = QAChain(ScriptedBackend("ok"), PLAIN)
    assert isinstance(chain.runnable, Runnable)
    assert [step.name for step in chain.runnable.bound.steps] == list(STAGES)
    assert chain.runnable.invoke({"raw": "How?"})["answer"] == "ok"
