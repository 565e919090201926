"""Grounding: the k training questions most similar to the user's, with their accepted answers and ids, given to
a generative model as context (and returned as citations). Built from the prepared train split at log time."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import joblib

from llmops.errors import DataError, NotFoundError
from llmops.fsutil import atomic_path

_META = "grounding.json"
_INDEX = "vectorizer.joblib"
MAX_CONTEXT_ANSWER_CHARS = 1500


@dataclass(frozen=True)
class ContextDoc:
    source_id: str
    question: str
    answer: str
    link: str
    similarity: float


@dataclass
class GroundingIndex:
    vectorizer: Any
    matrix: Any
    docs: list[dict[str, str]]

    @classmethod
    def fit(cls, examples: Sequence[Mapping[str, Any]]) -> GroundingIndex:
        from sklearn.feature_extraction.text import TfidfVectorizer

        if not examples:
            raise DataError("cannot build a grounding index from zero examples")
        docs = [{"source_id": str(e["question_id"]), "question": str(e["question"]), "answer": str(e["answer"]),
                 "link": str(e.get("link") or "")} for e in examples]
        vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, strip_accents="unicode")
        matrix = vectorizer.fit_transform([d["question"] for d in docs])
        return cls(vectorizer, matrix, docs)

    def top_k(self, question: str, k: int) -> list[ContextDoc]:
        if k <= 0:
            return []
        sims = (self.vectorizer.transform([question]) @ self.matrix.T).toarray()[0]
        order = sims.argsort()[::-1][:k]
        return [ContextDoc(**self.docs[i], similarity=round(float(sims[i]), 4)) for i in order if sims[i] > 0]

    def save(self, directory: Path) -> Path:
        with atomic_path(Path(directory)) as tmp:
            tmp.mkdir()
            joblib.dump({"vectorizer": self.vectorizer, "matrix": self.matrix}, tmp / _INDEX)
            (tmp / _META).write_text(json.dumps({"docs": self.docs}, ensure_ascii=False), encoding="utf-8")
        return Path(directory)

    @classmethod
    def load(cls, directory: Path) -> GroundingIndex:
        directory = Path(directory)
        if not (directory / _META).is_file() or not (directory / _INDEX).is_file():
            raise NotFoundError(f"no grounding index in {directory}")
        index = joblib.load(directory / _INDEX)
        docs = json.loads((directory / _META).read_text(encoding="utf-8"))["docs"]
        return cls(index["vectorizer"], index["matrix"], docs)


def format_context(docs: Sequence[ContextDoc]) -> str:
    """The `{{context}}` text: each document with its id, so the model can cite `[id]`."""
    if not docs:
        return "(no related questions found)"
    blocks = []
    for doc in docs:
        answer = doc.answer if len(doc.answer) <= MAX_CONTEXT_ANSWER_CHARS \
            else doc.answer[:MAX_CONTEXT_ANSWER_CHARS] + " ..."
        blocks.append(f"[{doc.source_id}] Question: {doc.question}\nAnswer: {answer}")
    return "\n\n".join(blocks)


def as_dict(doc: ContextDoc) -> dict[str, Any]:
    return asdict(doc)
