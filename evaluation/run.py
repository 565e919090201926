"""Evaluate a target (a registered model URI, or the retrieval chain with a prompt version) on an eval dataset.

Everything goes into the active MLflow run: params (what was evaluated, on which dataset digest, judged by
which model), `mlflow.genai.evaluate`'s `<scorer>/mean` metrics plus bootstrap CIs (`<scorer>/ci_low`,
`/ci_high`, `/n`), run-level metrics (`coverage`, `answered_token_f1`, `answered_rouge_l`, `judge_errors`),
the per-row results table (`eval/rows.json`, keyed by row id, read back by compare and review) and PNG plots.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evaluation.dataset import EvalDataset, load_eval_dataset
from evaluation.scorers import METRICS, build_scorers
from evaluation.stats import Interval, bootstrap_mean
from llmops.errors import BackendError, ConfigError, NotFoundError
from llmops.tracking import download, log_dataset_input
from llmops.secrets import mask_urls

ROWS_ARTIFACT = "eval/rows.json"
ROW_TAG = "llmops.row_id"
SUMMARY_ARTIFACT = "eval/summary.json"


@dataclass
class Target:
    """What is evaluated: a function question -> response dict, and the params that identify it."""

    predict: Callable[[str], dict[str, Any]]
    params: dict[str, Any]
    known_sources: set[str] = field(default_factory=set)


@dataclass
class EvalOutcome:
    run_id: str
    metrics: dict[str, float]
    rows: Any  # pandas DataFrame, one row per eval row
    judge_errors: int
    judge_error_example: str = ""


def chain_target(retriever_uri: str, prompt_uri: str) -> Target:
    """The in-process chain: the tuned retriever and a pinned prompt version (what the registered model runs)."""
    from backends.retrieval import RetrievalAnswerer
    from prompts.chain import QAChain
    from prompts.registry import load_pinned

    prompt = load_pinned(prompt_uri)
    with tempfile.TemporaryDirectory() as tmp:
        answerer = RetrievalAnswerer.load(download(retriever_uri, Path(tmp)))
    chain = QAChain(answerer, prompt)
    return Target(chain.answer, {
        "retriever_uri": retriever_uri, "prompt_name": prompt.name, "prompt_version": prompt.version,
        "backend": "local", "chain": "qa_chain",
    }, known_sources=set(answerer.source_ids))


def model_target(model_uri: str) -> Target:
    """A logged or registered pyfunc model; a `models:/` URI is resolved to its version and bundle tags."""
    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException

    params: dict[str, Any] = {"model_uri": model_uri, "backend": "pyfunc"}
    if model_uri.startswith("models:/"):
        version = resolve_model_version(model_uri)
        params.update({"model_name": version.name, "model_version": version.version})
        for key in ("prompt_name", "prompt_version", "chain", "tune_run_id"):
            if f"llmops.{key}" in version.tags:
                params[key] = version.tags[f"llmops.{key}"]
    try:
        model = mlflow.pyfunc.load_model(model_uri)
    except (MlflowException, OSError) as exc:
        raise NotFoundError(f"model {model_uri} cannot be loaded: {getattr(exc, 'message', exc)}") from exc

    def predict(question: str) -> dict[str, Any]:
        out = model.predict([{"question": question}])
        return out[0] if isinstance(out, list) else out

    return Target(predict, params)


def resolve_model_version(model_uri: str):
    """`models:/name@alias` or `models:/name/3` -> the ModelVersion (NotFoundError when absent)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    rest = model_uri.removeprefix("models:/")
    client = MlflowClient()
    try:
        if "@" in rest:
            name, alias = rest.split("@", 1)
            return client.get_model_version_by_alias(name, alias)
        name, _, version = rest.partition("/")
        if not version:
            raise ConfigError(f"model URI {model_uri} needs a version or an alias (models:/name@alias)")
        return client.get_model_version(name, version)
    except MlflowException as exc:
        raise NotFoundError(f"model {model_uri} not found: {exc.message.splitlines()[0]}") from exc


def _to_float(value: Any) -> float:
    if value is None or isinstance(value, str):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def rows_table(result_df: Any, dataset: EvalDataset, scorer_names: list[str]) -> Any:
    """The per-row table: ids, texts, the response, and each scorer's value/rationale/error."""
    import pandas as pd

    by_id = {row.row_id: row for row in dataset.rows}
    by_question: dict[str, list[str]] = {}
    for row in dataset.rows:
        by_question.setdefault(row.question, []).append(row.row_id)
    records = []
    for position, item in enumerate(result_df.to_dict("records")):
        tags = item.get("tags") if isinstance(item.get("tags"), dict) else {}
        row_id = tags.get(ROW_TAG) or _row_id_of(item, position, dataset, by_question)
        response = item.get("response") if isinstance(item.get("response"), dict) else {"answer": item.get("response")}
        record = {
            "row_id": row_id, "trace_id": item.get("trace_id"),
            "question": by_id[row_id].question, "reference": by_id[row_id].reference,
            "answer": str(response.get("answer", "")), "response_abstained": bool(response.get("abstained", False)),
            "citations": ",".join(str(c.get("source_id")) for c in response.get("citations") or []),
        }
        for name in scorer_names:
            record[name] = _to_float(item.get(f"{name}/value"))
            error = item.get(f"{name}/error_message")
            record[f"{name}/error"] = error if isinstance(error, str) else ""
            rationale = item.get(f"{name}/rationale")
            record[f"{name}/rationale"] = rationale if isinstance(rationale, str) else ""
        records.append(record)
    return pd.DataFrame.from_records(records)


def _row_id_of(item: dict[str, Any], position: int, dataset: EvalDataset, by_question: dict[str, list[str]]) -> str:
    """Fallback when the row tag is missing: the question text if unique, else the dataset position."""
    request = item.get("request") if isinstance(item.get("request"), dict) else {}
    ids = by_question.get(str(request.get("question", "")), [])
    if len(ids) == 1:
        return ids[0]
    return dataset.rows[position].row_id


def answered_metrics(rows: Any) -> dict[str, float]:
    """Quality where the model did answer: abstentions are judged by coverage, not by F1 against the reference."""
    from evaluation.metrics import rouge_l, token_f1

    answered = rows[~rows["response_abstained"].astype(bool)]
    n = len(answered)
    return {
        "coverage": n / len(rows) if len(rows) else 0.0,
        "answered_token_f1": sum(token_f1(a, r) for a, r in zip(answered["answer"], answered["reference"],
                                                                strict=True)) / n if n else 0.0,
        "answered_rouge_l": sum(rouge_l(a, r) for a, r in zip(answered["answer"], answered["reference"],
                                                              strict=True)) / n if n else 0.0,
    }


def evaluate_target(target: Target, dataset: EvalDataset, *, settings: Any, judges: list[Any] | None = None,
                    judge_model: str | None = None, known_sources: set[str] | None = None,
                    extra_params: dict[str, Any] | None = None) -> EvalOutcome:
    """Evaluate into the active run and return its metrics and per-row table."""
    import mlflow
    import mlflow.genai

    from evaluation.plots import metric_bars

    cfg = settings.evaluation
    sources = known_sources if known_sources is not None else target.known_sources
    scorers = build_scorers(references=[r.reference for r in dataset.rows], known_sources=sources,
                            similarity=cfg.similarity, price_model=cfg.price_model, prices=cfg.prices)
    scorers += list(judges or [])
    names = [s.name for s in scorers]
    run = mlflow.active_run()
    if run is None:
        raise ConfigError("evaluate_target needs an active MLflow run")
    mlflow.log_params(mask_urls({
        **target.params, **(extra_params or {}), "eval_uri": dataset.uri, "eval_digest": dataset.digest,
        "n_eval": len(dataset.rows), "judge_model": judge_model or "none", "scorers": ",".join(names),
        "similarity": cfg.similarity, "price_model": cfg.price_model,
    }))
    _log_eval_input(dataset)

    @mlflow.trace(name="qa_chain", span_type="CHAIN")
    def predict(question: str) -> dict[str, Any]:
        return target.predict(question)

    data = [{**row.record(), "tags": {ROW_TAG: row.row_id}} for row in dataset.rows]
    # Each row is predicted once; MLflow otherwise calls predict_fn again to validate tracing.
    os.environ.setdefault("MLFLOW_GENAI_EVAL_SKIP_TRACE_VALIDATION", "true")
    # MLflow's defaults (10 row workers x 10 scorer workers) exhaust a SQLite store's connection pool and drop
    # traces; deterministic scorers are fast, so run them one after another within a row.
    os.environ["MLFLOW_GENAI_EVAL_MAX_WORKERS"] = str(cfg.workers)
    os.environ["MLFLOW_GENAI_EVAL_MAX_SCORER_WORKERS"] = str(max(1, len(judges or [])))
    result = mlflow.genai.evaluate(data=data, predict_fn=predict, scorers=scorers)
    if len(result.result_df) != len(dataset.rows):
        raise BackendError(f"MLflow recorded {len(result.result_df)} of {len(dataset.rows)} rows (traces lost); "
                           "lower evaluation.workers or use a tracking server")
    rows = rows_table(result.result_df, dataset, names)

    metrics = {k: float(v) for k, v in result.metrics.items() if isinstance(v, (int, float))}
    summary: dict[str, Interval] = {}
    for name in names:
        interval = bootstrap_mean(rows[name].to_numpy(), samples=cfg.bootstrap_samples, confidence=cfg.confidence,
                                  seed=cfg.seed)
        summary[name] = interval
        if interval.n:
            metrics.update({f"{name}/ci_low": interval.low, f"{name}/ci_high": interval.high})
        metrics[f"{name}/n"] = float(interval.n)
    judge_names = {j.name for j in judges or []}
    errors = rows[[f"{n}/error" for n in judge_names]] if judge_names else None
    judge_errors = int((errors != "").to_numpy().sum()) if errors is not None else 0
    example = ""
    if judge_errors:
        stacked = errors.stack()
        first = stacked[stacked != ""]
        idx, col = first.index[0]
        example = f"row {rows.loc[idx, 'row_id']} ({col.split('/')[0]}): {first.iloc[0]}"
    metrics.update({**answered_metrics(rows), "n_rows": float(len(rows)), "judge_errors": float(judge_errors)})
    mlflow.log_metrics({k: v for k, v in metrics.items() if math.isfinite(v)})

    mlflow.log_table(rows, artifact_file=ROWS_ARTIFACT)
    mlflow.log_dict({name: vars(iv) for name, iv in summary.items()}, SUMMARY_ARTIFACT)
    quality = {n: iv for n, iv in summary.items() if METRICS.get(n) is None or METRICS[n].unit_interval}
    operations = {n: iv for n, iv in summary.items() if n not in quality}
    mlflow.log_figure(metric_bars(quality, "quality", cfg.confidence), "plots/quality.png")
    if operations:
        mlflow.log_figure(metric_bars(operations, "operations", cfg.confidence), "plots/operations.png")
    mlflow.set_tags({"llmops.step": "evaluate", "llmops.eval_digest": dataset.digest,
                     "llmops.eval_rows": ROWS_ARTIFACT})
    return EvalOutcome(run.info.run_id, metrics, rows, judge_errors, example)


def _log_eval_input(dataset: EvalDataset) -> None:
    """The rows' lineage in the MLflow UI (name `eval`, the eval digest); a source MLflow cannot name is skipped."""
    from mlflow.exceptions import MlflowException

    try:
        log_dataset_input(dataset.uri, "eval", dataset.digest,
                          {"id": "string", "question": "string", "reference": "string"}, "evaluation")
    except (MlflowException, NotFoundError) as exc:
        logging.getLogger(__name__).warning("eval dataset %s not logged as a run input: %s", dataset.uri, exc)


def run_evaluate_step(retriever_uri: str, eval_uri: str, train_uri: str | None = None, *,
                      prompt_uri: str | None = None, settings: Any = None, judges: list[Any] | None = None,
                      judge_model: str | None = None, limit: int | None = None) -> dict[str, float]:
    """The pipeline's evaluate step: the chain with the dataset's prompt version (or `prompt_uri`)."""
    import mlflow

    from llmops.settings import load_settings
    from projects.data.transform import dataset_digest
    from llmops.dataset import prompt_of, read_examples

    settings = settings or load_settings()
    dataset = load_eval_dataset(eval_uri, limit=limit)
    extra: dict[str, Any] = {}
    known_sources = None
    if prompt_uri is None:
        examples = read_examples(eval_uri)
        prompt_name, prompt_version, _ = prompt_of(examples)
        prompt_uri = f"prompts:/{prompt_name}/{prompt_version}"
        train = read_examples(train_uri) if train_uri else []
        extra["dataset_digest"] = dataset_digest(examples + train)
        if train:
            known_sources = {str(e["question_id"]) for e in train}
            extra["train_uri"] = train_uri
    elif train_uri:
        known_sources = train_source_ids(train_uri)
        extra["train_uri"] = train_uri
    target = chain_target(retriever_uri, prompt_uri)
    outcome = evaluate_target(target, dataset, settings=settings, judges=judges, judge_model=judge_model,
                              known_sources=known_sources, extra_params=extra)
    mlflow.set_tags({"llmops.retriever_uri": retriever_uri,
                     **({"llmops.dataset_digest": extra["dataset_digest"]} if "dataset_digest" in extra else {})})
    raise_on_judge_errors(outcome)
    return outcome.metrics


def train_source_ids(train_uri: str) -> set[str]:
    """Source ids a citation may point to: the question ids of the training split."""
    from evaluation.dataset import load_eval_dataset as _load

    data = _load(train_uri)
    return {str(item.get("question_id", row.row_id)) for item, row in zip(data.raw, data.rows, strict=True)}


def raise_on_judge_errors(outcome: EvalOutcome) -> None:
    if outcome.judge_errors:
        raise BackendError(f"{outcome.judge_errors} judge call(s) failed or returned unparseable output "
                           f"(first: {outcome.judge_error_example}); those rows have no judge score "
                           f"(run {outcome.run_id})")
