"""Point MLflow at the configured tracking/registry store and experiment (called at the edges, never at import)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from llmops.errors import ConfigError, NotFoundError
from llmops.settings import Settings


def _default_artifact_location(tracking_uri: str) -> str | None:
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri.removeprefix("sqlite:///")).resolve()
        return (db.parent / "mlartifacts").as_uri()
    return None


def configure_mlflow(settings: Settings) -> str:
    """Set URIs and the active experiment; returns the experiment id."""
    cfg = settings.mlflow
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    mlflow.set_tracking_uri(cfg.tracking_uri)
    if cfg.registry_uri:
        mlflow.set_registry_uri(cfg.registry_uri)
    try:
        attached = os.environ.get("MLFLOW_RUN_ID")
        if attached:  # inside `mlflow run`: the run already exists; use its experiment
            experiment_id = MlflowClient().get_run(attached).info.experiment_id
            mlflow.set_experiment(experiment_id=experiment_id)
            return experiment_id
        experiment = mlflow.get_experiment_by_name(cfg.experiment_name)
        if experiment is None:
            location = cfg.artifact_location or _default_artifact_location(cfg.tracking_uri)
            experiment_id = MlflowClient().create_experiment(cfg.experiment_name, artifact_location=location)
        else:
            experiment_id = experiment.experiment_id
    except MlflowException as exc:
        raise ConfigError(f"cannot use MLflow tracking store {cfg.tracking_uri}: {exc.message}") from exc
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def get_run(run_id: str):
    try:
        return MlflowClient().get_run(run_id)
    except MlflowException as exc:
        raise NotFoundError(f"MLflow run {run_id!r} not found") from exc


def download(uri: str, dst: Path | None = None) -> Path:
    """Download an artifact URI (runs:/..., models:/..., file path) and return the local path."""
    import mlflow.artifacts

    try:
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst) if dst else None))
    except (MlflowException, OSError) as exc:
        raise NotFoundError(f"artifact {uri} not found: {getattr(exc, 'message', exc)}") from exc


def storage_uri(uri: str) -> str:
    """`runs:/id/path` -> the artifact store's own URI, which MLflow dataset sources can resolve."""
    if uri.startswith("runs:/"):
        from mlflow.store.artifact.runs_artifact_repo import RunsArtifactRepository

        try:
            return RunsArtifactRepository.get_underlying_uri(uri)
        except MlflowException as exc:
            raise NotFoundError(f"artifact {uri} not found: {exc.message}") from exc
    return uri


def log_dataset_input(source_uri: str, name: str, digest: str, columns: Mapping[str, str], context: str) -> None:
    """Log a dataset input on the active run that names its source, digest and schema without loading the rows
    (the MLflow UI links runs to the data they read). `source_uri` may be `runs:/...`."""
    import warnings

    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.types import ColSpec, Schema

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
        source = resolve_dataset_source(storage_uri(source_uri))
    schema = Schema([ColSpec(kind, column) for column, kind in columns.items()])
    mlflow.log_input(MetaDataset(source=source, name=name, digest=digest, schema=schema), context=context)
