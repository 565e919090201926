"""Scoring each eval row inside its own trace: the predict function handed to `mlflow.genai.evaluate`.

MLflow's harness scores a row after its trace is written and then writes every assessment in a transaction of its
own: with the 13 deterministic scorers, the reference (an expectation) and the row-id tag that is 15 store writes a
row on top of the trace's own, and on a SQLite store they were two thirds of an evaluation's time (1,000 rows:
2.7 rows/s). Scored while the row's root span is still open, the same `Feedback`s go onto the trace in memory
(`mlflow.log_assessment` on the active trace) and MLflow writes them with the trace, in the trace's transaction.
The UI shows the same trace, the same assessments with the same names, sources and rationales.

Deterministic scorers run in the row's thread; LLM judges (network-bound) run on a small pool, so a row waits for
its slowest judge, not for their sum. A scorer that raises becomes an assessment with an error (as MLflow's
harness records it); a prediction that raises is recorded as the row's error and its trace ends in error. A
question the chain refuses by its own input contract (`InputError`: too long, empty; the server answers such a
request 4xx) is the row's refusal instead: scored as the abstention the user gets, counted apart from failures.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from evaluation.dataset import EvalRow
from evaluation.scorers import Latency
from llmops.errors import InputError

ROW_TAG = "llmops.row_id"
ROOT_SPAN = "qa_chain"
REFERENCE = "expected_response"


@dataclass(frozen=True)
class Score:
    """One scorer's result on one row; `source`/`metadata` as the scorer's Feedback gave them (judges name their
    model and whether the verdict was cached)."""

    value: float | None
    rationale: str = ""
    error: str = ""
    source: Any = None
    metadata: dict[str, str] | None = None


@dataclass
class RowResult:
    row: EvalRow
    trace_id: str
    response: dict[str, Any]
    scores: dict[str, Score] = field(default_factory=dict)
    error: str = ""  # the prediction failed: scores are those of an empty answer
    refused: str = ""  # the chain refused the question (InputError): scores are those of an abstention


def as_response(output: Any) -> dict[str, Any]:
    return output if isinstance(output, dict) else {"answer": "" if output is None else str(output)}


def _value(feedback: Any) -> float | None:
    value = getattr(feedback, "value", feedback)
    if value is None or isinstance(value, str):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class RowScorer:
    """`predict_fn` for `mlflow.genai.evaluate`: predicts one row, scores it, attaches everything to its trace.

    Rows are looked up by question (the harness passes only the inputs); rows that share a question text are
    handed out one per call, so each is predicted and scored once with its own reference."""

    def __init__(self, predict: Any, rows: list[EvalRow], scorers: list[Any], judges: list[Any] | None = None,
                 judge_workers: int = 4, source_run_id: str | None = None, reference_source: str = "eval dataset",
                 on_row: Callable[[int], None] | None = None):
        self._predict = predict
        self._on_row = on_row
        self._scorers = list(scorers)
        self._judges = list(judges or [])
        self._source_run_id = source_run_id
        self._reference_source = reference_source
        self._pending: dict[str, deque[EvalRow]] = defaultdict(deque)
        for row in rows:
            self._pending[row.question].append(row)
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=max(1, judge_workers), thread_name_prefix="llmops-judge") \
            if self._judges else None
        self.results: dict[str, RowResult] = {}

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def _take(self, question: str) -> EvalRow:
        with self._lock:
            queue = self._pending.get(question)
            if not queue:
                raise KeyError(f"question is not a pending eval row: {question[:80]!r}")
            return queue.popleft()

    def __call__(self, question: str) -> dict[str, Any]:
        import mlflow

        row = self._take(question)
        with mlflow.start_span(name=ROOT_SPAN, span_type="CHAIN") as span:
            span.set_inputs({"question": question})
            started = time.perf_counter_ns()
            error = refused = ""
            try:
                response = as_response(self._predict(question))
            except InputError as exc:  # the chain's own input contract: no answer, as the server would give
                response, refused, failure = {"answer": "", "abstained": True}, f"{type(exc).__name__}: {exc}", exc
            except Exception as exc:  # noqa: BLE001 - recorded on the row; the trace ends in error below
                response, error, failure = {"answer": ""}, f"{type(exc).__name__}: {exc}", exc
            latency_ms = (time.perf_counter_ns() - started) / 1e6
            result = RowResult(row, span.trace_id, response, self.score(row, response, latency_ms), error, refused)
            self._attach(result)
            with self._lock:
                self.results[row.row_id] = result
            if self._on_row is not None:
                self._on_row(1)
            if error or refused:
                raise failure
            span.set_outputs(response)
        return response

    def score(self, row: EvalRow, response: dict[str, Any], latency_ms: float) -> dict[str, Score]:
        """Every scorer's value on this row (pure apart from the judges' calls)."""
        args = {"inputs": {"question": row.question}, "outputs": response,
                "expectations": {REFERENCE: row.reference}, "trace": None}
        futures = {j.name: self._pool.submit(_run, j, args) for j in self._judges} if self._pool else {}
        scores = {}
        for scorer in self._scorers:
            if isinstance(scorer, Latency):  # the prediction's own wall time: the root span is still open
                scores[scorer.name] = _score(scorer.of_duration(latency_ms))
            else:
                scores[scorer.name] = _run(scorer, args)
        for name, future in futures.items():
            scores[name] = future.result()
        return {name: score for name, score in scores.items() if score is not None}

    def _attach(self, result: RowResult) -> None:
        """The scores, the reference and the row id onto the open trace (written with it)."""
        import mlflow
        from mlflow.entities import AssessmentError, AssessmentSource, AssessmentSourceType, Expectation, Feedback
        from mlflow.tracing.constant import AssessmentMetadataKey

        metadata = {AssessmentMetadataKey.SOURCE_RUN_ID: self._source_run_id} if self._source_run_id else {}
        for name, score in result.scores.items():
            feedback = Feedback(
                name=name, value=score.value, rationale=score.rationale or None,
                source=score.source or AssessmentSource(AssessmentSourceType.CODE, source_id=name),
                error=AssessmentError(error_code="SCORER_ERROR", error_message=score.error) if score.error else None,
                metadata={**(score.metadata or {}), **metadata} or None)
            mlflow.log_assessment(trace_id=result.trace_id, assessment=feedback)
        mlflow.log_assessment(trace_id=result.trace_id, assessment=Expectation(
            name=REFERENCE, value=result.row.reference,
            source=AssessmentSource(AssessmentSourceType.HUMAN, source_id=self._reference_source),
            metadata=metadata or None))
        mlflow.update_current_trace(tags={ROW_TAG: result.row.row_id})


def _score(feedback: Any) -> Score | None:
    if feedback is None:  # nothing to judge (e.g. no code in the answer): no assessment
        return None
    if isinstance(feedback, list):
        feedback = feedback[0] if feedback else None
        if feedback is None:
            return None
    error = getattr(feedback, "error", None)
    source = getattr(feedback, "source", None)
    default_source = source is not None and getattr(source, "source_id", None) == "default"
    return Score(_value(feedback), str(getattr(feedback, "rationale", "") or ""),
                 str(getattr(error, "error_message", "") or "") if error else "",
                 None if default_source else source, dict(getattr(feedback, "metadata", None) or {}) or None)


def _run(scorer: Any, args: dict[str, Any]) -> Score | None:
    try:
        return _score(scorer.run(**args))
    except Exception as exc:  # noqa: BLE001 - a failing scorer is that row's error, as in MLflow's harness
        return Score(None, "", str(exc) or type(exc).__name__)
