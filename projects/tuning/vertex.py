"""Supervised tuning of a Gemini base model on Vertex AI through google-genai.

Checks (base model id, GCS URI, bucket, credentials, hyperparameters) all run before the job is created. The
clients are passed in, so tests use fakes with the SDK's interface that return real `types.TuningJob`s.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from llmops.errors import BackendError, ConfigError
from llmops.settings import VertexTuningSettings
from projects.tuning.common import TuningData, chat_jsonl

log = logging.getLogger(__name__)


# Gemini models Vertex AI documents as supporting supervised tuning
# (https://cloud.google.com/vertex-ai/generative-ai/docs/models/gemini-supervised-tuning); newer ones can be
# allowed with tuning.vertex.extra_base_models without a code change.
SUPPORTED_BASE_MODELS = (
    "gemini-2.5-pro", "gemini-2.5-flash", "gemini-2.5-flash-lite",
    "gemini-2.0-flash-001", "gemini-2.0-flash-lite-001",
)
_PUBLISHER_PREFIX = re.compile(r"^(projects/[^/]+/locations/[^/]+/)?publishers/google/models/")
_GCS_URI = re.compile(r"^gs://([a-z0-9][a-z0-9._-]{1,220}[a-z0-9])(?:/(.*))?$")


@dataclass
class VertexJobOutcome:
    job: Any
    metrics: dict[str, float] = field(default_factory=dict)
    series: dict[str, list[tuple[int, float]]] = field(default_factory=dict)


def hyperparams(cfg: VertexTuningSettings) -> dict[str, Any]:
    return {"epochs": cfg.epochs, "learning_rate_multiplier": cfg.learning_rate_multiplier,
            "adapter_size": cfg.adapter_size}


def check_base_model(model_id: str, extra: list[str] | tuple[str, ...] = ()) -> str:
    """The short id (`gemini-2.5-flash`) of a documented tunable model; a publisher path is accepted too."""
    short = _PUBLISHER_PREFIX.sub("", model_id or "")
    allowed = (*SUPPORTED_BASE_MODELS, *extra)
    if short not in allowed:
        raise ConfigError(f"unknown Vertex AI base model {model_id!r} for supervised tuning "
                          f"(supported: {', '.join(allowed)}; add others with tuning.vertex.extra_base_models)")
    return short


def parse_gcs_uri(uri: str | None) -> tuple[str, str]:
    """gs://bucket[/prefix] -> (bucket, prefix without slashes)."""
    if not uri:
        raise ConfigError("no GCS location for tuning data: set tuning.vertex.gcs_uri (gs://bucket/prefix)")
    match = _GCS_URI.match(uri)
    if not match:
        raise ConfigError(f"tuning.vertex.gcs_uri {uri!r} is not a gs://bucket/prefix URI")
    return match.group(1), (match.group(2) or "").strip("/")


def check_credentials(project: str | None) -> str:
    """Application Default Credentials and a project, or a ConfigError saying how to provide them."""
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    try:
        _credentials, adc_project = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
    except DefaultCredentialsError as exc:
        raise ConfigError("no Google Cloud credentials: run `gcloud auth application-default login` or set "
                          "GOOGLE_APPLICATION_CREDENTIALS") from exc
    chosen = project or adc_project
    if not chosen:
        raise ConfigError("no Google Cloud project: set tuning.vertex.project or GOOGLE_CLOUD_PROJECT")
    return chosen


def make_clients(cfg: VertexTuningSettings) -> tuple[Any, Any]:
    """Real google-genai (Vertex) and Cloud Storage clients; credentials checked first."""
    try:
        from google import genai
        from google.cloud import storage
    except ImportError as exc:
        raise ConfigError("vertex tuning needs the 'gcp' extra: pip install 'llmops-mlflow[gcp]'") from exc
    from google.genai import types

    project = check_credentials(cfg.project)
    http_options = types.HttpOptions(base_url=cfg.api_endpoint) if cfg.api_endpoint else None
    return (genai.Client(vertexai=True, project=project, location=cfg.location, http_options=http_options),
            storage.Client(project=project))


def check_bucket(storage_client: Any, gcs_uri: str | None) -> tuple[str, str]:
    bucket_name, prefix = parse_gcs_uri(gcs_uri)
    try:
        exists = storage_client.bucket(bucket_name).exists()
    except Exception as exc:
        raise ConfigError(f"cannot check GCS bucket {bucket_name!r}: {type(exc).__name__}: {exc}") from exc
    if not exists:
        raise ConfigError(f"GCS bucket {bucket_name!r} does not exist (tuning.vertex.gcs_uri)")
    return bucket_name, prefix


def upload_splits(storage_client: Any, gcs_uri: str, data: TuningData) -> tuple[str, str]:
    """Upload chat-format training (train minus validation) and validation JSONL under <prefix>/<digest>/;
    content-addressed, so re-runs overwrite alike. The eval split stays out: it is what gets gated."""
    bucket_name, prefix = parse_gcs_uri(gcs_uri)
    bucket = storage_client.bucket(bucket_name)
    uris = []
    for split, chats in (("train", data.fit_chats), ("validation", data.validation_chats)):
        path = "/".join(p for p in (prefix, data.digest, f"{split}.jsonl") if p)
        bucket.blob(path).upload_from_string(chat_jsonl(chats), content_type="application/jsonl")
        uris.append(f"gs://{bucket_name}/{path}")
    return uris[0], uris[1]


def start_job(genai_client: Any, cfg: VertexTuningSettings, base_model: str, train_gcs: str,
              validation_gcs: str | None, display_name: str) -> Any:
    from google.genai import types

    return genai_client.tunings.tune(
        base_model=base_model,
        training_dataset=types.TuningDataset(gcs_uri=train_gcs),
        config=types.CreateTuningJobConfig(
            epoch_count=cfg.epochs,
            learning_rate_multiplier=cfg.learning_rate_multiplier,
            adapter_size=_adapter_size(cfg.adapter_size),
            validation_dataset=types.TuningValidationDataset(gcs_uri=validation_gcs) if validation_gcs else None,
            tuned_model_display_name=display_name,
        ),
    )


def _adapter_size(size: int) -> Any:
    from google.genai import types

    names = {1: "ONE", 2: "TWO", 4: "FOUR", 8: "EIGHT", 16: "SIXTEEN", 32: "THIRTY_TWO"}
    return types.AdapterSize[f"ADAPTER_SIZE_{names[size]}"]


def _terminal_states() -> tuple[set[Any], set[Any]]:
    from google.genai import types

    states = types.JobState
    done = {states.JOB_STATE_SUCCEEDED}
    bad = {states.JOB_STATE_FAILED, states.JOB_STATE_CANCELLED, states.JOB_STATE_EXPIRED,
           states.JOB_STATE_PARTIALLY_SUCCEEDED}
    return done, bad


def poll_job(genai_client: Any, job: Any, cfg: VertexTuningSettings, sleep: Callable[[float], None] = time.sleep,
             clock: Callable[[], float] = time.monotonic,
             on_update: Callable[[int, Any], None] = lambda n, job: None) -> Any:
    """Poll `tunings.get` with doubling delays (poll_initial_s .. poll_max_s) until a terminal state.

    Ctrl-C / SIGTERM / timeout cancel the remote job (best effort) so it does not keep billing.
    """
    done, bad = _terminal_states()
    delay, started, polls = cfg.poll_initial_s, clock(), 0
    try:
        while job.state not in done | bad:
            if clock() - started > cfg.timeout_s:
                raise BackendError(f"Vertex tuning job {job.name} still {_state(job)} after {cfg.timeout_s:g}s; "
                                   "cancelled")
            sleep(delay)
            job = genai_client.tunings.get(name=job.name)
            polls += 1
            on_update(polls, job)
            delay = min(max(delay * 2, 1.0), cfg.poll_max_s) if delay else 0.0
    except (KeyboardInterrupt, BackendError):
        _cancel(genai_client, job.name)
        raise
    return job


def _cancel(genai_client: Any, name: str) -> None:
    try:
        genai_client.tunings.cancel(name=name)
    except Exception as exc:  # noqa: BLE001 - best effort; the run is already ending with the real reason
        log.warning("could not cancel Vertex tuning job %s: %s", name, exc)


def _state(job: Any) -> str:
    return str(getattr(job.state, "name", job.state))


def progress_point(job: Any) -> dict[str, float]:
    """What a job reports while running: completed epochs and steps."""
    meta = job.tuning_job_metadata
    if meta is None:
        return {}
    return {k: float(v) for k, v in (("completed_epochs", meta.completed_epoch_count),
                                     ("completed_steps", meta.completed_step_count)) if v is not None}


def job_metrics(job: Any, cfg: VertexTuningSettings) -> dict[str, float]:
    """Dataset statistics Vertex computed, plus the estimated cost when a token price is configured."""
    stats = job.tuning_data_stats.supervised_tuning_data_stats if job.tuning_data_stats else None
    metrics: dict[str, float] = {}
    if stats is not None:
        for name in ("tuning_dataset_example_count", "total_billable_token_count", "tuning_step_count",
                     "total_truncated_example_count", "total_tuning_character_count"):
            value = getattr(stats, name)
            if value is not None:
                metrics[name] = float(value)
    if job.start_time and job.end_time:
        metrics["job_duration_s"] = (job.end_time - job.start_time).total_seconds()
    tokens = metrics.get("total_billable_token_count")
    if tokens is not None and cfg.usd_per_million_training_tokens is not None:
        metrics["cost_usd"] = tokens * cfg.epochs * cfg.usd_per_million_training_tokens / 1e6
    return metrics


def failure_reason(job: Any) -> str:
    error = job.error
    detail = f": {error.message}" if error is not None and error.message else ""
    return f"Vertex tuning job {job.name} ended {_state(job)}{detail}"


def tune_vertex(data: TuningData, cfg: VertexTuningSettings, genai_client: Any, storage_client: Any,
                sleep: Callable[[float], None] = time.sleep, progress: Any = None) -> dict[str, Any]:
    """In the active run: upload, start, poll, log; returns the tuned endpoint and the job's figures."""
    import mlflow

    from llmops.tracking import present
    from projects.tuning.tracking import log_series

    base_model = check_base_model(cfg.base_model, cfg.extra_base_models)
    check_bucket(storage_client, cfg.gcs_uri)
    run_id = mlflow.active_run().info.run_id
    train_gcs, validation_gcs = upload_splits(storage_client, cfg.gcs_uri, data)
    validation_gcs = validation_gcs if data.validation else None
    mlflow.log_params(present({"train_gcs_uri": train_gcs, "validation_gcs_uri": validation_gcs,
                               "vertex_location": cfg.location}))
    job = start_job(genai_client, cfg, base_model, train_gcs, validation_gcs, display_name=f"llmops-{run_id[:12]}")
    mlflow.set_tags({"llmops.vertex_job": job.name, "llmops.vertex_job_state": _state(job)})

    if progress is not None:  # epochs as Vertex reports them, the job's state as the description
        progress.start(cfg.epochs)
        progress.set(description=f"vertex job {_state(job)}")

    def on_update(poll: int, current: Any) -> None:
        points = progress_point(current)
        if points:
            log_series({name: [(poll, value)] for name, value in points.items()})
        mlflow.set_tag("llmops.vertex_job_state", _state(current))
        if progress is not None:
            progress.set(completed=points.get("completed_epochs"), description=f"vertex job {_state(current)}")

    job = poll_job(genai_client, job, cfg, sleep=sleep, on_update=on_update)
    mlflow.set_tag("llmops.vertex_job_state", _state(job))
    metrics = job_metrics(job, cfg)
    if metrics:
        mlflow.log_metrics(metrics)
    done, _bad = _terminal_states()
    if job.state not in done:
        raise BackendError(failure_reason(job))
    tuned = job.tuned_model
    if tuned is None or not tuned.endpoint:
        raise BackendError(f"Vertex tuning job {job.name} succeeded but reports no tuned model endpoint")
    mlflow.set_tags({"llmops.vertex_tuned_model": tuned.model or "", "llmops.vertex_endpoint": tuned.endpoint,
                     **({"llmops.vertex_metrics_uri": job.gcs_metrics_uri} if job.gcs_metrics_uri else {}),
                     **({"llmops.vertex_experiment": job.experiment} if job.experiment else {})})
    if tuned.checkpoints:
        log_series({"checkpoint_epoch": [(c.step or i, float(c.epoch or 0)) for i, c in enumerate(tuned.checkpoints)]})
    return {"job_name": job.name, "tuned_model": tuned.model, "endpoint": tuned.endpoint,
            "project": _project(tuned), **metrics}


def _project(tuned: Any) -> str:
    """The project from the endpoint resource name (projects/P/locations/L/endpoints/E)."""
    parts = (tuned.endpoint or "").split("/")
    return parts[1] if len(parts) > 1 and parts[0] == "projects" else ""
