"""`llmops eval`: the evaluate step and the gate check."""

from __future__ import annotations

import typer

from llmops.cli_support import TrackingUri, echo, start

app = typer.Typer(no_args_is_help=True)


@app.command("run")
def run_command(
    retriever_uri: str = typer.Option(..., help="URI of the tuned retriever (runs:/<tune run>/retriever)."),
    eval_uri: str = typer.Option(..., help="URI of the eval JSONL."),
    train_uri: str = typer.Option(None, help="URI of the train JSONL (records the full dataset digest)."),
    tracking_uri: str = TrackingUri,
) -> None:
    """Evaluate the chain on the eval split with mlflow.genai.evaluate and offline scorers."""
    import mlflow

    start(**{"mlflow.tracking_uri": tracking_uri})
    from evaluation.run import run_evaluate_step

    with mlflow.start_run(run_name="evaluate"):
        metrics = run_evaluate_step(retriever_uri, eval_uri, train_uri or None)
    for name in sorted(metrics):
        echo(f"{name}: {metrics[name]:.4f}")


@app.command("gate")
def gate_command(
    run_id: str = typer.Argument(..., help="Evaluation run id."),
    target: str = typer.Option("staging", help="Which gate set to check (staging, production)."),
    tracking_uri: str = TrackingUri,
) -> None:
    """Print each gate with its numbers; exit non-zero when an enforced gate fails."""
    from evaluation.gates import check_gates, load_gates
    from llmops.errors import GateFailedError
    from llmops.tracking import get_run

    settings = start(**{"mlflow.tracking_uri": tracking_uri})
    gates = load_gates(settings.evaluation.gates_file)
    results = check_gates(get_run(run_id).data.metrics, gates, target)
    for result in results:
        echo(result.line())
    if gates.mode == "enforced" and not all(r.passed for r in results):
        raise GateFailedError(f"{sum(not r.passed for r in results)} gate(s) failed for {target}")
