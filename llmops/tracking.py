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


# MLflow's own defaults retry a dead server for about 250 s (7 retries, backoff factor 2, 120 s timeout).
# A command should fail within 30 s with one line: fewer, shorter retries, and one probe before anything else.
# Values already in the environment win.
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
}
PROBE_TIMEOUT_S = 5.0
SQLITE_LOCK_WAIT_S = 20.0  # as long as MLflow itself waits (busy_timeout 20000): never stricter


def probe_store(uri: str) -> None:
    """One quick look at the store before MLflow's retries get a chance to hang: a tracking server that does
    not answer, or a SQLite file that cannot be written or stays locked, is one ConfigError line."""
    from llmops.secrets import mask_url

    if uri.startswith(("http://", "https://")):
        import httpx

        try:
            httpx.get(uri.rstrip("/") + "/health", timeout=PROBE_TIMEOUT_S)
        except httpx.HTTPError as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ConfigError(f"cannot use MLflow tracking store {mask_url(uri)}: the server does not answer "
                              f"({reason})") from exc
        return
    if uri.startswith("sqlite:///") and ":memory:" not in uri:
        _probe_sqlite(Path(uri.removeprefix("sqlite:///").split("?", 1)[0]), uri)


def _probe_sqlite(path: Path, uri: str) -> None:
    import sqlite3

    if not path.exists():
        parent = path.parent
        if not parent.is_dir() or not os.access(parent, os.W_OK):
            raise ConfigError(f"cannot use MLflow tracking store {uri}: folder {parent} is missing or read-only")
        return
    try:
        with sqlite3.connect(str(path), timeout=SQLITE_LOCK_WAIT_S) as conn:
            conn.execute("BEGIN IMMEDIATE")  # waits for (then takes) the write lock
            conn.execute("CREATE TABLE llmops_write_probe (x)")  # a read-only file fails here
            conn.execute("ROLLBACK")
    except sqlite3.OperationalError as exc:
        text = str(exc)
        if "locked" in text or "busy" in text:
            problem = f"the database is locked by another process (waited {SQLITE_LOCK_WAIT_S:.0f} s)"
        elif "readonly" in text or "read-only" in text or "unable to open" in text:
            problem = "the database is read-only"
        else:
            problem = text
        raise ConfigError(f"cannot use MLflow tracking store {uri}: {problem}") from exc
    except sqlite3.DatabaseError as exc:
        raise ConfigError(f"cannot use MLflow tracking store {uri}: {exc}") from exc


def configure_mlflow(settings: Settings) -> str:
    """Set URIs and the active experiment; returns the experiment id."""
    from llmops.runowner import claim
    from llmops.secrets import mask_url

    cfg = settings.mlflow
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # MLflow prices LLM spans (e.g. a Gemini call) from a model catalog it downloads from github.com; offline that
    # is ~10 s of retries and urllib3 warnings per process. The catalog bundled with MLflow is used unless
    # MLFLOW_MODEL_CATALOG_URI says otherwise.
    os.environ.setdefault("MLFLOW_MODEL_CATALOG_URI", "")
    for key, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)
    probe_store(cfg.tracking_uri)
    if cfg.registry_uri and cfg.registry_uri != cfg.tracking_uri:
        probe_store(cfg.registry_uri)
    mlflow.set_tracking_uri(cfg.tracking_uri)
    if cfg.registry_uri:
        mlflow.set_registry_uri(cfg.registry_uri)
    try:
        attached = os.environ.get("MLFLOW_RUN_ID")
        if attached:  # inside `mlflow run`: the run already exists; use its experiment, and own it
            experiment_id = MlflowClient().get_run(attached).info.experiment_id
            mlflow.set_experiment(experiment_id=experiment_id)
            claim(attached)
            return experiment_id
        experiment = mlflow.get_experiment_by_name(cfg.experiment_name)
        if experiment is None:
            location = cfg.artifact_location or _default_artifact_location(cfg.tracking_uri)
            experiment_id = MlflowClient().create_experiment(cfg.experiment_name, artifact_location=location)
        else:
            experiment_id = experiment.experiment_id
    except MlflowException as exc:
        raise ConfigError(f"cannot use MLflow tracking store {mask_url(cfg.tracking_uri)}: "
                          f"{str(exc.message).splitlines()[0]}") from exc
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


def present(params: Mapping[str, object]) -> dict[str, object]:
    """Parameters with a value: an unset one (None, '') is not logged, so the UI shows no empty cells."""
    return {k: v for k, v in params.items() if v is not None and v != ""}


def name_run(name: str, run_id: str | None = None) -> None:
    """Name a run by what it is (`eval so-qa@v2 retrieval-tfidf`): also a run `mlflow run` created under a
    random name, or one whose name is known only at its end."""
    MlflowClient().set_tag(run_id or mlflow.active_run().info.run_id, "mlflow.runName", name[:250])


def link_dataset_inputs(source_run_ids: list[str], run_id: str | None = None) -> int:
    """Log the dataset inputs of other runs (e.g. the tuning run's train and eval splits) on this run too, so a
    register, promote or compare run links to the datasets behind it; returns how many."""
    from mlflow.entities import DatasetInput

    client = MlflowClient()
    target = run_id or mlflow.active_run().info.run_id
    present_keys = {(d.dataset.name, d.dataset.digest) for d in client.get_run(target).inputs.dataset_inputs}
    inputs: list[DatasetInput] = []
    for source in source_run_ids:
        try:
            run = client.get_run(source)
        except MlflowException:
            continue
        for item in run.inputs.dataset_inputs:
            key = (item.dataset.name, item.dataset.digest)
            if key not in present_keys:
                present_keys.add(key)
                inputs.append(DatasetInput(dataset=item.dataset, tags=item.tags))
    if inputs:
        client.log_inputs(target, datasets=inputs)
    return len(inputs)
