"""`llmops eval`: run an evaluation, compare runs, check gates, human review. Thin: parse, delegate, print.

Every command that prints a result takes `--json` (one JSON document on stdout, nothing else there). Commands
that only read runs refuse a tracking store that does not exist (`start("read")`)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import typer

from llmops.cli_support import Quiet, TrackingUri, blank_to_none, echo, row_progress, setting_option, start

app = typer.Typer(no_args_is_help=True)
# What `eval run` prints (every metric is in the run): what a reviewer reads first.
HEADLINE_METRICS = ("n_rows", "n_train", "coverage", "answered_token_f1", "answered_rouge_l", "utility",
                    "token_f1/mean", "cited/mean", "judge_errors", "predict_errors")
review_app = typer.Typer(no_args_is_help=True, help="Human review: export rows to rate, import the ratings.")
app.add_typer(review_app, name="review")
Json = typer.Option(False, "--json", help="Print the result as JSON (stdout holds nothing else).")


def _json(payload: Any) -> None:
    echo(json.dumps(payload, indent=2, default=str))


def _leads(metrics: dict[str, float]) -> dict[str, dict[str, float]]:
    out = {}
    for baseline, metric in (("random_answer", "answered_token_f1"), ("always_abstain", "utility")):
        prefix = f"vs/{baseline}/{metric}"
        if f"{prefix}/delta" in metrics:
            out[prefix] = {k: metrics[f"{prefix}/{k}"] for k in ("delta", "ci_low", "ci_high", "n")
                           if f"{prefix}/{k}" in metrics}
    return out


@app.command("run")
def run_command(
    eval_uri: str = typer.Option(..., help="Eval dataset JSONL (runs:/..., models:/... or a path); needs references."),
    tune_run_id: str = typer.Option(None, help="Evaluate this tuning run's chain, built as it will be registered."),
    model_uri: str = typer.Option(None, help="Or: this model (models:/name@alias, models:/name/3, runs:/...)."),
    train_uri: str = typer.Option(None, help="Model only: train JSONL for the baselines and citation checks "
                                  "(default: the train split of the version's tuning run)."),
    judge_provider: str = setting_option("evaluation.judge.provider", "LLM judge provider: none, openai, vertex."),
    judge_model: str = setting_option("evaluation.judge.model", "Judge model name."),
    judge_base_url: str = setting_option("evaluation.judge.base_url",
                                         "OpenAI-compatible judge endpoint, e.g. http://127.0.0.1:8000/v1."),
    workers: int = setting_option("evaluation.workers", "Rows evaluated at a time.", min=1),
    limit: int = typer.Option(None, min=1, help="Evaluate only the first N rows."),
    run_name: str = typer.Option(None, help="MLflow run name (default: `eval <prompt>@v<version> <model>`)."),
    as_json: bool = Json,
    quiet: bool = Quiet,
    tracking_uri: str = TrackingUri,
) -> None:
    """Evaluate with mlflow.genai.evaluate: scorers, baselines on the same rows, optional judges, CIs, rows, plots."""
    import mlflow

    from evaluation.dataset import load_eval_dataset
    from evaluation.judges import client_from_settings, make_judges
    from evaluation.run import evaluate_target, model_target, raise_on_errors, tune_run_target
    from evaluation.scorers import headline_metrics
    from llmops.errors import ConfigError

    model_uri, tune_run_id, train_uri = blank_to_none(model_uri), blank_to_none(tune_run_id), blank_to_none(train_uri)
    if bool(model_uri) == bool(tune_run_id):
        raise ConfigError("give exactly one of --tune-run-id or --model-uri")
    if train_uri and tune_run_id:
        raise ConfigError("--train-uri applies to --model-uri; a tuning run knows its train split")
    # what is evaluated lives in the store (a tuning run, a registered or logged model): a mistyped store is
    # refused; a model from a local folder may start a new one
    reads_store = bool(tune_run_id) or str(model_uri).startswith(("models:/", "runs:/"))
    settings = start("read" if reads_store else "write", **{
        "mlflow.tracking_uri": tracking_uri, "evaluation.judge.provider": judge_provider,
        "evaluation.judge.model": judge_model, "evaluation.judge.base_url": judge_base_url,
        "evaluation.workers": workers})
    dataset = load_eval_dataset(eval_uri, limit=limit)  # bad data fails before any model is loaded
    judge_cfg = settings.evaluation.judge
    client = client_from_settings(judge_cfg) if judge_cfg.provider != "none" else None
    judges = make_judges(client, list(judge_cfg.judges)) if client else None
    judge_name = f"{judge_cfg.provider}:{judge_cfg.model}" if client else None
    target = tune_run_target(tune_run_id, settings) if tune_run_id else model_target(model_uri)
    if train_uri:
        from evaluation.run import train_info

        target.known_sources, target.train_answers, n_train = train_info(train_uri)
        target.params.update(train_uri=train_uri, n_train=n_train)
    name = blank_to_none(run_name) or f"eval {target.name}"
    with mlflow.start_run(run_name=name) as run, row_progress("evaluate (rows)", quiet) as progress:
        if tune_run_id:
            mlflow.set_tag("llmops.tune_run_id", tune_run_id)
        outcome = evaluate_target(target, dataset, settings=settings, judges=judges, judge_model=judge_name,
                                  progress=progress)
        raise_on_errors(outcome)
    metrics = outcome.metrics
    judge_names = [j.name for j in judges or []]
    calls = {"calls": client.calls, "cache_hits": client.cache.hits} if client is not None and client.cache else None
    if as_json:
        _json({"run_id": run.info.run_id, "run_name": name, "rows": len(dataset.rows),
               "headline": {k.removeprefix("Headline/"): v for k, v in headline_metrics(metrics, judge_names).items()},
               "leads": _leads(metrics), "judge": calls, "metrics": metrics})
        return
    for key in (*HEADLINE_METRICS, *(f"{j}/mean" for j in judge_names)):
        if key in metrics:
            echo(f"{key}: {metrics[key]:.4f}")
    for prefix, lead in _leads(metrics).items():
        echo(f"{prefix}: {lead['delta']:+.4f} (95% CI {lead['ci_low']:+.4f}..{lead['ci_high']:+.4f})")
    echo(f"({len(metrics)} metrics in all, in the MLflow run)")
    if calls is not None:
        echo(f"judge calls: {calls['calls']} (cache hits {calls['cache_hits']})")
    echo(f"run: {run.info.run_id}")


@app.command("compare")
def compare_command(
    runs: list[str] = typer.Argument(..., help="Baseline run A, then one or more runs B compared with it."),  # noqa: B008
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    allow_different_datasets: bool = typer.Option(False, help="Compare runs scored on different dataset digests."),
    samples: int = setting_option("evaluation.bootstrap_samples", "Bootstrap samples.", min=100),
    seed: int = setting_option("evaluation.seed", "Bootstrap seed."),
    log: bool = typer.Option(True, help="Log the comparison as an MLflow run with comparison.json."),
    tracking_uri: str = TrackingUri,
) -> None:
    """Paired comparison on the same rows: B - A per metric, bootstrap CI, better / worse / not distinguishable."""
    from evaluation.compare import compare_runs, format_table, log_comparison
    from llmops.errors import ConfigError

    if len(runs) < 2:
        raise ConfigError("compare needs at least two runs: RUN_A RUN_B [...]")
    settings = start("read", **{"mlflow.tracking_uri": tracking_uri, "evaluation.bootstrap_samples": samples,
                                "evaluation.seed": seed})
    cfg = settings.evaluation
    comparisons = [compare_runs(runs[0], other, allow_different_datasets=allow_different_datasets,
                                samples=cfg.bootstrap_samples, confidence=cfg.confidence, seed=cfg.seed)
                   for other in runs[1:]]
    logged = log_comparison(comparisons) if log else None
    if as_json:
        _json({"comparisons": [c.to_dict() for c in comparisons], "logged_run": logged})
        return
    for comparison in comparisons:
        echo(format_table(comparison))
    if logged:
        echo(f"logged: run {logged} (comparison.json)")


@app.command("gate")
def gate_command(
    run_id: str = typer.Argument(..., help="Evaluation run id."),
    target: str = typer.Option("staging", help="Which gate set to check (staging, production)."),
    against: str = typer.Option(None, help="Champion for the non-regression checks, e.g. models:/NAME@production."),
    gates_file: Path = setting_option("evaluation.gates_file", "Gates YAML."),  # noqa: B008
    as_json: bool = Json,
    tracking_uri: str = TrackingUri,
) -> None:
    """Print each gate with its numbers; exit non-zero when an enforced gate fails (also with --json)."""
    from mlflow.tracking import MlflowClient

    from evaluation.champion import compare_with_champion, resolve_champion
    from evaluation.gates import check_gates, load_gates
    from llmops.errors import GateFailedError
    from llmops.tracking import get_run

    settings = start("read", **{"mlflow.tracking_uri": tracking_uri,
                                "evaluation.gates_file": str(gates_file) if gates_file else None})
    gates = load_gates(settings.evaluation.gates_file)
    run = get_run(run_id)
    payload: dict[str, Any] = {"run_id": run.info.run_id, "target": target, "mode": gates.mode,
                               "gates_file": settings.evaluation.gates_file, "champion": None}
    if gates.mode == "disabled":
        if as_json:
            _json({**payload, "passed": True, "results": []})
        else:
            echo("gates disabled in the gates file: nothing checked")
        return
    champion: dict = {"champion_absent": "not checked: no champion given (--against models:/NAME@ALIAS)"}
    if against:
        cfg = settings.evaluation
        name, version = resolve_champion(against)
        comparison = compare_with_champion(MlflowClient(), run, name, version, samples=cfg.bootstrap_samples,
                                           confidence=cfg.confidence, seed=cfg.seed)
        if not as_json:
            echo(f"champion: {comparison.label}" + (f" ({comparison.note})" if comparison.note else ""))
        payload["champion"] = {"label": comparison.label, "note": comparison.note}
        champion = {"champion_metrics": comparison.metrics, "champion_leads": comparison.leads,
                    "champion_note": comparison.note}
    results = check_gates(run.data.metrics, gates, target, **champion)
    failed = sum(not r.passed for r in results)
    if as_json:
        _json({**payload, "passed": not failed, "failed": failed, "results": [asdict(r) for r in results]})
    else:
        for result in results:
            echo(result.line())
    if failed and gates.mode == "dry-run":
        if not as_json:
            echo(f"dry-run: {failed} gate(s) would fail for {target}")
    elif failed:
        raise GateFailedError(f"{failed} gate(s) failed for {target}")
    elif not as_json:
        echo(f"all {len(results)} gate(s) passed for {target}")


@app.command("metrics")
def metrics_command(as_json: bool = Json) -> None:
    """List the metric names evaluation runs log (what gates may name)."""
    from evaluation.scorers import known_metric_names, metric_info

    names = known_metric_names()
    if as_json:
        _json([{"name": n, "direction": info.direction, "unit_interval": info.unit_interval}
               for n in names if (info := metric_info(n)) is not None])
        return
    for name in names:
        echo(name)


@review_app.command("export")
def review_export(
    run_id: str = typer.Argument(..., help="Evaluation run id."),
    out: Path = typer.Option(..., help="Output file, .csv or .jsonl."),  # noqa: B008
    n: int = typer.Option(20, min=1, help="Rows to export (seeded sample)."),
    seed: int = typer.Option(0, help="Sampling seed."),
    as_json: bool = Json,
    tracking_uri: str = TrackingUri,
) -> None:
    """Write rows for human rating (fill `rating` 1..5 and optionally `comment`)."""
    from evaluation.review import export_for_review

    start("read", **{"mlflow.tracking_uri": tracking_uri})
    written = export_for_review(run_id, out, n=n, seed=seed)
    if as_json:
        _json({"run_id": run_id, "rows": written, "path": str(out)})
    else:
        echo(f"wrote {written} row(s) to {out}")


@review_app.command("import")
def review_import(
    run_id: str = typer.Argument(..., help="Evaluation run id the ratings belong to."),
    ratings: Path = typer.Argument(..., help="The filled-in export (.csv or .jsonl)."),  # noqa: B008
    reviewer: str = typer.Option(..., help="Who rated (recorded as the HUMAN source id)."),
    scale_min: float = typer.Option(1.0, help="Lowest allowed rating."),
    scale_max: float = typer.Option(5.0, help="Highest allowed rating."),
    as_json: bool = Json,
    tracking_uri: str = TrackingUri,
) -> None:
    """Log ratings as human feedback on the rows' traces; print agreement with the automatic scores."""
    from evaluation.review import import_ratings

    start("read", **{"mlflow.tracking_uri": tracking_uri})  # the run's traces must exist: so must the store
    report = import_ratings(run_id, ratings, reviewer, scale=(scale_min, scale_max))
    if as_json:
        _json({"run_id": run_id, **asdict(report)})
        return
    for line in report.lines():
        echo(line)
