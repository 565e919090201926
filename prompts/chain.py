"""The question-answering chain as a LangChain LCEL runnable, one MLflow trace span per stage:

    preprocess (normalise, length guard) -> grounding (k similar train Q/A with ids) -> prompt (the pinned
    registry version) -> llm (the configured provider) -> postprocess (safety, refusal, citations)

The same class runs in evaluation (in-process) and in the registered pyfunc model (models-from-code),
so what is evaluated is what is served.
"""

from __future__ import annotations

import logging
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import mlflow
from pydantic import BaseModel, Field

from backends.base import Backend, Citation, Generation, Safety
from llmops.errors import InputError
from prompts.registry import PinnedPrompt

log = logging.getLogger(__name__)

CHAIN_NAME = "so-qa-retrieval"
MAX_QUESTION_CHARS = 8000
DEFAULT_REFUSAL = "I can't help with that request: the response was withheld by the safety filter."
_WS = re.compile(r"[ \t]+")


class CitationOut(BaseModel):
    source_id: str
    link: str
    similarity: float | None = None
    start_index: int | None = None
    end_index: int | None = None
    title: str | None = None
    kind: str = "retrieval"


class SafetyCategoryOut(BaseModel):
    category: str
    probability: float | None = None
    severity: float | None = None
    probability_label: str | None = None
    severity_label: str | None = None
    blocked: bool = False


class SafetyOut(BaseModel):
    blocked: bool
    categories: list[SafetyCategoryOut] = Field(default_factory=list)
    source: str
    reason: str | None = None


class ChainResponse(BaseModel):
    """One answer as returned by `llmops serve predict`, the pyfunc and `/invocations` (docs/prompts.md)."""

    answer: str
    citations: list[CitationOut] = Field(default_factory=list)
    abstained: bool
    safety: SafetyOut
    model_name: str | None = None
    model_version: str | None = None
    prompt_name: str
    prompt_version: int
    instruction_hash: str
    chain: str = CHAIN_NAME
    provider: str | None = None
    model_id: str | None = None


def default_chain_name(provider: str | None) -> str:
    """The provider registry's chain name for a known kind, else `so-qa-<provider>`."""
    from backends.providers import KINDS

    if provider in KINDS:
        return KINDS[provider].chain_name
    return f"so-qa-{provider}" if provider else CHAIN_NAME


def preprocess(question: Any, max_chars: int = MAX_QUESTION_CHARS) -> str:
    """Normalise whitespace and guard length; an empty question is the caller's error."""
    if not isinstance(question, str):
        raise InputError(f"question must be a string, got {type(question).__name__}")
    text = "\n".join(_WS.sub(" ", line).strip() for line in question.replace("\r\n", "\n").split("\n")).strip()
    if not text:
        raise InputError("question is empty")
    if len(text) > max_chars:
        raise InputError(f"question is {len(text)} characters long; the limit is {max_chars}")
    return text


class QAChain:
    """Composes the stages. `blocked_count` counts responses the safety post-processing replaced by a refusal."""

    def __init__(self, backend: Backend, prompt: PinnedPrompt, model_name: str | None = None,
                 model_version: str | None = None, *, grounding: Any = None, grounding_k: int = 3,
                 classifier: Any = None, refusal_message: str = DEFAULT_REFUSAL,
                 max_question_chars: int = MAX_QUESTION_CHARS, chain_name: str | None = None,
                 provider: str | None = None, model_id: str | None = None, max_concurrency: int = 4) -> None:
        from backends.safety import load_classifier

        self.backend = backend
        self.prompt = prompt
        self.model_name = model_name
        self.model_version = model_version
        self.grounding = grounding
        self.grounding_k = grounding_k
        self.classifier = classifier or load_classifier()
        self.refusal_message = refusal_message
        self.max_question_chars = max_question_chars
        self.provider = provider or getattr(backend, "name", None)
        self.chain_name = chain_name or default_chain_name(self.provider)
        self.model_id = model_id or getattr(backend, "model", None) or self.provider
        self.max_concurrency = max_concurrency
        self.blocked_count = 0
        self._lock = threading.Lock()
        self._runnable: Any = None

    @property
    def runnable(self):
        """The LCEL runnable, built on first use: importing LangChain costs 0.5-1 s in a fresh process."""
        if self._runnable is None:
            self._runnable = self._build_runnable()
        return self._runnable

    def _build_runnable(self):
        from prompts.chains.definition import build_qa_runnable

        return build_qa_runnable(self)

    def _run_stages(self, state: dict[str, Any]) -> dict[str, Any]:
        """The runnable's stages, in its order, as plain calls: the same answer without LangChain's per-call
        machinery, which is about half of a retrieval answer's CPU (docs/serving.md). The server uses it."""
        from prompts.chains.definition import STAGES

        for stage in STAGES:
            state = getattr(self, f"_{stage}_stage")(state)
        return state

    # -- stages: each takes and returns a dict of state, inside its own span --------------------------------------

    def _preprocess_stage(self, state: dict[str, Any]) -> dict[str, Any]:
        with mlflow.start_span(name="preprocess", span_type="PARSER") as span:
            span.set_inputs({"question": state["raw"]})
            question = preprocess(state["raw"], self.max_question_chars)
            span.set_outputs({"question": question})
        return {**state, "question": question}

    def _grounding_stage(self, state: dict[str, Any]) -> dict[str, Any]:
        with mlflow.start_span(name="grounding", span_type="RETRIEVER") as span:
            span.set_inputs({"question": state["question"], "k": self.grounding_k})
            docs = self.grounding.top_k(state["question"], self.grounding_k) if self.grounding is not None else []
            span.set_outputs([{"page_content": d.answer[:500], "metadata": {"doc_uri": d.link, "chunk_id": d.source_id,
                                                                             "similarity": d.similarity}}
                              for d in docs])
        return {**state, "context": docs}

    def _prompt_stage(self, state: dict[str, Any]) -> dict[str, Any]:
        from prompts.grounding import format_context

        with mlflow.start_span(name="prompt", span_type="PARSER") as span:
            span.set_attributes({"prompt_uri": self.prompt.uri, "instruction_hash": self.prompt.instruction_hash})
            values = {"question": state["question"]}
            if "context" in self.prompt.variables:
                values["context"] = format_context(state["context"])
            text = self.prompt.format(**values)
            span.set_outputs({"prompt": text})
        return {**state, "prompt": text}

    def _llm_stage(self, state: dict[str, Any]) -> dict[str, Any]:
        with mlflow.start_span(name="llm", span_type="LLM") as span:
            span.set_attributes({"provider": self.provider or "", "model_id": self.model_id or ""})
            span.set_inputs({"prompt": state["prompt"]})
            generation = self.backend.generate(state["question"], state["prompt"])
            span.set_outputs({"text": generation.text, "usage": generation.usage, "abstained": generation.abstained})
        return {**state, "generation": generation}

    def _postprocess_stage(self, state: dict[str, Any]) -> dict[str, Any]:
        with mlflow.start_span(name="postprocess", span_type="PARSER") as span:
            response = self._postprocess(state["generation"], state["context"])
            span.set_attributes({"blocked": response["safety"]["blocked"],
                                 "safety_source": response["safety"]["source"]})
            span.set_outputs(response)
        return response

    # -- public API ------------------------------------------------------------------------------------------------

    def answer_one(self, question: Any, *, direct: bool = False) -> dict[str, Any]:
        """`direct`: run the stages as plain calls instead of through the LCEL runnable (same stages, same order)."""
        with mlflow.start_span(name=self.chain_name, span_type="CHAIN") as span:
            span.set_inputs({"question": question})
            span.set_attributes({"prompt_uri": self.prompt.uri, "provider": self.provider or "",
                                 "model_id": self.model_id or ""})
            response = self._run_stages({"raw": question}) if direct else self.runnable.invoke({"raw": question})
            span.set_outputs(response)
        return response

    def answer_many(self, questions: list[Any], *, direct: bool = False) -> list[dict[str, Any]]:
        for question in questions:  # reject bad input before any model call
            preprocess(question, self.max_question_chars)
        if self.provider == "retrieval" or len(questions) <= 1 or self.max_concurrency <= 1:
            return [self.answer_one(q, direct=direct) for q in questions]
        with ThreadPoolExecutor(max_workers=self.max_concurrency) as pool:
            return list(pool.map(lambda q: self.answer_one(q, direct=direct), questions))

    def answer(self, question: Any) -> dict[str, Any]:
        return self.answer_many([question])[0]

    def _postprocess(self, generation: Generation, context: list[Any]) -> dict[str, Any]:
        """Score safety (provider's own, else the local classifier), refuse when blocked, gather citations."""
        safety: Safety = generation.safety if generation.safety is not None \
            else self.classifier.classify(generation.text)
        text = generation.text
        if safety.blocked:
            text = self.refusal_message
            with self._lock:
                self.blocked_count += 1
            log.warning("response blocked by %s: %s", safety.source, safety.reason)
        citations = [_citation_out(c) for c in generation.citations]
        if self.provider != "retrieval":
            citations += [CitationOut(source_id=d.source_id, link=d.link, similarity=d.similarity, kind="grounding")
                          for d in context]
        return ChainResponse(
            answer=text,
            citations=citations,
            abstained=generation.abstained,
            safety=SafetyOut.model_validate(safety.to_dict()),
            model_name=self.model_name,
            model_version=self.model_version,
            prompt_name=self.prompt.name,
            prompt_version=self.prompt.version,
            instruction_hash=self.prompt.instruction_hash,
            chain=self.chain_name,
            provider=self.provider,
            model_id=self.model_id,
        ).model_dump()


def _citation_out(citation: Citation) -> CitationOut:
    return CitationOut(**vars(citation))


def chain_config(spec: Any, prompt: PinnedPrompt, chain_settings: Any, model_name: str | None = None) -> dict[str, Any]:
    """The one description of a chain: evaluation builds from it, the release plan logs it as the model's config.

    `spec` is the tuning run's ProviderSpec; `chain_settings` the `chain` settings section (grounding, safety).
    """
    from backends.providers import kind_of, model_id

    return {
        **prompt.as_config(), "registered_model_name": model_name or "", "chain": kind_of(spec).chain_name,
        "model_id": model_id(spec), "provider": spec.model_dump(mode="json"),
        "grounding_k": int(chain_settings.grounding_k) if kind_of(spec).grounded else 0,
        "max_question_chars": int(chain_settings.max_question_chars),
        "safety": chain_settings.safety.model_dump(mode="json"),
    }


def config_fingerprint(config: dict[str, Any]) -> str:
    """Hash of what decides the answers (everything but the registered name): evaluated == served is checked
    by comparing the eval run's fingerprint with the release plan's."""
    import hashlib
    import json

    payload = {k: v for k, v in config.items() if k != "registered_model_name"}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def build_chain(config: dict[str, Any], artifacts: dict[str, str], model_version: str | None = None,
                client: Any = None) -> QAChain:
    """The chain a config describes, with its artifacts local (name -> path); no secrets are in the config."""
    from backends.providers import build_backend, kind_of
    from backends.safety import load_classifier
    from llmops.provider_spec import parse_spec
    from prompts.grounding import GroundingIndex

    prompt = PinnedPrompt.from_config(config)
    spec = parse_spec(config.get("provider"), "model config")
    local = {name: Path(path) for name, path in artifacts.items()}
    backend = build_backend(spec, local, prompt.model_parameters, client)
    grounding_k = int(config.get("grounding_k", 0))
    grounding = GroundingIndex.load(local["grounding"]) if kind_of(spec).grounded and grounding_k and \
        "grounding" in local else None
    safety = config.get("safety") or {}
    return QAChain(
        backend, prompt, model_name=config.get("registered_model_name") or None, model_version=model_version,
        grounding=grounding, grounding_k=grounding_k,
        classifier=load_classifier(safety.get("lexicon"), float(safety.get("threshold", 0.5))),
        refusal_message=safety.get("refusal_message") or DEFAULT_REFUSAL,
        max_question_chars=int(config.get("max_question_chars", MAX_QUESTION_CHARS)),
        chain_name=config.get("chain"), provider=spec.kind, model_id=config.get("model_id"),
    )
