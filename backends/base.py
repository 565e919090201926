"""The one interface every model backend implements: the local retrieval answerer, Vertex AI, OpenAI-compatible.

Two levels: a *provider* speaks chat messages (`complete(messages, **params) -> Completion`), used directly by
LLM judges; a *backend* answers one question (`generate(question, prompt) -> Generation`), used by the QA chain.
Remote providers implement both.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

ABSTAIN_ANSWER = "No confident answer: nothing close enough to this question is in the knowledge base."

# Generation parameters the chain may pass to any provider; each provider maps them to its own names.
MODEL_PARAMETERS = ("temperature", "max_output_tokens", "top_p", "top_k", "stop", "seed")


@dataclass(frozen=True)
class Citation:
    """A source the answer rests on: its id, a link a person can open, how close it matched (0..1), and where
    in the answer it is used (character span), when the provider says so."""

    source_id: str
    link: str
    similarity: float | None = None
    start_index: int | None = None
    end_index: int | None = None
    title: str | None = None
    kind: str = "retrieval"  # retrieval | grounding | provider


@dataclass(frozen=True)
class SafetyCategory:
    """One harm category's scores, 0..1 (None when the source gives only a label)."""

    category: str
    probability: float | None
    severity: float | None = None
    probability_label: str | None = None
    severity_label: str | None = None
    blocked: bool = False


@dataclass(frozen=True)
class Safety:
    """The Responsible-AI verdict on one response: `source` names who scored it (vertex, local-lexicon, ...)."""

    blocked: bool
    categories: list[SafetyCategory] = field(default_factory=list)
    source: str = "none"
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Completion:
    """A provider's answer to a list of chat messages, in provider-neutral form. `raw` keeps the provider's payload
    (JSON-able) for debugging; it is never logged with secrets because none are in it."""

    text: str
    usage: dict[str, int] = field(default_factory=dict)
    safety: Safety | None = None
    citations: list[Citation] = field(default_factory=list)
    raw: Any = None
    finish_reason: str | None = None


@dataclass(frozen=True)
class Generation:
    """What a backend returns for one request. `safety` is None when the backend does not score safety itself;
    the chain's post-processing then scores it with the local classifier."""

    text: str
    citations: list[Citation] = field(default_factory=list)
    abstained: bool = False
    usage: dict[str, int] = field(default_factory=dict)
    safety: Safety | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@runtime_checkable
class Backend(Protocol):
    """`question` is the user's text after pre-processing; `prompt` is it rendered with the pinned template.

    Retrieval backends search with the question; generative backends send the prompt.
    """

    name: str

    def generate(self, question: str, prompt: str) -> Generation: ...


@runtime_checkable
class Provider(Protocol):
    """A chat model reached over the network (or a fake of one)."""

    name: str
    model: str

    def complete(self, messages: list[dict[str, str]], **params: Any) -> Completion: ...


def check_messages(provider: str, messages: list[dict[str, str]]) -> None:
    """Reject malformed chat messages before any network call."""
    from llmops.errors import InputError

    if not messages:
        raise InputError(f"{provider}: no messages to send")
    for number, message in enumerate(messages):
        if not isinstance(message, dict) or set(message) != {"role", "content"}:
            raise InputError(f"{provider}: message {number} must be {{'role': ..., 'content': ...}}")
        if message["role"] not in ("system", "user", "assistant"):
            raise InputError(f"{provider}: message {number} has unknown role {message['role']!r}")
        if not isinstance(message["content"], str):
            raise InputError(f"{provider}: message {number} content must be a string")


def check_params(provider: str, params: dict[str, Any]) -> dict[str, Any]:
    """Unknown generation parameters are an error, not silently ignored."""
    from llmops.errors import ConfigError

    unknown = sorted(set(params) - set(MODEL_PARAMETERS))
    if unknown:
        raise ConfigError(f"{provider}: unknown model parameter(s) {', '.join(unknown)} "
                          f"(known: {', '.join(MODEL_PARAMETERS)})")
    return {k: v for k, v in params.items() if v is not None}
