"""`llmops feedback`: add one, import/export files, build review batches, report per model version.
Thin: parse, delegate, print (`--json` for scripts)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from llmops.cli_support import TrackingUri, blank_to_none, echo, setting_option, settings_for, warn
from llmops.settings import Settings

app = typer.Typer(no_args_is_help=True)

LogUri = setting_option("feedback.log_uri", "Inference log the request ids resolve through (folder or fsspec URL; "
                        "default: monitoring.log_uri, else serving.log_uri: where the server writes).", "--log")
StoreUri = setting_option("feedback.store_uri", "Feedback store (folder or fsspec URL).", "--store")
AsJson = typer.Option(False, "--json", help="Print the result as JSON (stdout holds nothing else).")


def _settings(tracking_uri: str | None, log: str | None = None, store: str | None = None) -> Settings:
    """Settings for taking feedback. Assessments attach to traces already in the tracking store: a local store that
    does not exist (a mistyped path) holds none, so it is not created; the feedback itself is still stored."""
    import os

    from llmops.cli_support import local_store_path

    flags = {"mlflow.tracking_uri": tracking_uri, "feedback.log_uri": log, "feedback.store_uri": store}
    settings = settings_for(**flags)
    path = local_store_path(settings.mlflow.tracking_uri)
    if (settings.feedback.log_assessments and path is not None and not path.exists()
            and not os.environ.get("MLFLOW_RUN_ID")):
        warn(f"MLflow tracking store {settings.mlflow.tracking_uri} does not exist: the feedback is stored, but no "
             "assessments are logged (check --tracking-uri / MLFLOW_TRACKING_URI / mlflow.tracking_uri)")
        settings = settings_for(**flags, **{"feedback.log_assessments": False})
    return settings


def _point_mlflow(settings: Settings) -> None:
    """Assessments go to the configured store; nothing is created unless a trace is there to assess."""
    import mlflow

    mlflow.set_tracking_uri(settings.mlflow.tracking_uri)
    if settings.mlflow.registry_uri:
        mlflow.set_registry_uri(settings.mlflow.registry_uri)


def _service(settings: Settings) -> Any:
    from feedback.capture import FeedbackService

    _point_mlflow(settings)
    return FeedbackService(settings)


def _print(payload: Any, as_json: bool, lines: list[str]) -> None:
    if as_json:
        echo(json.dumps(payload, indent=2, default=str))
    else:
        for line in lines:
            echo(line)


@app.command("add")
def add_command(
    request_id: str = typer.Option(..., help="The X-Request-ID the server returned with the answer."),
    rating: str = typer.Option(..., help="thumbs: up/down (1/0); scale5: 1-5 (the schema is feedback.rating)."),
    correction: str = typer.Option(None, help="The answer it should have given (becomes training data)."),
    comment: str = typer.Option(None, help="Why (stored PII-redacted)."),
    user: str = typer.Option(None, help="Who gives the feedback (default: the OS user)."),
    log: str = LogUri,
    store: str = StoreUri,
    as_json: bool = AsJson,
    tracking_uri: str = TrackingUri,
) -> None:
    """Record feedback on one served answer, resolved to the exact versions that produced it."""
    from feedback.capture import default_user, parse_input

    settings = _settings(tracking_uri, log, store)
    item = parse_input({k: v for k, v in {"request_id": request_id, "rating": rating, "corrected_answer": correction,
                                          "comment": comment, "user": user}.items() if v is not None}, "feedback")
    (taken,) = _service(settings).take([item], source="cli", users=[user or default_user()])
    summary = taken.summary()
    p = summary["provenance"]
    _print(summary, as_json, [
        f"feedback {summary['feedback_id']} on request {summary['request_id']}: rating {summary['rating']:g} "
        f"({summary['rating_kind']}){', with a correction' if summary['corrected'] else ''}",
        f"answered by {p['model_name']} v{p['model_version']} (prompt {p['prompt_name']} v{p['prompt_version']}, "
        f"instruction {p['instruction_hash']}, dataset {p['dataset_digest']})",
        f"MLflow assessments: {summary['assessments']}",
    ])


@app.command("import")
def import_command(
    file: Path = typer.Argument(..., help="CSV or JSONL: request_id, rating, corrected_answer, comment, user (a "  # noqa: B008
                                          "review batch from `llmops feedback review` as it comes back)."),
    user: str = typer.Option(None, help="Who reviewed, for rows without a user."),
    log: str = LogUri,
    store: str = StoreUri,
    as_json: bool = AsJson,
    tracking_uri: str = TrackingUri,
) -> None:
    """Import feedback in bulk: every row checked and resolved first, then stored together (or not at all)."""
    from feedback.bulk import import_file

    settings = _settings(tracking_uri, log, store)
    outcome = import_file(_service(settings), file, blank_to_none(user))
    data = outcome.as_dict()
    failed = [t for t in outcome.taken if t.assessments.startswith("failed")]
    for taken in failed[:3]:
        warn(f"feedback {taken.record['feedback_id']}: assessments {taken.assessments}")
    _print(data, as_json, [f"imported {data['imported']} feedback record(s) from {file} as {data['source']} "
                           f"({data['corrections']} correction(s)); skipped {data['skipped']} blank row(s); "
                           f"{data['assessments']} logged as MLflow assessments"])


@app.command("export")
def export_command(
    out: Path = typer.Option(..., help="Output file, .csv or .jsonl."),  # noqa: B008
    model_name: str = typer.Option(None, help="Only this registered model."),
    model_version: str = typer.Option(None, help="Only this version."),
    store: str = StoreUri,
    as_json: bool = AsJson,
) -> None:
    """Write the store's records (every field, provenance included) to a file."""
    from feedback.bulk import export_store

    settings = settings_for(**{"feedback.store_uri": store})
    n = export_store(settings.feedback.store_uri, out, blank_to_none(model_name), blank_to_none(model_version))
    _print({"exported": n, "out": str(out)}, as_json, [f"wrote {n} feedback record(s) to {out}"])


@app.command("review")
def review_command(
    queue: str = typer.Option(..., help="low-rated | abstained | sampled | drift (with --monitor-run)."),
    out: Path = typer.Option(..., help="The batch for reviewers, .csv or .jsonl."),  # noqa: B008
    n: int = setting_option("feedback.review_size", "Rows in the batch.", "--n"),
    seed: int = setting_option("feedback.seed", "Sampling seed (sampled)."),
    model_name: str = typer.Option(None, help="Only answers of this registered model."),
    model_version: str = typer.Option(None, help="Only answers of this version."),
    monitor_run: str = typer.Option(None, help="drift: the `llmops monitor run` whose drift examples to review."),
    log: str = LogUri,
    store: str = StoreUri,
    as_json: bool = AsJson,
    tracking_uri: str = TrackingUri,
) -> None:
    """Build a review batch from the log and the store; people fill rating / corrected_answer, then
    `llmops feedback import` takes it back."""
    from feedback.capture import resolve_log_uri
    from feedback.review import build_batch, write_batch
    from llmops.records import read_feedback, read_inference_log

    settings = settings_for(**{"mlflow.tracking_uri": tracking_uri, "feedback.log_uri": log,
                               "feedback.store_uri": store, "feedback.review_size": n, "feedback.seed": seed})
    cfg = settings.feedback
    drift = None
    if blank_to_none(monitor_run):
        from llmops.cli_support import check_store
        from monitoring.examples import drift_examples_from_run

        check_store(settings, "read")  # the monitor run lives there: a mistyped store is refused, not created
        _point_mlflow(settings)
        drift = drift_examples_from_run(monitor_run)
    log_rows = read_inference_log(resolve_log_uri(settings)).to_pylist()
    rows = build_batch(queue, log_rows, read_feedback(cfg.store_uri).to_pylist(), n=cfg.review_size, seed=cfg.seed,
                       low_rating_max=cfg.low_rating_max, model_name=blank_to_none(model_name),
                       model_version=blank_to_none(model_version), drift=drift)
    written = write_batch(out, rows)
    lines = [f"wrote {written} row(s) of queue {queue} to {out}" + ("" if written else ": nothing to review"),
             f"fill rating / corrected_answer, then: llmops feedback import {out} --user NAME"]
    _print({"queue": queue, "rows": written, "out": str(out)}, as_json, lines)


@app.command("report")
def report_command(
    model_name: str = typer.Option(None, help="Only this registered model (default: every model in the store)."),
    no_log: bool = typer.Option(False, "--no-log", help="Print only: log no MLflow run."),
    trigger: bool = typer.Option(False, "--trigger", help="Run the monitoring rule's retuning trigger for a "
                                 "version whose low ratings reach trigger.min_feedback."),
    log: str = LogUri,
    store: str = StoreUri,
    as_json: bool = AsJson,
    tracking_uri: str = TrackingUri,
) -> None:
    """Feedback metrics per model version (rating mean with CI, share corrected, agreement with automatic scores),
    logged to MLflow so versions can be compared by human feedback."""
    from feedback.capture import resolve_log_uri
    from feedback.report import log_reports, version_reports
    from llmops.cli_support import start
    from llmops.errors import DataError
    from llmops.records import read_feedback, read_inference_log

    settings = settings_for(**{"mlflow.tracking_uri": tracking_uri, "feedback.log_uri": log,
                               "feedback.store_uri": store})
    cfg = settings.feedback
    rows = read_feedback(cfg.store_uri).to_pylist()
    if not rows:
        raise DataError(f"feedback store {cfg.store_uri} holds no records")
    log_rows = read_inference_log(resolve_log_uri(settings)).to_pylist() or None  # None: no log to count requests
    ev = settings.evaluation
    reports = version_reports(rows, log_rows, low_rating_max=cfg.low_rating_max, good_rating_min=cfg.good_rating_min,
                              samples=ev.bootstrap_samples, confidence=ev.confidence, seed=ev.seed,
                              model_name=blank_to_none(model_name))
    if not reports:
        raise DataError(f"no feedback about model {model_name} in {cfg.store_uri}")
    if not no_log:
        start(**{"mlflow.tracking_uri": tracking_uri})
        log_reports(reports, cfg.store_uri)
    triggered = _trigger(settings, rows, reports) if trigger else []
    lines = [r.line() + (f"  [run {r.run_id}]" if r.run_id else "") for r in reports]
    lines += [note for r in reports for note in r.notes] + triggered
    _print({"versions": [r.as_dict() for r in reports], "trigger": triggered}, as_json, lines)


def _trigger(settings: Settings, rows: list[dict[str, Any]], reports: list[Any]) -> list[str]:
    """The monitoring trigger on each version's count of low ratings (monitoring.trigger.feedback_reason)."""
    from monitoring.rules import load_rules
    from monitoring.trigger import feedback_reason, fire
    from projects.data.feedback import is_low, newest_per_user

    rules = load_rules(settings.monitoring.rules_file)
    effective = newest_per_user(rows)
    lines = []
    for report in reports:
        low = sum(1 for r in effective if str(r["model_name"]) == report.model_name
                  and str(r["model_version"]) == report.model_version and is_low(r, settings.feedback.low_rating_max))
        reason = feedback_reason(report.model_name, report.model_version, low, rules)
        if reason is None:
            lines.append(f"trigger: {report.model_name} v{report.model_version}: {low} low rating(s), below "
                         f"trigger.min_feedback ({rules.trigger.min_feedback})")
        else:
            lines.append(fire(reason, rules, Path(settings.monitoring.trigger_dir)).line())
    return lines
