"""`llmops registry`: register the chain as a model version, promote it, show its bundle."""

from __future__ import annotations

import typer

from llmops.cli_support import TrackingUri, blank_to_none, echo, start

app = typer.Typer(no_args_is_help=True)


@app.command("register")
def register_command(
    tune_run_id: str = typer.Option(..., help="The tune run whose retriever is packaged."),
    eval_run_id: str = typer.Option(..., help="The evaluation run of that retriever."),
    model_name: str = typer.Option(None, help="Registered model name (default: settings)."),
    tracking_uri: str = TrackingUri,
) -> None:
    """Log the chain as a pyfunc from code, register it as a new version with alias dev."""
    import mlflow

    from registry.register import register_chain

    settings = start(**{"model.registered_name": model_name, "mlflow.tracking_uri": tracking_uri})
    with mlflow.start_run(run_name="register"):
        version = register_chain(settings.model.registered_name, tune_run_id, eval_run_id)
    echo(f"registered models:/{settings.model.registered_name}/{version} (alias dev)")


@app.command("promote")
def promote_command(
    model_name: str = typer.Option(None, help="Registered model name (default: settings)."),
    version: str = typer.Option(..., help="Model version to promote."),
    alias: str = typer.Option("staging", "--to", "--alias", help="Target alias: staging or production."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Check the gates, move nothing."),
    tracking_uri: str = TrackingUri,
) -> None:
    """Move the alias to the version when the gates pass on its eval run."""
    import mlflow

    from registry.promote import promote

    settings = start(**{"model.registered_name": blank_to_none(model_name), "mlflow.tracking_uri": tracking_uri})
    with mlflow.start_run(run_name="promote"):  # every promotion attempt leaves a run with its outcome
        mlflow.set_tags({"llmops.step": "promote", "llmops.alias": alias, "llmops.model_version": version})
        outcome = promote(settings.model.registered_name, version, alias, settings.evaluation.gates_file, dry_run)
        mlflow.set_tag("llmops.moved", str(outcome.moved).lower())
    echo(outcome.report())


@app.command("show")
def show_command(model_name: str = typer.Argument(...), version: str = typer.Argument(...),
                 tracking_uri: str = TrackingUri) -> None:
    """Print a version's release bundle (prompt, instruction hash, dataset digest, eval run) and aliases."""
    from mlflow.tracking import MlflowClient

    from registry.promote import get_version

    start(**{"mlflow.tracking_uri": tracking_uri})
    mv = get_version(MlflowClient(), model_name, version)
    echo(f"{model_name} v{mv.version}  aliases: {', '.join(mv.aliases) or '-'}")
    for key in sorted(mv.tags):
        if key.startswith("llmops."):
            echo(f"  {key.removeprefix('llmops.')}: {mv.tags[key]}")
