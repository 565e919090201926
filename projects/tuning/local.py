"""Tuning the local retrieval backend: fit the index on train, choose the abstention threshold on eval."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from backends.retrieval import RetrievalAnswerer, choose_threshold
from evaluation.metrics import token_f1
from llmops.tracking import storage_uri
from projects.data.transform import dataset_digest
from projects.datasets import prompt_of, read_examples

RETRIEVER_ARTIFACT = "retriever"


@dataclass(frozen=True)
class TuneResult:
    answerer: RetrievalAnswerer
    metrics: dict[str, float]


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
    return TuneResult(answerer, metrics)


def run_tune_step(train_uri: str, eval_uri: str, vectorizer: str, abstain_value: float) -> str:
    """Fit, log params/metrics/artifact to the active run; returns the retriever artifact URI."""
    import mlflow
    import mlflow.data
    import pandas as pd

    train, evaluation = read_examples(train_uri), read_examples(eval_uri)
    prompt_name, prompt_version, instruction_hash = prompt_of(train + evaluation)
    digest = dataset_digest(train + evaluation)
    run_id = mlflow.active_run().info.run_id
    mlflow.log_params({
        "backend": "local", "model": "retrieval", "vectorizer": vectorizer, "abstain_value": abstain_value,
        "train_uri": train_uri, "eval_uri": eval_uri, "dataset_digest": digest,
        "prompt_name": prompt_name, "prompt_version": prompt_version, "instruction_hash": instruction_hash,
    })
    for split, rows, uri in (("train", train, train_uri), ("eval", evaluation, eval_uri)):
        frame = pd.DataFrame(rows)[["id", "input_text", "output_text"]]
        mlflow.log_input(_from_pandas(frame, source=storage_uri(uri), name=f"so-qa-{split}", digest=digest),
                         context="training" if split == "train" else "evaluation")
    result = tune_retrieval(train, evaluation, vectorizer, abstain_value)
    mlflow.log_metrics(result.metrics)
    with tempfile.TemporaryDirectory() as tmp:
        mlflow.log_artifacts(str(result.answerer.save(Path(tmp) / RETRIEVER_ARTIFACT)), RETRIEVER_ARTIFACT)
    uri = f"runs:/{run_id}/{RETRIEVER_ARTIFACT}"
    mlflow.set_tags({"llmops.step": "tune", "llmops.dataset_digest": digest, "llmops.retriever_uri": uri,
                     "llmops.eval_uri": eval_uri})
    return uri


def _from_pandas(*args, **kwargs):
    """mlflow.data.from_pandas, without its warning that two local source types both match."""
    import warnings

    import mlflow.data

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
        return mlflow.data.from_pandas(*args, **kwargs)
