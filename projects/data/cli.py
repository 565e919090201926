"""`llmops data`: the data preparation step."""

from __future__ import annotations

from pathlib import Path

import typer

from llmops.cli_support import TrackingUri, echo, start

data_app = typer.Typer(no_args_is_help=True)


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
