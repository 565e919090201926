"""LLM-as-judge scorers (correctness, relevance, groundedness) through any provider with `complete(messages)`.

The provider is whatever `backends` offers (Vertex AI Gemini, an OpenAI-compatible `base_url` such as a local
vLLM or Ollama); judges only call `provider.complete(messages, **params).text`. A `JudgeClient` adds what a
judge run needs around it: a concurrency limit, retries, and the on-disk cache keyed by
(judge model, judge prompt, input), so a rerun calls nothing and gives identical scores.

Unparseable judge output is an error of that row (documented choice): the scorer raises `JudgeOutputError`,
MLflow records it on the row's trace, the row has no score for that judge, nothing is cached, and
`evaluation.run` counts the rows (`judge_errors`) and makes `llmops eval run` exit non-zero.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from typing import Any, Protocol

from mlflow.entities import AssessmentSource, AssessmentSourceType, Feedback
from mlflow.genai.scorers import Scorer
from pydantic import PrivateAttr

from evaluation.cache import JudgeCache, cache_key
from evaluation.scorers import answer_of, question_of, reference_of
from llmops.errors import BackendError, ConfigError


class JudgeOutputError(BackendError):
    """The judge model answered something that is not the verdict format it was asked for."""


class Provider(Protocol):
    def complete(self, messages: list[dict[str, str]], **params: Any) -> Any: ...


_FORMAT = ('Reply with one JSON object and nothing else: {"verdict": "yes" or "no", '
           '"rationale": "<one sentence>"}.')


@dataclass(frozen=True)
class JudgePrompt:
    name: str
    version: int
    system: str
    user: str

    @property
    def identity(self) -> str:
        """What the cache key holds for the prompt: any wording change invalidates cached verdicts."""
        return f"{self.name}/v{self.version}\n{self.system}\n{self.user}"


JUDGE_PROMPTS: dict[str, JudgePrompt] = {
    "correctness": JudgePrompt(
        "correctness", 1,
        "You grade answers to programming questions against a reference answer. " + _FORMAT,
        "Question:\n{question}\n\nReference answer:\n{reference}\n\nAnswer to grade:\n{answer}\n\n"
        "Does the answer convey the same solution as the reference (wording may differ)?",
    ),
    "relevance": JudgePrompt(
        "relevance", 1,
        "You judge whether an answer addresses the question that was asked. " + _FORMAT,
        "Question:\n{question}\n\nAnswer:\n{answer}\n\nDoes the answer address this question?",
    ),
    "groundedness": JudgePrompt(
        "groundedness", 1,
        "You judge whether an answer is supported by the sources it cites. " + _FORMAT,
        "Question:\n{question}\n\nCited sources:\n{context}\n\nAnswer:\n{answer}\n\n"
        "Is every claim in the answer supported by the cited sources?",
    ),
}

_OBJECT = re.compile(r"\{.*\}", re.DOTALL)
_YES = {"yes", "true", "pass", "correct", "1"}
_NO = {"no", "false", "fail", "incorrect", "0"}


def parse_verdict(text: str) -> tuple[float, str]:
    """`{"verdict": "yes"|"no", "rationale": ...}` (code fences and chatter around it tolerated) -> (1|0, why)."""
    match = _OBJECT.search(text or "")
    if not match:
        raise JudgeOutputError(f"judge output has no JSON object: {(text or '')[:120]!r}")
    try:
        data = json.loads(match.group(0))
    except json.JSONDecodeError as exc:
        raise JudgeOutputError(f"judge output is not valid JSON ({exc.msg}): {match.group(0)[:120]!r}") from exc
    if not isinstance(data, dict) or "verdict" not in data:
        raise JudgeOutputError(f"judge output lacks a 'verdict' field: {match.group(0)[:120]!r}")
    verdict = str(data["verdict"]).strip().lower()
    if verdict not in _YES | _NO:
        raise JudgeOutputError(f"judge verdict must be yes or no, got {data['verdict']!r}")
    return (1.0 if verdict in _YES else 0.0), str(data.get("rationale", ""))


class JudgeClient:
    """Provider + cache + concurrency limit + retries, shared by all judges of one evaluation."""

    def __init__(self, provider: Provider, model: str, cache: JudgeCache | None = None,
                 max_concurrency: int = 4) -> None:
        if not callable(getattr(provider, "complete", None)):
            raise ConfigError(f"judge provider {type(provider).__name__} has no complete(messages) method")
        if not model:
            raise ConfigError("a judge needs a model name (evaluation.judge.model)")
        if max_concurrency < 1:
            raise ConfigError("judge max_concurrency must be >= 1")
        self.provider = provider
        self.model = model
        self.cache = cache
        self._slots = threading.BoundedSemaphore(max_concurrency)
        self._lock = threading.Lock()
        self.calls = 0

    def ask(self, prompt: JudgePrompt, fields: dict[str, str]) -> tuple[float, str, bool]:
        """(verdict value, rationale, from cache?); raises JudgeOutputError or BackendError."""
        key = cache_key(self.model, prompt.identity, fields)
        if self.cache is not None:
            cached = self.cache.get(key)
            if cached is not None:
                value, why = parse_verdict(cached)
                return value, why, True
        messages = [{"role": "system", "content": prompt.system},
                    {"role": "user", "content": prompt.user.format(**fields)}]
        text = self._complete(messages)
        value, why = parse_verdict(text)  # raises before caching: bad output is asked again next time
        if self.cache is not None:
            self.cache.put(key, text, {"model": self.model, "judge": prompt.name, "prompt_version": prompt.version})
        return value, why, False

    def _complete(self, messages: list[dict[str, str]]) -> str:
        """One provider call: retries live in the provider (`backends.remote.call_with_retries`), in one layer."""
        with self._slots:
            with self._lock:
                self.calls += 1
            try:
                completion = self.provider.complete(messages, temperature=0.0)
            except (ConfigError, BackendError):
                raise
            except Exception as exc:  # noqa: BLE001 - a provider outside `backends` may raise anything
                raise BackendError(f"judge model {self.model} failed: {type(exc).__name__}: {exc}") from exc
        return completion.text if hasattr(completion, "text") else str(completion)


def _context_of(outputs: Any) -> str:
    if isinstance(outputs, dict) and outputs.get("context"):
        return str(outputs["context"])
    citations = outputs.get("citations") or [] if isinstance(outputs, dict) else []
    return "\n".join(f"- {c.get('source_id')} {c.get('link', '')}" for c in citations) or "(none)"


class LLMJudge(Scorer):
    """One judge prompt; value 1 (yes) or 0 (no) with the judge's rationale."""

    judge_model: str = ""
    _client: JudgeClient | None = PrivateAttr(default=None)

    def model_post_init(self, context: Any) -> None:
        if self.name not in JUDGE_PROMPTS:
            raise ConfigError(f"unknown judge {self.name!r} (known: {', '.join(JUDGE_PROMPTS)})")

    def __call__(self, *, inputs: Any, outputs: Any, expectations: dict[str, Any] | None = None) -> Feedback:
        if self._client is None:
            raise ConfigError(f"judge {self.name} has no client: build it with make_judges()")
        fields = {"question": question_of(inputs), "answer": answer_of(outputs)}
        if self.name == "correctness":
            reference = reference_of(expectations)
            if not reference:
                raise ConfigError("the correctness judge needs a reference answer (expected_response)")
            fields["reference"] = reference
        if self.name == "groundedness":
            fields["context"] = _context_of(outputs)
        value, why, cached = self._client.ask(JUDGE_PROMPTS[self.name], fields)
        return Feedback(value=value, rationale=why or ("yes" if value else "no"),
                        source=AssessmentSource(AssessmentSourceType.LLM_JUDGE, source_id=self._client.model),
                        metadata={"cached": str(cached)})


def make_judges(client: JudgeClient, names: list[str]) -> list[LLMJudge]:
    judges = []
    for name in names:
        judge = LLMJudge(name=name, judge_model=client.model, timeout=0)
        judge._client = client
        judges.append(judge)
    return judges


def provider_from_settings(judge: Any) -> Provider:
    """Build the configured provider from `backends` (never a client of our own)."""
    if judge.provider == "none":
        raise ConfigError("no judge provider configured (evaluation.judge.provider is 'none')")
    if not judge.model:
        raise ConfigError("evaluation.judge.model is required for an LLM judge")
    if judge.provider == "openai":
        if not judge.base_url:
            raise ConfigError("evaluation.judge.base_url is required for an OpenAI-compatible judge")
        from backends.openai_compat import OpenAICompatibleProvider

        return OpenAICompatibleProvider(judge.base_url, judge.model, api_key_env=judge.api_key_env,
                                        timeout_s=judge.timeout_s, max_retries=judge.retries)
    from backends.vertex import VertexGeminiProvider

    return VertexGeminiProvider(judge.model, project=judge.project, location=judge.location,
                                timeout_s=judge.timeout_s, max_retries=judge.retries)


def client_from_settings(judge: Any, provider: Provider | None = None) -> JudgeClient:
    return JudgeClient(provider or provider_from_settings(judge), judge.model or "", JudgeCache(judge.cache_dir),
                       max_concurrency=judge.max_concurrency)
