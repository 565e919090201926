"""Tuning the local retrieval backend: choose the abstention threshold on validation, then fit the final index.

The threshold is chosen with an index fitted on train minus the validation split and scored on that validation
split (its questions are not in the index, as eval and production questions are not); the final index then holds
every train row with the chosen threshold. The eval split is never looked at here: it is what gets gated.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from backends.retrieval import RetrievalAnswerer, choose_threshold
from evaluation.metrics import token_f1
from projects.tuning.common import TuningData
from projects.tuning.tracking import log_series, log_tuning_inputs

RETRIEVER_ARTIFACT = "retriever"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TuneResult:
    answerer: RetrievalAnswerer
    metrics: dict[str, float]
    utility_curve: list[tuple[float, float]] = field(default_factory=list)


def utility_curve(sims: np.ndarray, quality: np.ndarray, abstain_value: float,
                  points: int = 21) -> list[tuple[float, float]]:
    """Mean utility on validation at evenly spaced thresholds: the curve the threshold choice maximises."""
    return [(float(t), float(np.where(sims >= t, quality, abstain_value).mean()))
            for t in np.linspace(0.0, 1.0, points)]


def tune_retrieval(fit: list[dict[str, Any]], validation: list[dict[str, Any]], train: list[dict[str, Any]],
                   vectorizer: str, abstain_value: float) -> TuneResult:
    """Threshold from (fit -> validation); the returned answerer is fitted on all of `train`."""
    final = RetrievalAnswerer.fit(train, vectorizer)
    if not validation or not fit:
        log.warning("no validation rows to choose the abstention threshold on (train has %d rows); "
                    "answering everything (threshold 0)", len(train))
        return TuneResult(final, {"threshold": 0.0, "validation_rows": float(len(validation)),
                                  "index_size": float(len(train))})
    probe = RetrievalAnswerer.fit(fit, vectorizer)
    best, sims = probe.nearest([e["question"] for e in validation])
    quality = np.array([token_f1(probe.answers[i], e["answer"]) for i, e in zip(best, validation, strict=True)])
    threshold = choose_threshold(sims, quality, abstain_value)
    final.threshold = threshold
    answered = sims >= threshold
    metrics = {
        "threshold": threshold,
        "validation_rows": float(len(validation)),
        "validation_coverage": float(answered.mean()),
        "validation_answered_token_f1": float(quality[answered].mean()) if answered.any() else 0.0,
        "validation_utility": float(np.where(answered, quality, abstain_value).mean()),
        "index_size": float(len(train)),
    }
    return TuneResult(final, metrics, utility_curve(np.asarray(sims), quality, abstain_value))


def run_tune_step(data: TuningData, vectorizer: str, abstain_value: float) -> str:
    """Fit, log params/metrics/curve/artifact to the active run; returns the retriever artifact URI."""
    import mlflow

    run_id = mlflow.active_run().info.run_id
    log_tuning_inputs("local", f"retrieval-{vectorizer}", {"vectorizer": vectorizer, "abstain_value": abstain_value},
                      data)
    result = tune_retrieval(data.fit, data.validation, data.train, vectorizer, abstain_value)
    mlflow.log_metrics(result.metrics)
    if result.utility_curve:  # thresholds 0..1 as steps 0..20: the utility the threshold choice maximised
        log_series({"validation_utility_at_threshold": [(i, u) for i, (_t, u) in enumerate(result.utility_curve)]})
    with tempfile.TemporaryDirectory() as tmp:
        mlflow.log_artifacts(str(result.answerer.save(Path(tmp) / RETRIEVER_ARTIFACT)), RETRIEVER_ARTIFACT)
    uri = f"runs:/{run_id}/{RETRIEVER_ARTIFACT}"
    mlflow.set_tags({"llmops.retriever_uri": uri})
    return uri
