"""`llmops serve`: start (the server that follows an alias), batch (a file, resumable), predict (one question or a
small JSONL file in this process). Thin: flags -> settings, then the functions in serving/."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from llmops.cli_support import Quiet, TrackingUri, check_store, echo, row_progress, setting_option, settings_for
from llmops.errors import ConfigError, InputError

app = typer.Typer(no_args_is_help=True)


def _connect(settings) -> None:
    """A command that only reads the registry: a mistyped local store is refused, no experiment is touched."""
    from serving.server import connect

    check_store(settings, "read")
    connect(settings)


@app.command("start")
def start_command(
    model: str = setting_option("serving.model_uri", "Model to follow: models:/NAME@ALIAS (or /VERSION, fixed).",
                                "--model"),
    challenger: str = setting_option("serving.challenger_uri", "Challenger: models:/NAME@ALIAS, with "
                                     "--canary-percent or --shadow.", "--challenger"),
    canary_percent: float = setting_option("serving.canary_percent", "Share of requests (0-100) the challenger "
                                           "answers; sticky per session header.", "--canary-percent"),
    shadow: bool = setting_option("serving.shadow", "The challenger answers a copy in the background; only the "
                                  "champion's answer is returned.", "--shadow/--no-shadow"),
    host: str = setting_option("serving.host", "Interface to listen on.", "--host"),
    port: int = setting_option("serving.port", "Port to listen on.", "--port"),
    workers: int = setting_option("serving.workers", "Server processes.", "--workers"),
    poll_interval: float = setting_option("serving.poll_interval_s", "Seconds between registry polls.",
                                          "--poll-interval"),
    log: str = setting_option("serving.log_uri", "Inference log: folder or fsspec URL.", "--log"),
    trace_sample_rate: float = setting_option("serving.trace_sample_rate", "Share of requests traced to MLflow "
                                              "(0 = none).", "--trace-sample-rate"),
    tracking_uri: str = TrackingUri,
) -> None:
    """Serve /invocations and /v1/chat/completions, following the alias: warm swap, auto-rollback, canary/shadow,
    /metrics, and an inference log (docs/serving.md)."""
    flags = {"serving.model_uri": model, "serving.challenger_uri": challenger,
             "serving.canary_percent": canary_percent, "serving.shadow": shadow, "serving.host": host,
             "serving.port": port, "serving.workers": workers, "serving.poll_interval_s": poll_interval,
             "serving.log_uri": log, "serving.trace_sample_rate": trace_sample_rate,
             "mlflow.tracking_uri": tracking_uri}
    settings = settings_for(**flags)
    cfg = settings.serving
    from serving.loader import parse_model_uri

    if not cfg.model_uri:
        raise ConfigError("give --model models:/NAME@ALIAS (or set serving.model_uri)")
    parse_model_uri(cfg.model_uri, "--model")
    if cfg.challenger_uri:
        parse_model_uri(cfg.challenger_uri, "--challenger")
        if cfg.shadow and cfg.canary_percent:
            raise ConfigError("choose one of --canary-percent and --shadow for the challenger")
        if not cfg.shadow and not cfg.canary_percent:
            raise ConfigError("--challenger needs --canary-percent P (> 0) or --shadow")
    elif cfg.shadow or cfg.canary_percent:
        raise ConfigError("--canary-percent and --shadow need a --challenger")
    check_store(settings, "read")
    from serving.server import serve

    serve(settings, {k: v for k, v in flags.items() if v is not None})


@app.command("batch")
def batch_command(
    model: str = typer.Option(..., help="Model URI, e.g. models:/so-qa-assistant@production."),
    input: Path = typer.Option(..., "--input", help="Questions: JSONL ({\"question\": ...} per line) or Parquet "  # noqa: B008
                               "(a 'question' column)."),
    output: Path = typer.Option(..., "--output", help="Answers: .jsonl or .parquet (chunks go to OUTPUT.parts/ "  # noqa: B008
                                "until the end)."),
    chunk_rows: int = setting_option("serving.batch_chunk_rows", "Rows per chunk (the unit of resume).",
                                     "--chunk-rows"),
    restart: bool = typer.Option(False, "--restart", help="Discard the chunks of an interrupted run and start over."),
    log: str = setting_option("serving.log_uri", "Inference log: folder or fsspec URL.", "--log"),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    quiet: bool = Quiet,
    tracking_uri: str = TrackingUri,
) -> None:
    """Answer a file in chunks with a progress bar; run it again after an interruption to resume."""
    from serving.batch import check_paths, run_batch

    if chunk_rows is not None and chunk_rows < 1:
        raise ConfigError("--chunk-rows must be at least 1")
    check_paths(input, output)  # before the store is touched
    settings = settings_for(**{"mlflow.tracking_uri": tracking_uri, "serving.log_uri": log,
                               "serving.batch_chunk_rows": chunk_rows})
    _connect(settings)
    from serving.tracing import configure_tracing

    configure_tracing(0.0)
    with row_progress("answering", quiet) as progress:
        summary = run_batch(settings, model, input, output, restart=restart, progress=progress)
    echo(json.dumps(summary.to_dict()) if as_json else summary.line())


@app.command("predict")
def predict_command(
    model: str = typer.Option(..., help="Model URI, e.g. models:/so-qa-assistant@staging."),
    question: str = typer.Option(None, help="One question to answer."),
    input: Path = typer.Option(None, "--input", help="JSONL file of {\"question\": ...} records."),  # noqa: B008
    output: Path = typer.Option(None, "--output", help="Where batch answers go (JSONL); stdout when omitted."),  # noqa: B008
    as_json: bool = typer.Option(False, "--json", help="Answers are printed as JSON lines either way; with "
                                 "--output, print the summary as JSON."),
    tracking_uri: str = TrackingUri,
) -> None:
    """Print the answer as JSON (schema in docs/prompts.md: answer, citations, safety, versions)."""
    from serving.predict import load_model, predict, read_questions, write_answers

    if (question is None) == (input is None):
        raise InputError("give exactly one of --question or --input")
    from prompts.chain import preprocess

    questions = [question] if question is not None else read_questions(input)
    for item in questions:  # reject bad input before paying for the model load
        preprocess(item)
    settings = settings_for(**{"mlflow.tracking_uri": tracking_uri})
    _connect(settings)
    from serving.tracing import configure_tracing

    configure_tracing(settings.serving.trace_sample_rate, settings)
    answers = predict(load_model(model), questions)
    if output is not None:
        write_answers(output, answers)
        blocked = sum(1 for answer in answers if answer.get("safety", {}).get("blocked"))
        if as_json:
            echo(json.dumps({"output": str(output), "answers": len(answers), "blocked": blocked}))
        else:
            echo(f"wrote {len(answers)} answer(s) to {output} ({blocked} blocked by the safety filter)")
    else:
        for answer in answers:
            echo(json.dumps(answer, ensure_ascii=False))
