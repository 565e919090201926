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

import contextlib
import io
import logging
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.baselines import (
    BASELINE_COLUMN,
    BaselineRows,
    always_abstain,
    random_answer,
    relative_metrics,
    utility_rows,
)
from evaluation.dataset import EvalDataset, load_eval_dataset, managed_dataset
from evaluation.rowscore import RowResult, RowScorer
from evaluation.scorers import METRICS, RUN_METRICS, build_scorers, headline_metrics
from evaluation.stats import Interval, bootstrap_mean
from llmops.errors import BackendError, ConfigError, NotFoundError
from llmops.secrets import mask_urls
from llmops.tracking import log_dataset_input

ROWS_ARTIFACT = "eval/rows.json"
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
    predict_errors: int = 0
    predict_error_example: str = ""
    predict_refused: int = 0
    predict_refused_example: str = ""


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
    }, name=f"{prompt.name}@v{prompt.version} {config['model_id']}", known_sources=sources, train_answers=answers)


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
    name = model_uri
    if model_uri.startswith("models:/"):
        version = resolve_model_version(model_uri)
        params.update({"model_name": version.name, "model_version": version.version})
        for key in ("prompt_name", "prompt_version", "chain", "tune_run_id", "provider", "chain_config"):
            if f"llmops.{key}" in version.tags:
                params["provider_kind" if key == "provider" else key] = version.tags[f"llmops.{key}"]
        train_uri = _tune_run_param(version.tags.get("llmops.tune_run_id"), "train_uri")
        alias = model_uri.removeprefix("models:/").partition("@")[2]
        name = f"{version.name}{'@' + alias if alias else ''} v{version.version}"
        if "prompt_name" in params:
            name += f" {params['prompt_name']}@v{params.get('prompt_version', '?')}"
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
    return Target(predict, params, name=name, known_sources=sources, train_answers=answers)


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


def rows_table(results: dict[str, RowResult], dataset: EvalDataset, scorer_names: list[str]) -> Any:
    """The per-row table, in dataset order: ids, texts, the response, each scorer's value/rationale/error."""
    import pandas as pd

    records = []
    for row in dataset.rows:
        result = results[row.row_id]
        response = result.response
        record = {
            "row_id": row.row_id, "trace_id": result.trace_id, "question": row.question, "reference": row.reference,
            "answer": str(response.get("answer", "")), "response_abstained": bool(response.get("abstained", False)),
            "citations": ",".join(str(c.get("source_id")) for c in response.get("citations") or []),
            "predict_error": result.error, "predict_refused": result.refused,
        }
        for name in scorer_names:
            score = result.scores.get(name)
            record[name] = math.nan if score is None or score.value is None else score.value
            record[f"{name}/error"] = score.error if score is not None else ""
            record[f"{name}/rationale"] = score.rationale if score is not None else ""
        records.append(record)
    return pd.DataFrame.from_records(records)


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


def score_summary(rows: Any, names: list[str], cfg: Any) -> tuple[dict[str, float], dict[str, Interval]]:
    """Pure: the run's metrics from the per-row table: `<scorer>/mean` over the rows with a value (as MLflow
    aggregates), seeded bootstrap CIs, and the run-level metrics."""
    metrics: dict[str, float] = {}
    summary: dict[str, Interval] = {}
    for name in names:
        values = rows[name].to_numpy(dtype=float)
        interval = bootstrap_mean(values, samples=cfg.bootstrap_samples, confidence=cfg.confidence, seed=cfg.seed)
        summary[name] = interval
        if interval.n:
            metrics.update({f"{name}/mean": float(np.nanmean(values)), f"{name}/ci_low": interval.low,
                            f"{name}/ci_high": interval.high})
        metrics[f"{name}/n"] = float(interval.n)
    metrics.update({**answered_metrics(rows), "n_rows": float(len(rows))})
    return metrics, summary


def errors_of(rows: Any, columns: list[str]) -> tuple[int, str]:
    """How many cells of `columns` hold an error, and the first one (row id, column, message)."""
    if not columns:
        return 0, ""
    errors = rows[columns]
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


def outcome_metrics(rows: Any, names: list[str], baselines: list[BaselineRows], *, abstain_value: float, cfg: Any,
                    n_train: Any = None, judge_names: set[str] = frozenset()) -> tuple[
        dict[str, float], dict[str, Interval], tuple[int, str], tuple[int, str]]:
    """Pure: every metric of a run from its per-row table (which gains `utility` and the baselines' columns)."""
    rows["utility"] = utility_rows(rows["token_f1"].to_numpy(dtype=float),
                                   rows["response_abstained"].to_numpy(dtype=bool), abstain_value)
    metrics, summary = score_summary(rows, names, cfg)
    for base in baselines:
        for column in ("token_f1", "rouge_l", "utility"):
            rows[BASELINE_COLUMN.format(baseline=base.name, column=column)] = base.column(column)
    metrics.update(relative_metrics(rows, baselines, abstain_value, samples=cfg.bootstrap_samples,
                                    confidence=cfg.confidence, seed=cfg.seed))
    if n_train is not None:
        metrics["n_train"] = float(n_train)
    judges = errors_of(rows, [f"{n}/error" for n in sorted(judge_names)])
    predictions = errors_of(rows, ["predict_error"])
    metrics["judge_errors"] = float(judges[0])
    metrics["predict_errors"] = float(predictions[0])
    metrics["predict_refused"] = float(errors_of(rows, ["predict_refused"])[0])
    return metrics, summary, judges, predictions


def evaluate_target(target: Target, dataset: EvalDataset, *, settings: Any, judges: list[Any] | None = None,
                    judge_model: str | None = None, known_sources: set[str] | None = None,
                    extra_params: dict[str, Any] | None = None, progress: Any = None) -> EvalOutcome:
    """Evaluate into the active run and return its metrics and per-row table."""
    import mlflow

    cfg = settings.evaluation
    abstain_value = settings.backend.abstain_value
    sources = known_sources if known_sources is not None else target.known_sources
    scorers = build_scorers(references=[r.reference for r in dataset.rows], known_sources=sources,
                            similarity=cfg.similarity, price_model=cfg.price_model, prices=cfg.prices)
    judges = list(judges or [])
    names = [s.name for s in [*scorers, *judges]]
    run = mlflow.active_run()
    if run is None:
        raise ConfigError("evaluate_target needs an active MLflow run")
    params = {**target.params, **(extra_params or {}), "eval_uri": dataset.uri, "eval_digest": dataset.digest,
              **dataset.identity.as_params(), "n_eval": len(dataset.rows), "judge_model": judge_model or "none",
              "scorers": ",".join(names), "similarity": cfg.similarity, "price_model": cfg.price_model,
              "abstain_value": abstain_value, "baseline_draws": BASELINE_DRAWS if target.train_answers else 0}
    mlflow.log_params(mask_urls({k: v for k, v in params.items() if v not in ("", None)}))
    _log_eval_input(dataset)
    results = predict_and_score(target, dataset, scorers, judges, workers=cfg.workers,
                                judge_workers=settings.evaluation.judge.max_concurrency, run_id=run.info.run_id,
                                progress=progress)
    rows = rows_table(results, dataset, names)
    baselines = baseline_rows(dataset, target.train_answers, abstain_value, cfg.seed)
    metrics, summary, (judge_errors, judge_example), (predict_errors, predict_example) = outcome_metrics(
        rows, names, baselines, abstain_value=abstain_value, cfg=cfg, n_train=target.params.get("n_train"),
        judge_names={j.name for j in judges})
    _log_outcome(metrics, rows, summary, cfg, dataset, [j.name for j in judges])
    refused, refused_example = errors_of(rows, ["predict_refused"])
    return EvalOutcome(run.info.run_id, metrics, rows, judge_errors, judge_example, predict_errors, predict_example,
                       refused, refused_example)


def predict_and_score(target: Target, dataset: EvalDataset, scorers: list[Any], judges: list[Any], *, workers: int,
                      judge_workers: int, run_id: str, progress: Any = None) -> dict[str, RowResult]:
    """`mlflow.genai.evaluate` over the rows (one trace each, linked to the run), every row scored inside its
    trace (`evaluation.rowscore`); returns the rows' results by row id."""
    import mlflow
    import mlflow.genai

    scorer = RowScorer(target.predict, dataset.rows, scorers, judges, judge_workers=judge_workers,
                       source_run_id=run_id, reference_source=f"eval dataset {dataset.digest}",
                       on_row=progress.advance if progress is not None else None)
    data = managed_dataset(dataset, mlflow.active_run().info.experiment_id, warn=_warn) or [
        {"inputs": {"question": row.question}} for row in dataset.rows]
    if progress is not None:
        progress.start(len(dataset.rows))
    try:
        # MLflow writes a "view the results in the UI" note on stdout; the commands print their own result there
        with _mlflow_eval_env(workers), contextlib.redirect_stdout(io.StringIO()):
            result = mlflow.genai.evaluate(data=data, predict_fn=scorer, scorers=[])
    finally:
        scorer.close()
    traced = {str(t) for t in result.result_df["trace_id"]} if "trace_id" in result.result_df else set()
    lost = [row.row_id for row in dataset.rows
            if row.row_id not in scorer.results or scorer.results[row.row_id].trace_id not in traced]
    if lost:
        raise BackendError(f"MLflow recorded {len(dataset.rows) - len(lost)} of {len(dataset.rows)} rows (traces "
                           f"lost, first: row {lost[0]}); lower evaluation.workers or use a tracking server")
    return scorer.results


@contextlib.contextmanager
def _mlflow_eval_env(workers: int) -> Iterator[None]:
    """The harness's knobs, for this call only: each row predicted once (MLflow otherwise calls predict_fn again
    to validate tracing), `workers` rows at a time (MLflow's default 10 row threads nest store sessions and
    exhaust a SQLite store's connection pool: rows stall for the pool timeout or lose their traces)."""
    values = {"MLFLOW_GENAI_EVAL_SKIP_TRACE_VALIDATION": "true", "MLFLOW_GENAI_EVAL_MAX_WORKERS": str(workers)}
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _display_order(name: str) -> tuple[int, str]:
    """The run-level metrics, then the scorers' means, then everything else (CIs, baselines, leads)."""
    if name in RUN_METRICS:
        return 0, ""
    return (1, "") if name.endswith("/mean") else (2, name)


def _warn(message: str) -> None:
    logging.getLogger(__name__).warning(message)


def _log_outcome(metrics: dict[str, float], rows: Any, summary: dict[str, Interval], cfg: Any,
                 dataset: EvalDataset, judge_names: list[str]) -> None:
    import mlflow

    from evaluation.plots import metric_bars

    finite = {k: v for k, v in metrics.items() if math.isfinite(v)}
    mlflow.log_metrics(headline_metrics(finite, judge_names))  # first: the UI's default plot and columns
    mlflow.log_metrics({k: finite[k] for k in sorted(finite, key=_display_order)})
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
    raise_on_errors(outcome)
    return outcome


def raise_on_errors(outcome: EvalOutcome) -> None:
    """After the run is logged (kept for inspection): failed predictions or judge calls fail the command; questions
    the chain refused (its input contract) are a warning line, scored as abstentions."""
    if outcome.predict_refused:
        from llmops.cli_support import warn

        warn(f"{outcome.predict_refused} question(s) refused by the chain (first: {outcome.predict_refused_example});"
             f" scored as abstentions, counted in predict_refused (run {outcome.run_id})")
    if outcome.predict_errors:
        raise BackendError(f"{outcome.predict_errors} prediction(s) failed (first: {outcome.predict_error_example}); "
                           f"those rows are scored as empty answers (run {outcome.run_id})")
    if outcome.judge_errors:
        raise BackendError(f"{outcome.judge_errors} judge call(s) failed or returned unparseable output "
                           f"(first: {outcome.judge_error_example}); those rows have no judge score "
                           f"(run {outcome.run_id})")

