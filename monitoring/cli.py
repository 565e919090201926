"""`llmops monitor`: run (log windows vs references, MLflow run, trigger), compare (two question sets), trigger
(a feedback count), rules (check a rule file). Thin: parse, delegate, print."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import typer

from llmops.cli_support import (
    TrackingUri,
    blank_to_none,
    check_store,
    echo,
    setting_option,
    settings_for,
    start,
    warn,
)
from llmops.errors import ConfigError
from llmops.settings import inference_log_uri

app = typer.Typer(no_args_is_help=True)
Rules = setting_option("monitoring.rules_file", "Alarm rule YAML.", "--rules")
Json = typer.Option(False, "--json", help="Print the result as JSON (stdout holds nothing else).")


def _missing_store(settings) -> bool:
    import os

    from llmops.cli_support import local_store_path

    path = local_store_path(settings.mlflow.tracking_uri)
    return path is not None and not path.exists() and not os.environ.get("MLFLOW_RUN_ID")


def _time(value: str | None, flag: str) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ConfigError(f"{flag} must be an ISO time such as 2026-12-01T09:00, got {value!r}") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@app.command("run")
def run_command(
    log: str = typer.Option(None, "--log", help="Inference log: folder or fsspec URL (default: monitoring.log_uri, "
                            "else serving.log_uri, where the server writes it)."),
    model: str = typer.Option(None, help="Monitor this version only: models:/NAME@alias or models:/NAME/3 "
                              "(default: every version in the log, each on its own)."),
    window: str = setting_option("monitoring.window", "Window: a duration (1h, 30m, 1d) or records per window "
                                 "(500)."),
    skew_reference: str = setting_option("monitoring.skew_reference", "eval (the split the version was gated on), "
                                         "train, none, or a JSONL/Parquet file of questions."),
    drift_reference: str = setting_option("monitoring.drift_reference", "previous (window), first (window), train, "
                                          "none, or a file."),
    rules: Path = Rules,
    since: str = typer.Option(None, help="Only records at or after this ISO time (UTC unless given)."),
    until: str = typer.Option(None, help="Only records before this ISO time."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Report only: log no MLflow run, run no trigger (shows "
                                 "what it would run)."),
    as_json: bool = Json,
    tracking_uri: str = TrackingUri,
) -> None:
    """Skew vs the eval split and drift between windows, operational metrics per window and version."""
    from monitoring.monitor import monitor
    from monitoring.report import terminal_report
    from monitoring.rules import load_rules
    from monitoring.trigger import fire
    from monitoring.windows import parse_window

    flags = {"mlflow.tracking_uri": tracking_uri, "monitoring.log_uri": blank_to_none(log),
             "monitoring.window": blank_to_none(window), "monitoring.rules_file": str(rules) if rules else None,
             "monitoring.skew_reference": blank_to_none(skew_reference),
             "monitoring.drift_reference": blank_to_none(drift_reference)}
    settings = settings_for(**flags)
    cfg = settings.monitoring
    log_uri = inference_log_uri(settings, "monitoring")  # one location: where the server writes it
    spec = parse_window(cfg.window)  # every flag and the rule file are checked before MLflow is touched
    rule = load_rules(cfg.rules_file)
    since_at, until_at = _time(since, "--since"), _time(until, "--until")
    import mlflow

    if model:
        check_store(settings, "read")  # the version must be registered there: a mistyped store is refused
    elif {cfg.skew_reference, cfg.drift_reference} & {"eval", "train"} and _missing_store(settings):
        # unregistered versions are monitored without skew (each with a note); with no store at all, say why
        warn(f"MLflow tracking store {settings.mlflow.tracking_uri} does not exist: no version is in a registry, so "
             f"none has an {cfg.skew_reference}/{cfg.drift_reference} reference (check --tracking-uri)")
    mlflow.set_tracking_uri(settings.mlflow.tracking_uri)  # references come from the registry; nothing is made yet
    if settings.mlflow.registry_uri:
        mlflow.set_registry_uri(settings.mlflow.registry_uri)
    result = monitor(log_uri, spec, rule, model_uri=blank_to_none(model), skew=cfg.skew_reference,
                     drift=cfg.drift_reference, since=since_at, until=until_at)
    from monitoring.tracking import log_version

    if not dry_run:
        start(**flags)  # the experiment is set up only once there is something whole to log
    invocation = uuid.uuid4().hex[:12]
    runs, triggers = {}, []
    for version in result.versions:
        if not dry_run:
            runs[version.label] = log_version(result, version, cfg.rules_file, invocation)
        reason = _latest_reason(result, version, runs.get(version.label, ""))
        if reason is not None:
            triggers.append(fire(reason, rule, Path(cfg.trigger_dir), dry_run=dry_run))
    if as_json:
        payload = result.to_dict()
        payload["runs"] = runs
        payload["triggers"] = [t.to_dict() for t in triggers]
        echo(json.dumps(payload, indent=2, default=str))
        return
    echo(terminal_report(result))
    for label, run_id in runs.items():
        echo(f"logged: {label} -> run {run_id}")
    if dry_run:
        echo("dry-run: no MLflow run logged")
    for outcome in triggers:
        echo(outcome.line())


def _latest_reason(result, version, run_id: str):
    """The most recent alarming window that the rule's trigger acts on, as a trigger reason."""
    from monitoring.trigger import Reason

    wanted = set(result.rules.trigger.when)
    candidates = [(w, kind, c) for w, kind, c in version.alarms() if kind in wanted]
    if not candidates:
        return None
    w, kind, comparison = candidates[-1]
    return Reason(kind, version.model_name, version.model_version, w.window.start.isoformat(),
                  w.window.end.isoformat(), [f.name for f in comparison.alarms], comparison.explanation(),
                  log=result.log, monitor_run_id=run_id, questions=w.window.questions)


@app.command("compare")
def compare_command(
    reference: Path = typer.Option(..., help="Reference questions: JSONL (a 'question' field) or Parquet "  # noqa: B008
                                   "(a 'question' column)."),
    current: Path = typer.Option(..., help="Current questions, same formats."),  # noqa: B008
    basis: Path = typer.Option(None, help="Fit the vocabulary and embedding on these questions (e.g. the "  # noqa: B008
                               "training inputs; default: both sets together)."),
    rules: Path = Rules,
    as_json: bool = typer.Option(False, "--json", help="Print {drift, n_reference, n_current, features: [...]}."),
) -> None:
    """Compare two question sets with the monitor's features and rule (e.g. an eval set vs new traffic)."""
    from monitoring.compare import compare_sets
    from monitoring.references import read_questions
    from monitoring.report import _feature_table, text_table
    from monitoring.rules import load_rules

    settings = settings_for(**{"monitoring.rules_file": str(rules) if rules else None})
    rule = load_rules(settings.monitoring.rules_file)
    comparison = compare_sets(read_questions(reference), read_questions(current), rule,
                              basis=read_questions(basis) if basis else None)
    if as_json:
        echo(json.dumps(comparison.to_dict(), indent=2))
        return
    echo(f"reference {reference} ({comparison.n_reference} questions) vs current {current} "
         f"({comparison.n_current}); alpha {rule.alpha}, Holm across the counted features")
    if comparison.status != "ok":
        echo(comparison.note)
        return
    echo(text_table(*_feature_table(comparison)))
    echo(("DRIFT: " if comparison.drift else "no drift") + ("" if not comparison.drift else
                                                           f"{len(comparison.alarms)} feature(s)"))
    for line in comparison.explanation():
        echo(f"  {line}")


@app.command("trigger")
def trigger_command(
    feedback_count: int = typer.Option(..., min=0, help="Negative feedback records since the last retuning."),
    model: str = typer.Option(..., help="The version the feedback is about: models:/NAME@alias or models:/NAME/3."),
    rules: Path = Rules,
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would run; run nothing."),
    as_json: bool = Json,
    tracking_uri: str = TrackingUri,
) -> None:
    """Run the retuning trigger when a feedback count reaches the rule's `trigger.min_feedback`."""
    from monitoring.references import resolve_model
    from monitoring.rules import load_rules
    from monitoring.trigger import feedback_reason, fire

    flags = {"mlflow.tracking_uri": tracking_uri, "monitoring.rules_file": str(rules) if rules else None}
    rule = load_rules(settings_for(**flags).monitoring.rules_file)
    settings = start("read", **flags)  # the version must be registered: a mistyped store is refused
    version = resolve_model(model)
    reason = feedback_reason(version.name, version.version, feedback_count, rule)
    if reason is None:
        threshold = rule.trigger.min_feedback
        if as_json:
            echo(json.dumps({"triggered": False, "feedback_count": feedback_count, "min_feedback": threshold}))
            return
        echo(f"no trigger: {feedback_count} feedback record(s), the rule triggers from "
             f"{threshold if threshold is not None else 'never (trigger.min_feedback is not set)'}")
        return
    outcome = fire(reason, rule, Path(settings.monitoring.trigger_dir), dry_run=dry_run)
    if as_json:
        echo(json.dumps({"triggered": True, "feedback_count": feedback_count, **outcome.to_dict()}, indent=2,
                        default=str))
        return
    echo(outcome.line())


@app.command("rules")
def rules_command(
    rules: Path = Rules,
    as_json: bool = typer.Option(False, "--json", help="Print the rule as JSON."),
) -> None:
    """Check a rule file and print what it says (nothing is computed or run)."""
    from monitoring.rules import load_rules

    settings = settings_for(**{"monitoring.rules_file": str(rules) if rules else None})
    rule = load_rules(settings.monitoring.rules_file)
    if as_json:
        echo(json.dumps({"rules_file": settings.monitoring.rules_file, **rule.model_dump(mode="json")}, indent=2))
        return
    echo(f"rule file {settings.monitoring.rules_file}: mode {rule.mode}, alpha {rule.alpha} (Holm), at least "
         f"{rule.min_rows} rows per side, embedding {rule.embedding}")
    echo(f"counted features: {', '.join(rule.features)}")
    if rule.min_effect:
        echo("minimum effects: " + ", ".join(f"{k} {v}" for k, v in rule.min_effect.items()))
    command = " ".join(rule.trigger.command) if rule.trigger.command else "none"
    echo(f"trigger on {', '.join(rule.trigger.when)}: {command}"
         + (f"; feedback from {rule.trigger.min_feedback}" if rule.trigger.min_feedback else ""))
