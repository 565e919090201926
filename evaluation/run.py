"""Evaluate a target (a tuning run's chain, or a registered model) on an eval dataset, beside its baselines.

Everything goes into the active MLflow run: params (what was evaluated, on which dataset - digest, scope,
lineage -, judged by which model), `mlflow.genai.evaluate`'s `<scorer>/mean` metrics plus bootstrap CIs
(`<scorer>/ci_low`, `/ci_high`, `/n`), run-level metrics (`coverage`, `answered_token_f1`, `answered_rouge_l`,
`utility`, `n_rows`, `n_train`, `judge_errors`), the baselines scored on the same rows (`baseline/<name>/...`)
and the model's paired lead over each (`vs/<name>/<metric>/{delta,ci_low,ci_high,n}`), the per-row results table
(`eval/rows.json`, keyed by row id, with the baselines' per-row scores; read back by compare, review and the
champion comparison) and PNG plots.
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

from evaluation.baselines import (
    BASELINE_COLUMN,
    BaselineRows,
    always_abstain,
    random_answer,
    relative_metrics,
    utility_rows,
)
from evaluation.dataset import EvalDataset, load_eval_dataset
from evaluation.scorers import METRICS, build_scorers
from evaluation.stats import Interval, bootstrap_mean
from llmops.errors import BackendError, ConfigError, NotFoundError
from llmops.secrets import mask_urls
from llmops.tracking import log_dataset_input

ROWS_ARTIFACT = "eval/rows.json"
ROW_TAG = "llmops.row_id"
SUMMARY_ARTIFACT = "eval/summary.json"
BASELINE_DRAWS = 5


@dataclass
class Target:
    """What is evaluated: question -> response dict, the params that identify it, and what its training data
    offers the baselines and citation checks (source ids, answers)."""

    predict: Callable[[str], dict[str, Any]]
    params: dict[str, Any]
    name: str
    known_sources: set[str] = field(default_factory=set)
    train_answers: list[str] = field(default_factory=list)


@dataclass
class EvalOutcome:
    run_id: str
    metrics: dict[str, float]
    rows: Any  # pandas DataFrame, one row per eval row
    judge_errors: int
    judge_error_example: str = ""


def train_info(train_uri: str | None) -> tuple[set[str], list[str], int]:
    """(source ids a citation may name, answers for the random baseline, row count) of a train split."""
    if not train_uri:
        return set(), [], 0
    from llmops.dataset import read_examples

    rows = read_examples(train_uri)
    return {str(r["question_id"]) for r in rows}, [str(r["answer"]) for r in rows], len(rows)


def spec_target(spec: Any, prompt: Any, settings: Any, *, train_uri: str | None = None,
                params: dict[str, Any] | None = None, client: Any = None) -> Target:
    """The chain a provider spec describes, built exactly as the registered model will build it."""
    from llmops.tracking import download
    from prompts.chain import build_chain, chain_config, config_fingerprint

    config = chain_config(spec, prompt, settings.chain)
    with tempfile.TemporaryDirectory() as tmp:
        local = {name: str(download(uri, Path(tmp) / name)) for name, uri in spec.artifacts.items()}
        chain = build_chain(config, local, client=client)  # indexes and weights are in memory after this
    sources, answers, n_train = train_info(train_uri)
    return Target(chain.answer, {
        "provider_kind": spec.kind, "chain": config["chain"], "model_id": config["model_id"],
        "prompt_name": prompt.name, "prompt_version": prompt.version, "chain_config": config_fingerprint(config),
        **({"train_uri": train_uri, "n_train": n_train} if train_uri else {}), **(params or {}),
    }, name=f"{spec.kind} {config['model_id']}", known_sources=sources, train_answers=answers)


def tune_run_target(tune_run_id: str, settings: Any, client: Any = None) -> Target:
    """The chain of a finished tuning run: its provider spec, with its dataset's pinned prompt."""
    from llmops.provider_spec import spec_of_run
    from llmops.tracking import get_run
    from prompts.registry import load_pinned

    run = get_run(tune_run_id)
    if run.info.status != "FINISHED":
        raise ConfigError(f"tuning run {tune_run_id} is {run.info.status}, not FINISHED")
    spec = spec_of_run(run)
    params = run.data.params
    prompt_uri = settings.chain.prompt_uri or f"prompts:/{params['prompt_name']}/{params['prompt_version']}"
    return spec_target(spec, load_pinned(prompt_uri), settings, train_uri=params.get("train_uri"),
                       params={"tune_run_id": tune_run_id, "tuning_backend": params.get("tuning.backend", "")},
                       client=client)


def model_target(model_uri: str) -> Target:
    """A logged or registered pyfunc model; a `models:/` URI is resolved to its version and bundle tags."""
    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException

    params: dict[str, Any] = {"model_uri": model_uri, "provider_kind": "pyfunc"}
    train_uri = None
    if model_uri.startswith("models:/"):
        version = resolve_model_version(model_uri)
        params.update({"model_name": version.name, "model_version": version.version})
        for key in ("prompt_name", "prompt_version", "chain", "tune_run_id", "provider", "chain_config"):
            if f"llmops.{key}" in version.tags:
                params["provider_kind" if key == "provider" else key] = version.tags[f"llmops.{key}"]
        train_uri = _tune_run_param(version.tags.get("llmops.tune_run_id"), "train_uri")
    try:
        model = mlflow.pyfunc.load_model(model_uri)
    except (MlflowException, OSError) as exc:
        raise NotFoundError(f"model {model_uri} cannot be loaded: {getattr(exc, 'message', exc)}") from exc

    def predict(question: str) -> dict[str, Any]:
        out = model.predict([{"question": question}])
        return out[0] if isinstance(out, list) else out

    sources, answers, n_train = train_info(train_uri)
    if train_uri:
        params.update(train_uri=train_uri, n_train=n_train)
    return Target(predict, params, name=model_uri, known_sources=sources, train_answers=answers)


def _tune_run_param(run_id: str | None, key: str) -> str | None:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    if not run_id:
        return None
    try:
        return MlflowClient().get_run(run_id).data.params.get(key)
    except MlflowException:
        return None


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
    # rows in dataset order, whatever order MLflow returned them in: baselines align with them by position
    order = {row.row_id: i for i, row in enumerate(dataset.rows)}
    return pd.DataFrame.from_records(sorted(records, key=lambda r: order[r["row_id"]])).reset_index(drop=True)


def _row_id_of(item: dict[str, Any], position: int, dataset: EvalDataset, by_question: dict[str, list[str]]) -> str:
    """Fallback when the row tag is missing: the question text if unique, else the dataset position."""
    request = item.get("request") if isinstance(item.get("request"), dict) else {}
    ids = by_question.get(str(request.get("question", "")), [])
    if len(ids) == 1:
        return ids[0]
    return dataset.rows[position].row_id


def answered_metrics(rows: Any) -> dict[str, float]:
    """Quality where the model did answer: abstentions are judged by coverage, not by F1 against the reference."""
    answered = rows[~rows["response_abstained"].astype(bool)]
    n = len(answered)
    return {
        "coverage": n / len(rows) if len(rows) else 0.0,
        "answered_token_f1": float(answered["token_f1"].mean()) if n else 0.0,
        "answered_rouge_l": float(answered["rouge_l"].mean()) if n else 0.0,
        "utility": float(rows["utility"].mean()) if len(rows) else 0.0,
    }


def score_summary(result_metrics: dict[str, Any], rows: Any, names: list[str], cfg: Any) -> tuple[
        dict[str, float], dict[str, Interval]]:
    """Pure: the run's metrics from MLflow's aggregates and the per-row table (CIs by seeded bootstrap)."""
    metrics = {k: float(v) for k, v in result_metrics.items() if isinstance(v, (int, float))}
    summary: dict[str, Interval] = {}
    for name in names:
        interval = bootstrap_mean(rows[name].to_numpy(), samples=cfg.bootstrap_samples, confidence=cfg.confidence,
                                  seed=cfg.seed)
        summary[name] = interval
        if interval.n:
            metrics.update({f"{name}/ci_low": interval.low, f"{name}/ci_high": interval.high})
        metrics[f"{name}/n"] = float(interval.n)
    metrics.update({**answered_metrics(rows), "n_rows": float(len(rows))})
    return metrics, summary


def judge_errors_of(rows: Any, judge_names: set[str]) -> tuple[int, str]:
    if not judge_names:
        return 0, ""
    errors = rows[[f"{n}/error" for n in judge_names]]
    count = int((errors != "").to_numpy().sum())
    if not count:
        return 0, ""
    stacked = errors.stack()
    first = stacked[stacked != ""]
    idx, col = first.index[0]
    return count, f"row {rows.loc[idx, 'row_id']} ({col.split('/')[0]}): {first.iloc[0]}"


def baseline_rows(dataset: EvalDataset, train_answers: list[str], abstain_value: float, seed: int) -> list[
        BaselineRows]:
    references = [row.reference for row in dataset.rows]
    out = [always_abstain(len(references), abstain_value)]
    if train_answers:
        out.insert(0, random_answer(references, train_answers, abstain_value, draws=BASELINE_DRAWS, seed=seed))
    return out


def evaluate_target(target: Target, dataset: EvalDataset, *, settings: Any, judges: list[Any] | None = None,
                    judge_model: str | None = None, known_sources: set[str] | None = None,
                    extra_params: dict[str, Any] | None = None) -> EvalOutcome:
    """Evaluate into the active run and return its metrics and per-row table."""
    import mlflow
    import mlflow.genai

    cfg = settings.evaluation
    abstain_value = settings.backend.abstain_value
    sources = known_sources if known_sources is not None else target.known_sources
    scorers = build_scorers(references=[r.reference for r in dataset.rows], known_sources=sources,
                            similarity=cfg.similarity, price_model=cfg.price_model, prices=cfg.prices)
    scorers += list(judges or [])
    names = [s.name for s in scorers]
    run = mlflow.active_run()
    if run is None:
        raise ConfigError("evaluate_target needs an active MLflow run")
    params = {**target.params, **(extra_params or {}), "eval_uri": dataset.uri, "eval_digest": dataset.digest,
              **dataset.identity.as_params(), "n_eval": len(dataset.rows), "judge_model": judge_model or "none",
              "scorers": ",".join(names), "similarity": cfg.similarity, "price_model": cfg.price_model,
              "abstain_value": abstain_value, "baseline_draws": BASELINE_DRAWS if target.train_answers else 0}
    mlflow.log_params(mask_urls({k: v for k, v in params.items() if v not in ("", None)}))
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
    rows["utility"] = utility_rows(rows["token_f1"].to_numpy(dtype=float),
                                   rows["response_abstained"].to_numpy(dtype=bool), abstain_value)
    metrics, summary = score_summary(result.metrics, rows, names, cfg)
    baselines = baseline_rows(dataset, target.train_answers, abstain_value, cfg.seed)
    for base in baselines:
        for column in ("token_f1", "rouge_l", "utility"):
            rows[BASELINE_COLUMN.format(baseline=base.name, column=column)] = base.column(column)
    metrics.update(relative_metrics(rows, baselines, abstain_value, samples=cfg.bootstrap_samples,
                                    confidence=cfg.confidence, seed=cfg.seed))
    if target.params.get("n_train") is not None:
        metrics["n_train"] = float(target.params["n_train"])
    judge_errors, example = judge_errors_of(rows, {j.name for j in judges or []})
    metrics["judge_errors"] = float(judge_errors)
    _log_outcome(metrics, rows, summary, cfg, dataset)
    return EvalOutcome(run.info.run_id, metrics, rows, judge_errors, example)


def _log_outcome(metrics: dict[str, float], rows: Any, summary: dict[str, Interval], cfg: Any,
                 dataset: EvalDataset) -> None:
    import mlflow

    from evaluation.plots import metric_bars

    mlflow.log_metrics({k: v for k, v in metrics.items() if math.isfinite(v)})
    mlflow.log_table(rows, artifact_file=ROWS_ARTIFACT)
    mlflow.log_dict({name: vars(iv) for name, iv in summary.items()}, SUMMARY_ARTIFACT)
    quality = {n: iv for n, iv in summary.items() if METRICS.get(n) is None or METRICS[n].unit_interval}
    operations = {n: iv for n, iv in summary.items() if n not in quality}
    mlflow.log_figure(metric_bars(quality, "quality", cfg.confidence), "plots/quality.png")
    if operations:
        mlflow.log_figure(metric_bars(operations, "operations", cfg.confidence), "plots/operations.png")
    mlflow.set_tags({"llmops.step": "evaluate", "llmops.eval_digest": dataset.digest,
                     "llmops.eval_rows": ROWS_ARTIFACT, **dataset.identity.as_tags()})


def _log_eval_input(dataset: EvalDataset) -> None:
    """The rows' lineage in the MLflow UI (name `eval`, the eval digest); a source MLflow cannot name is skipped."""
    from mlflow.exceptions import MlflowException

    try:
        log_dataset_input(dataset.uri, "eval", dataset.digest,
                          {"id": "string", "question": "string", "reference": "string"}, "evaluation")
    except (MlflowException, NotFoundError) as exc:
        logging.getLogger(__name__).warning("eval dataset %s not logged as a run input: %s", dataset.uri, exc)


def run_evaluate_step(tune_run_id: str, eval_uri: str, *, settings: Any, judges: list[Any] | None = None,
                      judge_model: str | None = None, limit: int | None = None, client: Any = None) -> EvalOutcome:
    """The pipeline's evaluate step: the tuning run's chain, as it will be registered, on the eval split."""
    import mlflow

    target = tune_run_target(tune_run_id, settings, client=client)
    dataset = load_eval_dataset(eval_uri, limit=limit)
    mlflow.set_tag("mlflow.runName", f"eval {target.name}")
    outcome = evaluate_target(target, dataset, settings=settings, judges=judges, judge_model=judge_model)
    mlflow.set_tags({"llmops.tune_run_id": tune_run_id})
    raise_on_judge_errors(outcome)
    return outcome


def raise_on_judge_errors(outcome: EvalOutcome) -> None:
    if outcome.judge_errors:
        raise BackendError(f"{outcome.judge_errors} judge call(s) failed or returned unparseable output "
                           f"(first: {outcome.judge_error_example}); those rows have no judge score "
                           f"(run {outcome.run_id})")

