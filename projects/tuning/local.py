"""Tuning the local retrieval backend: fit the index on train, choose the abstention threshold on eval."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from backends.retrieval import RetrievalAnswerer, choose_threshold
from evaluation.metrics import token_f1
from projects.tuning.common import TuningData, load_tuning_data
from projects.tuning.tracking import log_series, log_tuning_inputs

RETRIEVER_ARTIFACT = "retriever"


@dataclass(frozen=True)
class TuneResult:
    answerer: RetrievalAnswerer
    metrics: dict[str, float]
    utility_curve: list[tuple[float, float]] = field(default_factory=list)


def utility_curve(sims: np.ndarray, quality: np.ndarray, abstain_value: float,
                  points: int = 21) -> list[tuple[float, float]]:
    """Mean utility on eval at evenly spaced thresholds: the curve the threshold choice maximises."""
    return [(float(t), float(np.where(sims >= t, quality, abstain_value).mean()))
            for t in np.linspace(0.0, 1.0, points)]


def tune_retrieval(train: list[dict[str, Any]], evaluation: list[dict[str, Any]], vectorizer: str,
                   abstain_value: float) -> TuneResult:
    answerer = RetrievalAnswerer.fit(train, vectorizer)
    best, sims = answerer.nearest([e["question"] for e in evaluation])
    quality = np.array([token_f1(answerer.answers[i], e["answer"]) for i, e in zip(best, evaluation, strict=True)])
    threshold = choose_threshold(sims, quality, abstain_value)
    answerer.threshold = threshold
    answered = sims >= threshold
    metrics = {
        "threshold": threshold,
        "eval_coverage": float(answered.mean()),
        "eval_answered_token_f1": float(quality[answered].mean()) if answered.any() else 0.0,
        "eval_utility": float(np.where(answered, quality, abstain_value).mean()),
        "index_size": float(len(train)),
    }
    return TuneResult(answerer, metrics, utility_curve(np.asarray(sims), quality, abstain_value))


def run_tune_step(train_uri: str, eval_uri: str, vectorizer: str, abstain_value: float,
                  data: TuningData | None = None) -> str:
    """Fit, log params/metrics/curve/artifact to the active run; returns the retriever artifact URI."""
    import mlflow

    data = data or load_tuning_data(train_uri, eval_uri)
    run_id = mlflow.active_run().info.run_id
    log_tuning_inputs("local", f"retrieval-{vectorizer}", {"vectorizer": vectorizer, "abstain_value": abstain_value},
                      data)
    result = tune_retrieval(data.train, data.eval, vectorizer, abstain_value)
    mlflow.log_metrics(result.metrics)
    # Thresholds 0..1 as steps 0..20: MLflow plots the utility the threshold choice maximised.
    log_series({"eval_utility_at_threshold": [(i, u) for i, (_t, u) in enumerate(result.utility_curve)]})
    with tempfile.TemporaryDirectory() as tmp:
        mlflow.log_artifacts(str(result.answerer.save(Path(tmp) / RETRIEVER_ARTIFACT)), RETRIEVER_ARTIFACT)
    uri = f"runs:/{run_id}/{RETRIEVER_ARTIFACT}"
    mlflow.set_tags({"llmops.retriever_uri": uri})
    return uri
