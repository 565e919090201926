"""`llmops tune`: tuning backends as one command (and the MLproject `tune` step)."""

from __future__ import annotations

import typer

from llmops.cli_support import TrackingUri, echo, start


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
