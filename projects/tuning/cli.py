"""`llmops tune`: tuning backends as one command (and the MLproject `tune` step). Parses flags, delegates."""

from __future__ import annotations

import typer

from llmops.cli_support import TrackingUri, blank_to_none, echo, settings_for, start


def tune_command(
    train_uri: str = typer.Option(..., help="URI of the train JSONL (e.g. runs:/<id>/datasets/train.jsonl)."),
    eval_uri: str = typer.Option(..., help="URI of the eval JSONL."),
    backend: str = typer.Option(None, help="local (retrieval answerer, default), hf (LoRA), vertex (Gemini "
                                "supervised tuning) or openai_compat (a served model, prompt-only)."),
    vectorizer: str = typer.Option(None, help="local: tfidf (default) or minilm (needs the embeddings extra)."),
    abstain_value: str = typer.Option(None, help="local: utility of abstaining, used to choose the threshold."),
    base_model: str = typer.Option(None, help="hf: model directory; vertex: Gemini id (e.g. gemini-2.5-flash)."),
    epochs: str = typer.Option(None, help="hf/vertex: training epochs (1-100)."),
    learning_rate: str = typer.Option(None, help="hf: AdamW learning rate (0-1]."),
    batch_size: str = typer.Option(None, help="hf: examples per step."),
    lora_r: str = typer.Option(None, help="hf: LoRA rank."),
    lora_alpha: str = typer.Option(None, help="hf: LoRA alpha."),
    max_length: str = typer.Option(None, help="hf: tokens per example (truncated)."),
    learning_rate_multiplier: str = typer.Option(None, help="vertex: multiplier of the default rate (0-10]."),
    adapter_size: str = typer.Option(None, help="vertex: adapter size 1, 2, 4, 8, 16 or 32."),
    gcs_uri: str = typer.Option(None, help="vertex: gs://bucket/prefix for the uploaded JSONL."),
    project: str = typer.Option(None, help="vertex: Google Cloud project (default: ADC's)."),
    location: str = typer.Option(None, help="vertex: region, e.g. us-central1."),
    seed: str = typer.Option(None, help="Random seed (hf): same inputs and seed give the same adapter."),
    validation_percent: str = typer.Option(None, help="Share of train the tuner chooses its knobs on (0-50)."),
    tracking_uri: str = TrackingUri,
) -> None:
    """Tune a backend on the train split in one MLflow run that ends with its provider spec (nothing is registered:
    `llmops eval run --tune-run-id` and `llmops registry register` take the run from there)."""
    from projects.tuning.run import run_tuning

    # --base-model and --epochs mean the chosen backend's keys; the backend may come from the settings.
    is_vertex = (blank_to_none(backend) or settings_for(**{"tuning.backend": None}).tuning.backend) == "vertex"
    settings = start(**{
        "tuning.backend": backend, "backend.vectorizer": vectorizer, "backend.abstain_value": abstain_value,
        "tuning.seed": seed, "tuning.validation_percent": validation_percent, "mlflow.tracking_uri": tracking_uri,
        "tuning.vertex.base_model" if is_vertex else "tuning.hf.base_model_path": base_model,
        "tuning.vertex.epochs" if is_vertex else "tuning.hf.epochs": epochs,
        "tuning.hf.learning_rate": learning_rate, "tuning.hf.batch_size": batch_size, "tuning.hf.lora_r": lora_r,
        "tuning.hf.lora_alpha": lora_alpha, "tuning.hf.max_length": max_length,
        "tuning.vertex.learning_rate_multiplier": learning_rate_multiplier,
        "tuning.vertex.adapter_size": adapter_size, "tuning.vertex.gcs_uri": gcs_uri,
        "tuning.vertex.project": project, "tuning.vertex.location": location,
    })
    out = run_tuning(settings, train_uri, eval_uri)
    for key in ("run_id", "provider_kind", "retriever_uri", "adapter_uri", "job_name", "tuned_model", "endpoint"):
        if out.get(key):
            echo(f"{key}: {out[key]}")
