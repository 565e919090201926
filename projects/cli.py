"""`llmops pipeline run`: the `main` driver."""

from __future__ import annotations

import typer

from llmops.cli_support import TrackingUri, blank_to_none, echo, start

pipeline_app = typer.Typer(no_args_is_help=True)


@pipeline_app.command("run")
def pipeline_command(
    tag_pattern: str = typer.Option(None, help="Regex over tags (default: settings)."),
    answer_date_cutoff: str = typer.Option(None, help="Answer date cutoff YYYY-MM-DD (default: settings)."),
    limit: str = typer.Option(None, help="Maximum pairs (default: settings)."),
    eval_percent: str = typer.Option(None, help="Eval split percent (default: settings)."),
    test_percent: str = typer.Option(None, help="Test split percent, 0-50 (default: settings)."),
    backend: str = typer.Option(None, help="Tuning backend: local, hf, vertex or openai_compat (default: settings)."),
    base_model: str = typer.Option(None, help="hf: base model directory; vertex: Gemini id (default: settings)."),
    epochs: str = typer.Option(None, help="hf/vertex: training epochs (default: settings)."),
    vectorizer: str = typer.Option(None, help="tfidf or minilm (default: settings)."),
    abstain_value: str = typer.Option(None, help="Utility of abstaining (default: settings)."),
    model_name: str = typer.Option(None, help="Registered model name (default: settings)."),
    promote_to: str = typer.Option("staging", help="Alias to promote to when the gates pass."),
    tracking_uri: str = TrackingUri,
) -> None:
    """Run prepare_data -> tune -> evaluate -> register -> promote as child runs, reusing unchanged steps."""
    from llmops.cli_support import settings_for
    from projects.pipeline import run_pipeline

    # --base-model and --epochs mean the chosen backend's keys; the backend may come from the settings.
    is_vertex = (blank_to_none(backend) or settings_for(**{"tuning.backend": None}).tuning.backend) == "vertex"
    settings = start(**{
        "data.tag_pattern": tag_pattern, "data.answer_date_cutoff": answer_date_cutoff, "data.limit": limit,
        "data.eval_percent": eval_percent, "dataprep.test_percent": test_percent, "tuning.backend": backend,
        "tuning.vertex.base_model" if is_vertex else "tuning.hf.base_model_path": base_model,
        "tuning.vertex.epochs" if is_vertex else "tuning.hf.epochs": epochs, "backend.vectorizer": vectorizer,
        "backend.abstain_value": abstain_value, "model.registered_name": model_name,
        "mlflow.tracking_uri": tracking_uri,
    })
    outcome = run_pipeline(settings, promote_to=blank_to_none(promote_to) or "staging", log=echo)
    echo(f"model: models:/{outcome['model_name']}@{outcome['alias']} (version {outcome['version']})")
