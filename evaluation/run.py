"""The evaluate step: run the chain on the eval split with `mlflow.genai.evaluate` and code scorers."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from backends.retrieval import RetrievalAnswerer
from evaluation.scorers import DEFAULT_SCORERS
from llmops.tracking import download
from projects.data.transform import dataset_digest
from projects.datasets import prompt_of, read_examples
from prompts.chain import QAChain
from prompts.registry import load_pinned


def eval_records(examples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"inputs": {"question": e["question"]}, "expectations": {"expected_response": e["answer"]}}
            for e in examples]


def run_evaluate_step(retriever_uri: str, eval_uri: str, train_uri: str | None = None) -> dict[str, float]:
    """Evaluate into the active run; returns its metrics (e.g. `token_f1/mean`)."""
    import mlflow
    import mlflow.genai

    examples = read_examples(eval_uri)
    prompt_name, prompt_version, _ = prompt_of(examples)
    prompt = load_pinned(f"prompts:/{prompt_name}/{prompt_version}")
    with tempfile.TemporaryDirectory() as tmp:
        answerer = RetrievalAnswerer.load(download(retriever_uri, Path(tmp)))
    chain = QAChain(answerer, prompt)
    digest = dataset_digest(examples + (read_examples(train_uri) if train_uri else []))
    mlflow.log_params({
        "retriever_uri": retriever_uri, "eval_uri": eval_uri, "dataset_digest": digest,
        "prompt_name": prompt.name, "prompt_version": prompt.version, "backend": "local",
        "n_eval": len(examples),
    })

    responses: dict[str, dict[str, Any]] = {}

    @mlflow.trace(name="qa_chain", span_type="CHAIN")
    def predict(question: str) -> dict[str, Any]:
        responses[question] = chain.answer(question)
        return responses[question]

    # Each row is predicted once; MLflow otherwise calls predict_fn again to validate tracing.
    os.environ.setdefault("MLFLOW_GENAI_EVAL_SKIP_TRACE_VALIDATION", "true")
    result = mlflow.genai.evaluate(data=eval_records(examples), predict_fn=predict, scorers=DEFAULT_SCORERS)
    answered = answered_metrics(examples, responses)
    mlflow.log_metrics(answered)
    mlflow.set_tags({"llmops.step": "evaluate", "llmops.dataset_digest": digest,
                     "llmops.retriever_uri": retriever_uri})
    metrics = {k: float(v) for k, v in result.metrics.items() if isinstance(v, (int, float))}
    return {**metrics, **answered}


def answered_metrics(examples: list[dict[str, Any]], responses: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Quality where the model did answer: abstentions are judged by coverage, not by F1 against the reference."""
    from evaluation.metrics import rouge_l, token_f1

    pairs = [(responses[e["question"]], e["answer"]) for e in examples if e["question"] in responses]
    answered = [(r["answer"], ref) for r, ref in pairs if not r["abstained"]]
    return {
        "coverage": len(answered) / len(pairs) if pairs else 0.0,
        "answered_token_f1": sum(token_f1(a, ref) for a, ref in answered) / len(answered) if answered else 0.0,
        "answered_rouge_l": sum(rouge_l(a, ref) for a, ref in answered) / len(answered) if answered else 0.0,
    }
