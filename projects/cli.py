"""CLI for the project steps: `llmops data prepare`, `llmops tune`, `llmops pipeline run`."""

from __future__ import annotations

from pathlib import Path

import typer

from llmops.cli_support import TrackingUri, blank_to_none, echo, start

data_app = typer.Typer(no_args_is_help=True)
pipeline_app = typer.Typer(no_args_is_help=True)


@data_app.command("prepare")
def prepare_command(
    tag_pattern: str = typer.Option(None, help="Regex over the question's `a|b` tags."),
    answer_date_cutoff: str = typer.Option(None, help="Keep accepted answers created on or after this date (YYYY-MM-DD)."),
    limit: str = typer.Option(None, help="Maximum question/answer pairs."),
    eval_percent: str = typer.Option(None, help="Percent of questions in the eval split (1-99)."),
    output_dir: Path = typer.Option(None, help="Where dataset versions are written."),
    tracking_uri: str = TrackingUri,
) -> None:
    """Query the warehouse, apply the instruction template, split and log a versioned dataset."""
    import mlflow

    from projects.data.prepare import log_dataset, prepare, write_dataset
    from projects.data.warehouse import open_warehouse
    from prompts.registry import sync_prompt
    from prompts.template import load_template

    settings = start(**{
        "data.tag_pattern": tag_pattern, "data.answer_date_cutoff": answer_date_cutoff, "data.limit": limit,
        "data.eval_percent": eval_percent, "data.output_dir": output_dir and str(output_dir),
        "mlflow.tracking_uri": tracking_uri,
    })
    template = load_template(settings.prompt.name, settings.prompt.templates_dir)
    warehouse = open_warehouse(settings.warehouse)
    with mlflow.start_run(run_name="prepare_data"):
        prompt, _ = sync_prompt(template)
        prepared = prepare(settings, warehouse, prompt)
        directory = write_dataset(prepared, Path(settings.data.output_dir))
        uris = log_dataset(prepared, directory)
    echo(f"dataset {prepared.digest}: {len(prepared.train)} train / {len(prepared.eval)} eval -> {directory}")
    echo(f"train: {uris['train']}\neval: {uris['eval']}")


def tune_command(
    train_uri: str = typer.Option(..., help="URI of the train JSONL (e.g. runs:/<id>/datasets/train.jsonl)."),
    eval_uri: str = typer.Option(..., help="URI of the eval JSONL."),
    backend: str = typer.Option("local", help="Tuning backend: local (retrieval answerer)."),
    vectorizer: str = typer.Option(None, help="tfidf (default) or minilm (needs the embeddings extra)."),
    abstain_value: str = typer.Option(None, help="Utility of abstaining, used to choose the threshold (0-1)."),
    tracking_uri: str = TrackingUri,
) -> None:
    """Fit the backend on the train split and choose its abstention threshold on the eval split."""
    import mlflow

    from llmops.errors import ConfigError
    from projects.tuning.local import run_tune_step

    if backend != "local":
        raise ConfigError(f"unknown tuning backend {backend!r} (available: local)")
    settings = start(**{"backend.vectorizer": vectorizer, "backend.abstain_value": abstain_value,
                        "mlflow.tracking_uri": tracking_uri})
    with mlflow.start_run(run_name="tune"):
        uri = run_tune_step(train_uri, eval_uri, settings.backend.vectorizer, settings.backend.abstain_value)
    echo(f"retriever: {uri}")


@pipeline_app.command("run")
def pipeline_command(
    tag_pattern: str = typer.Option(None, help="Regex over tags (default: settings)."),
    answer_date_cutoff: str = typer.Option(None, help="Answer date cutoff YYYY-MM-DD (default: settings)."),
    limit: str = typer.Option(None, help="Maximum pairs (default: settings)."),
    eval_percent: str = typer.Option(None, help="Eval split percent (default: settings)."),
    vectorizer: str = typer.Option(None, help="tfidf or minilm (default: settings)."),
    abstain_value: str = typer.Option(None, help="Utility of abstaining (default: settings)."),
    model_name: str = typer.Option(None, help="Registered model name (default: settings)."),
    promote_to: str = typer.Option("staging", help="Alias to promote to when the gates pass."),
    tracking_uri: str = TrackingUri,
) -> None:
    """Run prepare_data -> tune -> evaluate -> register -> promote as child runs, reusing unchanged steps."""
    from projects.pipeline import run_pipeline

    settings = start(**{
        "data.tag_pattern": tag_pattern, "data.answer_date_cutoff": answer_date_cutoff, "data.limit": limit,
        "data.eval_percent": eval_percent, "backend.vectorizer": vectorizer,
        "backend.abstain_value": abstain_value, "model.registered_name": model_name,
        "mlflow.tracking_uri": tracking_uri,
    })
    outcome = run_pipeline(settings, promote_to=blank_to_none(promote_to) or "staging", log=echo)
    echo(f"model: models:/{outcome['model_name']}@{outcome['alias']} (version {outcome['version']})")
