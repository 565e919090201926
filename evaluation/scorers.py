"""MLflow GenAI scorers over the chain's response dict; offline and deterministic."""

from __future__ import annotations

from typing import Any

from mlflow.entities import Feedback
from mlflow.genai.scorers import scorer

from evaluation import metrics


def _answer(outputs: Any) -> str:
    return outputs.get("answer", "") if isinstance(outputs, dict) else str(outputs or "")


def _reference(expectations: dict[str, Any] | None) -> str:
    return (expectations or {}).get("expected_response", "")


@scorer
def exact_match(outputs: Any, expectations: dict[str, Any]) -> Feedback:
    value = metrics.exact_match(_answer(outputs), _reference(expectations))
    return Feedback(value=value, rationale="normalised answer equals the reference" if value else "differs")


@scorer
def token_f1(outputs: Any, expectations: dict[str, Any]) -> Feedback:
    value = metrics.token_f1(_answer(outputs), _reference(expectations))
    return Feedback(value=value, rationale=f"token overlap F1 with the reference: {value:.3f}")


@scorer
def rouge_l(outputs: Any, expectations: dict[str, Any]) -> Feedback:
    value = metrics.rouge_l(_answer(outputs), _reference(expectations))
    return Feedback(value=value, rationale=f"longest-common-subsequence F-measure: {value:.3f}")


@scorer
def abstained(outputs: Any) -> Feedback:
    value = float(bool(isinstance(outputs, dict) and outputs.get("abstained")))
    return Feedback(value=value, rationale="the model said it has no confident answer" if value else "answered")


@scorer
def cited(outputs: Any) -> Feedback:
    citations = outputs.get("citations", []) if isinstance(outputs, dict) else []
    value = float(bool(citations) and all(c.get("source_id") for c in citations))
    return Feedback(value=value, rationale=f"{len(citations)} citation(s)")


DEFAULT_SCORERS = [exact_match, token_f1, rouge_l, abstained, cited]
