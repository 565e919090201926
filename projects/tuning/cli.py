"""`llmops tune`: tuning backends as one command (and the MLproject `tune` step). Parses flags, delegates."""

from __future__ import annotations

import json

import typer

from llmops.cli_support import (
    Quiet,
    TrackingUri,
    blank_to_none,
    echo,
    row_progress,
    setting_option,
    settings_for,
    start,
)


def tune_command(
    train_uri: str = typer.Option(..., help="URI of the train JSONL (e.g. runs:/<id>/datasets/train.jsonl)."),
    eval_uri: str = typer.Option(..., help="URI of the eval JSONL."),
    backend: str = setting_option("tuning.backend", "local (retrieval answerer), hf (LoRA), vertex (Gemini "
                                  "supervised tuning) or openai_compat (a served model, prompt-only)."),
    vectorizer: str = setting_option("backend.vectorizer", "local: tfidf or minilm (needs the embeddings extra)."),
    abstain_value: str = setting_option("backend.abstain_value", "local: utility of abstaining, used to choose "
                                        "the threshold."),
    base_model: str = setting_option("tuning.hf.base_model_path, tuning.vertex.base_model",
                                     "hf: model directory; vertex: Gemini id (e.g. gemini-2.5-flash)."),
    epochs: str = setting_option("tuning.hf.epochs, tuning.vertex.epochs", "hf/vertex: training epochs (1-100)."),
    learning_rate: str = setting_option("tuning.hf.learning_rate", "hf: AdamW learning rate (0-1]."),
    batch_size: str = setting_option("tuning.hf.batch_size", "hf: examples per step."),
    lora_r: str = setting_option("tuning.hf.lora_r", "hf: LoRA rank."),
    lora_alpha: str = setting_option("tuning.hf.lora_alpha", "hf: LoRA alpha."),
    max_length: str = setting_option("tuning.hf.max_length", "hf: tokens per example (truncated)."),
    learning_rate_multiplier: str = setting_option("tuning.vertex.learning_rate_multiplier",
                                                   "vertex: multiplier of the default rate (0-10]."),
    adapter_size: str = setting_option("tuning.vertex.adapter_size", "vertex: adapter size 1, 2, 4, 8, 16 or 32."),
    gcs_uri: str = setting_option("tuning.vertex.gcs_uri", "vertex: gs://bucket/prefix for the uploaded JSONL."),
    project: str = setting_option("tuning.vertex.project", "vertex: Google Cloud project (none: ADC's)."),
    location: str = setting_option("tuning.vertex.location", "vertex: region, e.g. us-central1."),
    seed: str = setting_option("tuning.seed", "Random seed (hf): same inputs and seed give the same adapter."),
    validation_percent: str = setting_option("tuning.validation_percent",
                                             "Share of train the tuner chooses its knobs on (0-50)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON (stdout holds nothing else)."),
    quiet: bool = Quiet,
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
    with row_progress(f"tune {settings.tuning.backend}", quiet) as progress:
        out = run_tuning(settings, train_uri, eval_uri, progress=progress)
    if as_json:
        echo(json.dumps(out, indent=2, default=str))
        return
    for key in ("run_id", "provider_kind", "retriever_uri", "adapter_uri", "job_name", "tuned_model", "endpoint"):
        if out.get(key):
            echo(f"{key}: {out[key]}")
