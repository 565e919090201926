"""One frozen settings object, loaded once per process.

Precedence, lowest first: defaults < config file (`llmops.yaml`, or the path in `LLMOPS_CONFIG`)
< environment (`LLMOPS_*` with `__` between nested keys, plus `MLFLOW_TRACKING_URI`)
< explicit overrides (CLI flags). Nothing here runs at import time.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

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
    model_config = ConfigDict(extra="forbid", frozen=True)


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
    tables: dict[str, str] = Field(
        default_factory=_default_tables,
        description="BigQuery table name -> local Parquet/CSV/JSONL file (DuckDB engine only).",
    )
    project: str | None = Field(default=None, description="GCP project billed for BigQuery jobs.")
    location: str | None = None
    maximum_bytes_billed: int = Field(default=10 * 1024**3, gt=0)

    @field_validator("tables")
    @classmethod
    def _absolute_paths(cls, value: dict[str, str]) -> dict[str, str]:
        return {name: str(Path(path).expanduser().resolve()) for name, path in value.items()}


class DataSettings(_Section):
    query: str = "qa_pairs"
    tag_pattern: str = "python"
    answer_date_cutoff: str = "2020-01-01"
    limit: int = Field(default=1_000_000, gt=0)
    eval_percent: int = Field(default=20, ge=1, le=99)
    output_dir: str = "outputs/datasets"

    @field_validator("output_dir")
    @classmethod
    def _absolute_dir(cls, value: str) -> str:
        return str(Path(value).expanduser().resolve())

    @field_validator("answer_date_cutoff")
    @classmethod
    def _iso_date(cls, value: str) -> str:
        from datetime import date

        try:
            date.fromisoformat(value)
        except ValueError as exc:
            raise ValueError(f"expected a date as YYYY-MM-DD, got {value!r}") from exc
        return value


class PromptSettings(_Section):
    name: str = "so-qa"
    templates_dir: str = Field(default_factory=lambda: str(repo_root() / "prompts" / "templates"))


class BackendSettings(_Section):
    kind: Literal["retrieval"] = "retrieval"
    vectorizer: Literal["tfidf", "minilm"] = "tfidf"
    abstain_value: float = Field(
        default=0.2, ge=0.0, le=1.0, description="Utility credited to an abstention when choosing the threshold."
    )


class ModelSettings(_Section):
    registered_name: str = "so-qa-assistant"


class EvaluationSettings(_Section):
    gates_file: str = Field(default_factory=lambda: str(repo_root() / "evaluation" / "gates.yaml"))


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
    prompt: PromptSettings = Field(default_factory=PromptSettings)
    backend: BackendSettings = Field(default_factory=BackendSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    evaluation: EvaluationSettings = Field(default_factory=EvaluationSettings)

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


def load_settings(overrides: dict[str, Any] | None = None, config_file: str | Path | None = None) -> Settings:
    """Build the settings once; a bad value raises ConfigError naming the key and the problem."""
    previous = os.environ.get("LLMOPS_CONFIG")
    if config_file is not None:
        os.environ["LLMOPS_CONFIG"] = str(config_file)
    try:
        settings = Settings()
        if overrides:
            # init kwargs replace whole sections in pydantic-settings; merge so a flag changes one key only.
            settings = Settings(**_deep_merge(settings.model_dump(), overrides))
        return settings
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
