"""One frozen settings object, loaded once per process.

Precedence, lowest first: defaults < config file (`llmops.yaml`, or the path in `LLMOPS_CONFIG`)
< environment (`LLMOPS_*` with `__` between nested keys, plus `MLFLOW_TRACKING_URI`)
< explicit overrides (CLI flags). Nothing here runs at import time.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from types import UnionType
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from llmops.errors import ConfigError

QUESTIONS_TABLE = "bigquery-public-data.stackoverflow.posts_questions"
ANSWERS_TABLE = "bigquery-public-data.stackoverflow.posts_answers"
DEFAULT_CONFIG_FILE = "llmops.yaml"


def repo_root() -> Path:
    """The checkout this package runs from (editable install): home of data/sample, prompts, gates."""
    return Path(__file__).resolve().parents[1]


def _default_tables() -> dict[str, str]:
    sample = repo_root() / "data" / "sample"
    return {
        QUESTIONS_TABLE: str(sample / "posts_questions.jsonl"),
        ANSWERS_TABLE: str(sample / "posts_answers.jsonl"),
    }


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class MlflowSettings(_Section):
    tracking_uri: str = "sqlite:///mlflow.db"

    @field_validator("tracking_uri")
    @classmethod
    def _absolute_sqlite(cls, value: str) -> str:
        """A relative SQLite path means the current directory; pin it so step subprocesses agree."""
        prefix = "sqlite:///"
        if value.startswith(prefix) and not value.startswith(prefix + "/") and ":memory:" not in value:
            return prefix + str(Path(value.removeprefix(prefix)).resolve())
        return value
    registry_uri: str | None = None
    experiment_name: str = "llmops"
    artifact_location: str | None = Field(
        default=None, description="Where new experiments store artifacts; default: mlartifacts/ beside a SQLite db."
    )


class WarehouseSettings(_Section):
    engine: Literal["duckdb", "bigquery"] = "duckdb"
    tables: dict[str, str | list[str]] = Field(
        default_factory=_default_tables,
        description="BigQuery table name -> local Parquet/CSV/JSONL file, glob or list of them (DuckDB engine "
                    "only; several files are read as one table, e.g. several imported site dumps).",
    )
    project: str | None = Field(default=None, description="GCP project billed for BigQuery jobs.")
    location: str | None = None
    maximum_bytes_billed: int = Field(default=10 * 1024**3, gt=0)

    @field_validator("tables")
    @classmethod
    def _absolute_paths(cls, value: dict[str, str | list[str]]) -> dict[str, str | list[str]]:
        def absolute(path: str) -> str:
            return str(Path(path).expanduser().resolve())

        resolved: dict[str, str | list[str]] = {}
        for name, paths in value.items():
            if isinstance(paths, list):
                if not paths:
                    raise ValueError(f"table {name}: empty list of files")
                resolved[name] = [absolute(path) for path in paths]
            else:
                resolved[name] = absolute(paths)
        return resolved

    def table_files(self, name: str) -> list[Path]:
        """The files behind a mapped table: globs expanded (sorted, so the order is stable), plain paths as given
        (existing or not: the warehouse names a missing one); each file once."""
        return table_files(self.tables[name])


def table_files(paths: str | list[str]) -> list[Path]:
    """`warehouse.tables` value -> files: globs expanded and sorted, plain paths kept, duplicates dropped."""
    import glob

    files: list[Path] = []
    for pattern in [paths] if isinstance(paths, str) else paths:
        if glob.has_magic(pattern):
            files.extend(Path(match) for match in sorted(glob.glob(pattern, recursive=True)))
        else:
            files.append(Path(pattern))
    return list(dict.fromkeys(files))


class DataSettings(_Section):
    query: str = "qa_pairs"
    tag_pattern: str = "python"
    answer_date_cutoff: str | None = Field(
        default="2020-01-01", description="Keep accepted answers created on/after (YYYY-MM-DD); none = no cutoff, "
        "answers without a date kept too.")
    limit: int = Field(default=1_000_000, gt=0)
    eval_percent: int = Field(default=20, ge=1, le=99)
    output_dir: str = "outputs/datasets"

    @field_validator("output_dir")
    @classmethod
    def _absolute_dir(cls, value: str) -> str:
        return str(Path(value).expanduser().resolve())

    @field_validator("answer_date_cutoff", mode="before")
    @classmethod
    def _iso_date(cls, value: Any) -> str | None:
        from datetime import date

        if value is None or (isinstance(value, str) and value.strip().lower() == "none"):
            return None
        if not isinstance(value, str):
            value = str(value)  # YAML reads an unquoted 2020-01-01 as a date
        try:
            date.fromisoformat(value)
        except ValueError as exc:
            raise ValueError(f"expected a date as YYYY-MM-DD or none, got {value!r}") from exc
        return value


def _iso_date_or_none(value: str | None) -> str | None:
    from datetime import date

    if value in (None, ""):
        return None
    try:
        date.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(f"expected a date as YYYY-MM-DD, got {value!r}") from exc
    return value


_MEMORY_SIZE = re.compile(r"\d+(\.\d+)?\s*(B|[KMGT]i?B)", re.IGNORECASE)


class DataPrepSettings(_Section):
    """Cleaning, splitting and output knobs of the data step (the query's own filters live in `data`)."""

    question_date_from: str | None = Field(default=None, description="Keep questions created on/after (YYYY-MM-DD).")
    question_date_to: str | None = Field(default=None, description="Keep questions created before (YYYY-MM-DD).")
    test_percent: int = Field(default=0, ge=0, le=50, description="Percent of questions in an optional test split.")
    min_answer_chars: int = Field(default=1, ge=1)
    max_question_chars: int = Field(default=20_000, gt=0)
    max_answer_chars: int = Field(default=20_000, gt=0)
    default_site: str = Field(default="stackoverflow.com", description="Site of tables without a `site` column.")
    bigquery_site_column: bool = Field(default=False, description="BigQuery tables carry a `site` column.")
    batch_rows: int = Field(default=2_000, gt=0, description="Rows per streamed record batch.")
    workers: int = Field(default=0, ge=0, description="Cleaning workers; 0 = one per CPU (threads: at most 4).")
    clean_in: Literal["auto", "threads", "processes"] = Field(
        default="auto", description="Threads (least memory; the GIL-held third of a row caps them below 2x), "
        "processes (scale with cores, ~100-200 MB each) or auto: processes from 4 CPUs, threads below.")
    parquet_min_rows: int = Field(default=100_000, ge=0, description="Also write Parquet splits from this size.")
    duckdb_memory_limit: str = Field(default="600MB", description="DuckDB warehouse query memory (spills beyond).")
    duckdb_threads: int = Field(default=1, ge=0, description="Threads of each DuckDB connection (warehouse, "
                                "staging); each buffers its own row groups (0 = one per core).")
    staging_memory_limit: str = Field(default="256MB", description="Staging database memory (spills beyond).")
    reuse_by_digest: bool = Field(default=True, description="Skip writing when a FINISHED run has the same digest.")

    @field_validator("question_date_from", "question_date_to")
    @classmethod
    def _iso_dates(cls, value: str | None) -> str | None:
        return _iso_date_or_none(value)

    @field_validator("duckdb_memory_limit", "staging_memory_limit")
    @classmethod
    def _memory_size(cls, value: str) -> str:
        if not _MEMORY_SIZE.fullmatch(value.strip()):
            raise ValueError(f"expected a memory size such as 400MB or 2GB, got {value!r}")
        return value.strip()


class PromptSettings(_Section):
    name: str = "so-qa"
    templates_dir: str = Field(default_factory=lambda: str(repo_root() / "prompts" / "templates"))


class BackendSettings(_Section):
    kind: Literal["retrieval"] = "retrieval"
    vectorizer: Literal["tfidf", "minilm"] = "tfidf"
    abstain_value: float = Field(
        default=0.2, ge=0.0, le=1.0, description="Utility credited to an abstention when choosing the threshold."
    )


class ChainProviderSettings(_Section):
    """How the chain calls a remote model: the served model of `tune --backend openai_compat`, and the timeout and
    retries of every remote provider (Vertex included)."""

    model: str | None = Field(default=None, description="openai_compat: the served model name.")
    base_url: str | None = Field(default=None, description="openai_compat: e.g. http://127.0.0.1:8000/v1")
    api_key_env: str | None = Field(default=None, description="Name of the env variable holding the API key.")
    project: str | None = None
    location: str | None = None
    timeout_s: float = Field(default=30.0, gt=0)
    max_retries: int = Field(default=3, ge=0, le=10)
    params: dict[str, Any] = Field(default_factory=dict, description="Generation parameters over the prompt's.")


class ChainSafetySettings(_Section):
    threshold: float = Field(default=0.5, gt=0.0, le=1.0, description="Local classifier blocking probability.")
    lexicon: str | None = Field(default=None, description="Rule file (default: backends/safety_lexicon.yaml).")
    refusal_message: str = "I can't help with that request: the response was withheld by the safety filter."


class ChainSettings(_Section):
    """The served QA chain: prompt (by URI), grounding, provider, safety and the training/serving check."""

    prompt_uri: str | None = Field(default=None, description="prompts:/NAME@ALIAS or /VERSION; default: the "
                                   "version the training data was built with.")
    grounding_k: int = Field(default=3, ge=0, le=20)
    max_question_chars: int = Field(default=8000, gt=0)
    consistency: Literal["error", "warn"] = "error"
    provider: ChainProviderSettings = Field(default_factory=ChainProviderSettings)
    safety: ChainSafetySettings = Field(default_factory=ChainSafetySettings)


class ModelSettings(_Section):
    registered_name: str = "so-qa-assistant"


class PriceSettings(_Section):
    """USD per million tokens, to weigh cost against quality and latency when choosing a model."""

    input_per_1m: float = Field(default=0.0, ge=0.0)
    output_per_1m: float = Field(default=0.0, ge=0.0)


def _default_prices() -> dict[str, PriceSettings]:
    return {
        "local": PriceSettings(),
        "gemini-2.0-flash": PriceSettings(input_per_1m=0.10, output_per_1m=0.40),
        "gemini-2.5-pro": PriceSettings(input_per_1m=1.25, output_per_1m=10.0),
        "gpt-4o-mini": PriceSettings(input_per_1m=0.15, output_per_1m=0.60),
    }


class JudgeSettings(_Section):
    """The LLM-as-judge provider; `none` runs only the deterministic scorers."""

    provider: Literal["none", "openai", "vertex"] = "none"
    model: str | None = None
    base_url: str | None = Field(default=None, description="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1")
    api_key_env: str | None = Field(default=None, description="Name of the variable holding the API key.")
    project: str | None = None
    location: str | None = None
    judges: list[Literal["correctness", "relevance", "groundedness"]] = Field(
        default_factory=lambda: ["correctness", "relevance", "groundedness"])
    max_concurrency: int = Field(default=4, ge=1, le=256)
    retries: int = Field(default=2, ge=0, le=10)
    timeout_s: float = Field(default=30.0, gt=0)
    cache_dir: str = ".llmops/judge-cache"

    @field_validator("cache_dir")
    @classmethod
    def _absolute_cache(cls, value: str) -> str:
        return str(Path(value).expanduser().resolve())


class EvaluationSettings(_Section):
    gates_file: str = Field(default_factory=lambda: str(repo_root() / "evaluation" / "gates.yaml"))
    similarity: Literal["tfidf", "minilm"] = "tfidf"
    bootstrap_samples: int = Field(default=1000, ge=100, le=100_000)
    confidence: float = Field(default=0.95, gt=0.5, lt=1.0)
    seed: int = 0
    workers: int = Field(default=4, ge=1, le=64, description="Rows evaluated in parallel (SQLite stores: keep small).")
    price_model: str = Field(default="local", description="Key of `prices` used for the cost per 1,000 queries.")
    prices: dict[str, PriceSettings] = Field(default_factory=_default_prices)
    judge: JudgeSettings = Field(default_factory=JudgeSettings)


class HFTuningSettings(_Section):
    """LoRA supervised fine-tuning of a local causal LM (the `hf` extra)."""

    base_model_path: str | None = Field(default=None, description="Directory with config, weights and tokenizer.")
    epochs: int = Field(default=3, ge=1, le=100)
    learning_rate: float = Field(default=2e-4, gt=0.0, le=1.0)
    batch_size: int = Field(default=4, ge=1, le=1024)
    lora_r: int = Field(default=8, ge=1, le=256)
    lora_alpha: int = Field(default=16, ge=1, le=1024)
    lora_dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    max_length: int = Field(default=512, ge=16, le=32768, description="Tokens per training example (truncated).")
    max_new_tokens: int = Field(default=256, ge=1, le=8192)
    target_modules: list[str] | None = Field(default=None, description="LoRA targets; default: peft's per-model map.")
    bundle_base_model: bool = Field(default=True, description="Copy the base weights into the logged model.")


class VertexTuningSettings(_Section):
    """Supervised tuning of a Gemini model on Vertex AI; credentials come from ADC, never from here."""

    project: str | None = None
    location: str = "us-central1"
    base_model: str = "gemini-2.5-flash"
    extra_base_models: list[str] = Field(default_factory=list, description="Tunable ids newer than our list.")
    gcs_uri: str | None = Field(default=None, description="gs://bucket/prefix where train/eval JSONL are uploaded.")
    epochs: int = Field(default=3, ge=1, le=100)
    learning_rate_multiplier: float = Field(default=1.0, gt=0.0, le=10.0)
    adapter_size: int = Field(default=4, description="LoRA adapter size: 1, 2, 4, 8, 16 or 32.")
    poll_initial_s: float = Field(default=30.0, ge=0.0)
    poll_max_s: float = Field(default=300.0, ge=0.0)
    timeout_s: float = Field(default=48 * 3600.0, gt=0.0)
    usd_per_million_training_tokens: float | None = Field(default=None, ge=0.0, description="For the cost metric.")
    api_endpoint: str | None = Field(default=None, description="Vertex API endpoint (regional or Private Service "
                                     "Connect), e.g. https://us-central1-aiplatform.googleapis.com/; default: "
                                     "the SDK's.")

    @field_validator("adapter_size")
    @classmethod
    def _adapter_size(cls, value: int) -> int:
        if value not in (1, 2, 4, 8, 16, 32):
            raise ValueError(f"must be 1, 2, 4, 8, 16 or 32, got {value}")
        return value


class TuningSettings(_Section):
    backend: Literal["local", "hf", "vertex", "openai_compat"] = "local"
    seed: int = Field(default=0, ge=0, le=2**32 - 1)
    validation_percent: int = Field(default=15, ge=0, le=50, description="Share of train (stable by example id) "
                                    "on which tuners choose their knobs; the eval split is only gated.")
    hf: HFTuningSettings = Field(default_factory=HFTuningSettings)
    vertex: VertexTuningSettings = Field(default_factory=VertexTuningSettings)


class RegistrySettings(_Section):
    """Release management: the promotion policy, the alias ledger, the smoke budget, notifications."""

    policy_file: str = Field(default_factory=lambda: str(repo_root() / "registry" / "policy.yaml"))
    ledger_uri: str | None = Field(
        default=None, description="No longer used: the ledger lives beside the registry (embedded) or on the team "
                                  "server; any other value is refused.")
    smoke_budget_ms: float = Field(default=5000.0, gt=0, description="Per smoke question, in the fresh process.")
    smoke_timeout_s: float = Field(default=180.0, gt=0, description="Whole infra validation, load included.")
    actor: str | None = Field(default=None, description="Who moves aliases; default: MLFLOW_TRACKING_USERNAME or OS user.")
    notify_command: str | None = Field(default=None, description="Run after every move, the move as JSON on stdin.")
    notify_url: str | None = Field(default=None, description="POSTed the move as JSON after every move.")
    notify_timeout_s: float = Field(default=10.0, gt=0)


class ServingSettings(_Section):
    """`llmops serve start|batch`: what the server follows, how it rolls out and rolls back, its inference log.
    Every key has a flag or an `LLMOPS_SERVING__*` variable; docs/serving.md explains each."""

    model_uri: str | None = Field(default=None, description="models:/NAME@ALIAS the server follows.")
    challenger_uri: str | None = Field(default=None, description="models:/NAME@ALIAS of a challenger (canary or "
                                       "shadow).")
    canary_percent: float = Field(default=0.0, ge=0.0, le=100.0, description="Share of requests the challenger "
                                  "answers (sticky per session header when one is sent).")
    shadow: bool = Field(default=False, description="The challenger answers a copy of every request in the "
                         "background; only the champion's answer is returned.")
    session_headers: list[str] = Field(default_factory=lambda: ["X-Session-ID", "X-User-ID"],
                                       description="Headers naming a user/session: canary routing sticks to them.")
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    workers: int = Field(default=1, ge=1, le=64, description="Server processes (each follows the alias and writes "
                         "its own log parts).")
    threads: int = Field(default=8, ge=1, le=256, description="Requests a remote provider (openai_compat, vertex: "
                         "waiting on the network) answers at once per worker.")
    local_threads: int = Field(default=1, ge=1, le=64, description="Requests a local provider (retrieval, hf: CPU "
                               "in this process) answers at once per worker; more only contend for the GIL.")
    poll_interval_s: float = Field(default=10.0, gt=0, description="How often the registry is asked where the "
                                   "alias points (POST /admin/refresh asks at once).")
    smoke_questions: list[str] | None = Field(default=None, description="Asked of a version before it serves; "
                                              "default: the policy file's smoke questions.")
    auto_rollback: bool = True
    watch_window_s: float = Field(default=300.0, ge=0, description="After a swap, how long the new version is "
                                  "watched for auto-rollback.")
    watch_min_requests: int = Field(default=20, ge=1, description="Requests the new version must have answered "
                                    "before the thresholds are judged.")
    rollback_max_error_rate: float = Field(default=0.05, ge=0.0, le=1.0, description="5xx share above which the "
                                           "new version is rolled back.")
    rollback_max_p99_ms: float = Field(default=5000.0, gt=0, description="p99 latency above which the new version "
                                       "is rolled back.")
    log_uri: str = Field(default="outputs/inference-log", description="Inference log: a folder or fsspec URL "
                         "(gs://...) of Parquet parts; monitoring and feedback read the same place unless their "
                         "own log_uri is set.")
    log_queue_size: int = Field(default=20_000, ge=1, description="Records waiting to be written, at most.")
    log_put_timeout_s: float = Field(default=10.0, ge=0, description="How long a request waits for room in a full "
                                     "queue (backpressure) before its record is dropped and counted.")
    part_max_records: int = Field(default=10_000, ge=1, description="A log part is written at this many records...")
    part_max_seconds: float = Field(default=30.0, gt=0, description="...or this long after its first record.")
    trace_sample_rate: float = Field(default=0.0, ge=0.0, le=1.0, description="Share of requests traced to MLflow "
                                     "(PII-redacted); 0 = none: nothing is written to the tracking store per request.")
    max_body_bytes: int = Field(default=1_048_576, ge=1024, description="Larger request bodies get 413.")
    max_questions: int = Field(default=64, ge=1, description="Questions per /invocations request.")
    max_question_chars: int = Field(default=8000, ge=1, description="Longer questions get 400 (the chain's own "
                                    "limit applies too).")
    shadow_queue_size: int = Field(default=64, ge=1, description="Shadow copies waiting at most; more are skipped "
                                   "and counted, never slowing the champion.")
    routers: list[str] = Field(default_factory=lambda: ["feedback.http:server_router"], description="FastAPI "
                               "routers the server mounts, as module:attribute (an APIRouter or a function of the "
                               "server state returning one); default: POST /feedback. [] mounts none.")
    batch_chunk_rows: int = Field(default=500, ge=1, description="Rows per batch chunk (the unit of resume).")

    @field_validator("log_uri")
    @classmethod
    def _absolute_log(cls, value: str) -> str:
        return _absolute_location(value)


class MonitoringSettings(_Section):
    """`llmops monitor`: where the inference log is, the alarm rule file, default windows and references."""

    log_uri: str | None = Field(default=None, description="Inference log: a folder or fsspec URL of Parquet parts "
                                "(default: serving.log_uri, where the server writes it).")
    rules_file: str = Field(default_factory=lambda: str(repo_root() / "monitoring" / "rules.yaml"))
    window: str = Field(default="1h", description="Window length (1h, 30m, 1d) or records per window (500).")
    skew_reference: str = Field(default="eval", description="eval | train | none | a JSONL/Parquet file.")
    drift_reference: str = Field(default="previous", description="previous | first | train | none | a file.")
    trigger_dir: str = Field(default="outputs/monitoring/triggers", description="Reason files of the trigger.")

    @field_validator("log_uri")
    @classmethod
    def _absolute_log(cls, value: str | None) -> str | None:
        return None if value is None else _absolute_location(value)

    @field_validator("trigger_dir")
    @classmethod
    def _absolute_trigger_dir(cls, value: str) -> str:
        return str(Path(value).expanduser().resolve())


class VertexPipelineSettings(_Section):
    """`llmops pipeline submit --target vertex`: where the compiled pipeline runs. Project, region, bucket and service
    account come from here (llmops.yaml < LLMOPS_PIPELINE__VERTEX__*) and the environment, never from the YAML."""

    project: str | None = Field(default=None, description="Google Cloud project (default: GOOGLE_CLOUD_PROJECT).")
    region: str = Field(default="us-central1", description="Vertex AI region the pipeline runs in.")
    pipeline_root: str | None = Field(default=None, description="gs://bucket/prefix for the pipeline's own outputs.")
    service_account: str | None = Field(default=None, description="Service account the steps run as.")
    api_endpoint: str | None = Field(default=None, description="Vertex API endpoint (default: REGION-aiplatform).")
    api_transport: Literal["grpc", "rest"] = Field(default="grpc", description="grpc, or rest where gRPC is blocked.")
    display_name: str = Field(default="llmops", description="Display name of the pipeline job and its schedule.")
    poll_s: float = Field(default=30.0, gt=0.0, description="Seconds between progress lines while --wait.")
    timeout_s: float = Field(default=24 * 3600.0, gt=0.0, description="How long --wait waits for the job.")


class PipelineSettings(_Section):
    """The pipeline compiled for Kubeflow / Vertex AI Pipelines: the image every step runs in and the tracking
    server the steps report to (both written into the compiled YAML, never credentials)."""

    image: str | None = Field(default=None, description="Container image with this package and the `kfp` extra.")
    tracking_uri: str | None = Field(default=None, description="Tracking server the steps use (default: "
                                     "mlflow.tracking_uri).")
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment of every step (LLMOPS_* keys).")
    vertex: VertexPipelineSettings = Field(default_factory=VertexPipelineSettings)


def _absolute_location(value: str) -> str:
    """A local folder is pinned to an absolute path (step subprocesses and server workers agree); a URL
    (`gs://...`) is kept."""
    return value if "://" in value else str(Path(value).expanduser().resolve())


class FeedbackSettings(_Section):
    """Human feedback on served answers: where it is stored, its rating schema, the limits at the boundary, and how
    the data step folds it into the next dataset version (docs/feedback.md)."""

    store_uri: str = Field(default="outputs/feedback", description="Feedback store: a folder or fsspec URL of "
                           "Parquet parts (append-only, like the inference log).")
    log_uri: str | None = Field(default=None, description="Inference log the feedback resolves through; default: "
                                "monitoring.log_uri, else serving.log_uri (where the server writes it).")
    rating: Literal["thumbs", "scale5"] = Field(default="thumbs", description="The rating schema taken: thumbs "
                                                "(up/down) or scale5 (1-5).")
    low_rating_max: int = Field(default=2, ge=1, le=4, description="scale5: ratings up to this are low (thumbs: "
                                "down is low).")
    good_rating_min: int = Field(default=4, ge=2, le=5, description="scale5: ratings from this confirm an answer "
                                 "(thumbs: up).")
    max_correction_chars: int = Field(default=20_000, gt=0)
    max_comment_chars: int = Field(default=2_000, gt=0)
    max_body_bytes: int = Field(default=65_536, ge=1024, description="POST /feedback: larger bodies get 413.")
    user_header: str | None = Field(default=None, description="POST /feedback: header an authenticating proxy sets "
                                    "with the user; when set it is the user, and a different body `user` is refused.")
    pseudonymise_app_users: bool = Field(default=True, description="Store users of POST /feedback as a sha256 "
                                         "pseudonym (CLI and import reviewers are stored as named).")
    log_assessments: bool = Field(default=True, description="Also log MLflow assessments on the request's trace "
                                  "when the server logged one.")
    include_in_dataset: bool = Field(default=False, description="The data step folds the feedback store into the "
                                     "version it writes (`llmops data prepare --include-feedback`).")
    confirmed_to_eval: bool = Field(default=True, description="Questions with confirmed-good answers (and no "
                                    "near-duplicate in train) become eval cases.")
    source_priority: list[Literal["review", "import", "cli", "server"]] = Field(
        default_factory=lambda: ["review", "import", "cli", "server"],
        description="Conflicting corrections of one question: the first source in this list wins, then the "
                    "majority text, then the newest.")
    review_size: int = Field(default=50, ge=1, le=100_000, description="Rows in a review batch.")
    seed: int = Field(default=0, ge=0)

    @field_validator("store_uri")
    @classmethod
    def _absolute_store(cls, value: str) -> str:
        return _absolute_location(value)

    @field_validator("log_uri")
    @classmethod
    def _absolute_log(cls, value: str | None) -> str | None:
        return None if value is None else _absolute_location(value)

    @field_validator("source_priority")
    @classmethod
    def _every_source_once(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("each source at most once")
        return value


class _YamlFileSource(PydanticBaseSettingsSource):
    """Reads the optional YAML config file; a named file that is missing or malformed is an error."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path | None, required: bool) -> None:
        super().__init__(settings_cls)
        self.path = path
        self.required = required

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover - unused
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        if self.path is None or not self.path.exists():
            if self.required:
                raise ConfigError(f"config file not found: {self.path}")
            return {}
        try:
            data = yaml.safe_load(self.path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {self.path} is not valid YAML: {exc}".splitlines()[0]) from exc
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise ConfigError(f"config file {self.path} must hold a mapping at the top level")
        return data


class _MlflowEnvSource(PydanticBaseSettingsSource):
    """MLflow's own variable, so a tracking server configured for MLflow is used by us too."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover - unused
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        uri = os.environ.get("MLFLOW_TRACKING_URI")
        return {"mlflow": {"tracking_uri": uri}} if uri else {}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="LLMOPS_", env_nested_delimiter="__", extra="forbid", frozen=True, nested_model_default_partial_update=True
    )

    mlflow: MlflowSettings = Field(default_factory=MlflowSettings)
    warehouse: WarehouseSettings = Field(default_factory=WarehouseSettings)
    data: DataSettings = Field(default_factory=DataSettings)
    dataprep: DataPrepSettings = Field(default_factory=DataPrepSettings)
    prompt: PromptSettings = Field(default_factory=PromptSettings)
    backend: BackendSettings = Field(default_factory=BackendSettings)
    chain: ChainSettings = Field(default_factory=ChainSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    evaluation: EvaluationSettings = Field(default_factory=EvaluationSettings)
    registry: RegistrySettings = Field(default_factory=RegistrySettings)
    tuning: TuningSettings = Field(default_factory=TuningSettings)
    serving: ServingSettings = Field(default_factory=ServingSettings)
    monitoring: MonitoringSettings = Field(default_factory=MonitoringSettings)
    pipeline: PipelineSettings = Field(default_factory=PipelineSettings)
    feedback: FeedbackSettings = Field(default_factory=FeedbackSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        explicit = os.environ.get("LLMOPS_CONFIG")
        path = Path(explicit) if explicit else Path(DEFAULT_CONFIG_FILE)
        return (
            init_settings,
            env_settings,
            _MlflowEnvSource(settings_cls),
            _YamlFileSource(settings_cls, path, required=bool(explicit)),
        )


def inference_log_uri(settings: Settings, reader: Literal["serving", "monitoring", "feedback"] = "serving") -> str:
    """The one inference-log location, as `reader` sees it: its own `log_uri` when set (feedback falls back to
    monitoring's), else `serving.log_uri`, where the server writes. Resolved when read, so a flag that moves the
    server's log moves every reader's with it."""
    if reader == "feedback" and settings.feedback.log_uri:
        return settings.feedback.log_uri
    if reader in ("feedback", "monitoring") and settings.monitoring.log_uri:
        return settings.monitoring.log_uri
    return settings.serving.log_uri


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def overrides_from_flags(**dotted: Any) -> dict[str, Any]:
    """Turn {"data.limit": 5, "mlflow.tracking_uri": None} into nested overrides, dropping unset (None) flags."""
    nested: dict[str, Any] = {}
    for dotted_key, value in dotted.items():
        if value is None:
            continue
        node = nested
        *parents, leaf = dotted_key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


ENV_PREFIX = "LLMOPS_"
# LLMOPS_* variables that are not settings.
NON_SETTING_VARIABLES = frozenset({"LLMOPS_CONFIG"})


def _model_of(annotation: Any) -> tuple[str, Any]:
    """('model', cls) for a settings section, ('dict', value annotation) for a mapping, ('leaf', None) else."""
    import typing

    candidates = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, UnionType) else (
        annotation,)
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return "model", candidate
        if typing.get_origin(candidate) is dict:
            return "dict", typing.get_args(candidate)[1]
    return "leaf", None


def _setting_path_error(parts: list[str]) -> str | None:
    """Why `parts` (lower-cased segments of an LLMOPS_A__B__C variable) names no setting; None when it does."""
    import difflib

    model: Any = Settings
    path: list[str] = []
    index = 0
    while index < len(parts):
        part = parts[index]
        fields = model.model_fields
        if part not in fields:
            where = ".".join(path) or "settings"
            close = difflib.get_close_matches(part, list(fields), n=1)
            suggestion = "__".join([*path, close[0], *parts[index + 1:]]).upper() if close else ""
            hint = f"; did you mean {ENV_PREFIX}{suggestion}?" if close else ""
            kind = "section" if not path else "key"
            return f"unknown {kind} {part!r} in {where} (known: {', '.join(fields)}){hint}"
        path.append(part)
        kind, inner = _model_of(fields[part].annotation)
        index += 1
        if kind == "dict" and index < len(parts):  # a free key (a table or price name), then its value's fields
            path.append(parts[index])
            index += 1
            kind, inner = _model_of(inner)
        if kind == "leaf" and index < len(parts):
            return f"{'.'.join(path)} is a value, not a section"
        model = inner
    return None


def check_environment(environ: Mapping[str, str] | None = None) -> None:
    """An `LLMOPS_*` variable must name a setting: a misspelled section or key is an error, not silently ignored
    (pydantic-settings skips variables it does not know)."""
    import difflib

    environ = os.environ if environ is None else environ
    sections = list(Settings.model_fields)
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper in NON_SETTING_VARIABLES:
            continue
        rest = upper.removeprefix(ENV_PREFIX).lower()
        if "__" in rest:
            problem = _setting_path_error([part for part in rest.split("__")])
        elif rest not in sections and difflib.get_close_matches(rest, sections, n=1, cutoff=0.75):
            problem = f"unknown section {rest!r} (did you mean {ENV_PREFIX}" \
                      f"{difflib.get_close_matches(rest, sections, n=1, cutoff=0.75)[0].upper()}?)"
        else:  # a whole section as JSON (LLMOPS_DATA='{...}'), or some other tool's LLMOPS_ variable
            problem = None
        if problem:
            raise ConfigError(f"environment variable {name} names no setting: {problem}")


def load_settings(overrides: dict[str, Any] | None = None, config_file: str | Path | None = None) -> Settings:
    """Build the settings once; a bad value or an `LLMOPS_*` variable that names no setting raises ConfigError
    naming the key and the problem."""
    check_environment()
    previous = os.environ.get("LLMOPS_CONFIG")
    if config_file is not None:
        os.environ["LLMOPS_CONFIG"] = str(config_file)
    try:
        settings = Settings()
        if overrides:
            # init kwargs replace whole sections in pydantic-settings; merge so a flag changes one key only.
            settings = Settings(**_deep_merge(settings.model_dump(), overrides))
        return settings
    except SettingsError as exc:  # e.g. LLMOPS_DATA=x: a section must be JSON
        raise ConfigError(f"invalid settings: {exc} ({exc.__cause__})" if exc.__cause__ else
                          f"invalid settings: {exc}") from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "settings"
        raise ConfigError(f"invalid setting {where}: {first['msg']}") from exc
    finally:
        if config_file is not None:
            if previous is None:
                os.environ.pop("LLMOPS_CONFIG", None)
            else:
                os.environ["LLMOPS_CONFIG"] = previous
