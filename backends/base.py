"""The one interface every model backend implements: the local retrieval answerer, Vertex AI, OpenAI-compatible."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

ABSTAIN_ANSWER = "No confident answer: nothing close enough to this question is in the knowledge base."


@dataclass(frozen=True)
class Citation:
    """A source the answer rests on: its id, a link a person can open, and how close it matched (0..1)."""

    source_id: str
    link: str
    similarity: float


@dataclass(frozen=True)
class Generation:
    """What a backend returns for one request."""

    text: str
    citations: list[Citation] = field(default_factory=list)
    abstained: bool = False
    usage: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@runtime_checkable
class Backend(Protocol):
    """`question` is the user's text after pre-processing; `prompt` is it rendered with the pinned template.

    Retrieval backends search with the question; generative backends send the prompt.
    """

    name: str

    def generate(self, question: str, prompt: str) -> Generation: ...
