"""`llmops serve predict`: answer one question or a JSONL batch with a model loaded by alias."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from llmops.cli_support import TrackingUri, echo, start
from llmops.errors import InputError

app = typer.Typer(no_args_is_help=True)


@app.command("predict")
def predict_command(
    model: str = typer.Option(..., help="Model URI, e.g. models:/so-qa-assistant@staging."),
    question: str = typer.Option(None, help="One question to answer."),
    input: Path = typer.Option(None, "--input", help="JSONL file of {\"question\": ...} records."),
    output: Path = typer.Option(None, "--output", help="Where batch answers go (JSONL); stdout when omitted."),
    tracking_uri: str = TrackingUri,
) -> None:
    """Print the answer as JSON (schema in docs/prompts.md: answer, citations, safety, versions)."""
    from serving.predict import load_model, predict, read_questions, write_answers

    if (question is None) == (input is None):
        raise InputError("give exactly one of --question or --input")
    start(**{"mlflow.tracking_uri": tracking_uri})
    from prompts.chain import preprocess

    questions = [question] if question is not None else read_questions(input)
    for item in questions:  # reject bad input before paying for the model load
        preprocess(item)
    answers = predict(load_model(model), questions)
    if output is not None:
        write_answers(output, answers)
        blocked = sum(1 for answer in answers if answer.get("safety", {}).get("blocked"))
        echo(f"wrote {len(answers)} answer(s) to {output} ({blocked} blocked by the safety filter)")
    else:
        for answer in answers:
            echo(json.dumps(answer, ensure_ascii=False))
