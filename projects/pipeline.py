"""The `main` driver: each step an MLflow Project entry point run as a child run, reused when its inputs match.

A step's reuse key hashes its entry point, its resolved parameters, the code that runs it and, for the data
step, a fingerprint of the local warehouse files. Only runs that FINISHED and were tagged by this driver count.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llmops.errors import LlmopsError
from llmops.settings import Settings, repo_root

STEP_KEY_TAG = "llmops.step_key"
_CODE_DIRS = ("llmops", "projects", "prompts", "backends", "evaluation", "registry")
_CODE_SUFFIXES = {".py", ".sql", ".yaml", ".yml"}


class StepFailedError(LlmopsError):
    exit_code = 8


def code_digest(root: Path | None = None) -> str:
    """Hash of the code and definitions the steps run; any edit invalidates reuse."""
    root = root or repo_root()
    hasher = hashlib.sha256((root / "MLproject").read_bytes())
    for directory in _CODE_DIRS:
        for path in sorted((root / directory).rglob("*")):
            if path.suffix in _CODE_SUFFIXES and "__pycache__" not in path.parts:
                hasher.update(str(path.relative_to(root)).encode())
                hasher.update(path.read_bytes())
    return hasher.hexdigest()[:16]


def warehouse_fingerprint(settings: Settings) -> str | None:
    """Size and mtime of each mapped local table; None for BigQuery, whose tables we cannot fingerprint."""
    if settings.warehouse.engine != "duckdb":
        return None
    parts = []
    for name in sorted(settings.warehouse.tables):
        for path in settings.warehouse.table_files(name):  # globs expanded: a new file matched changes it
            stat = path.stat() if path.exists() else None
            parts.append(f"{name}={path}:{stat and stat.st_size}:{stat and stat.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def step_key(entry_point: str, params: dict[str, Any], extra: str) -> str:
    payload = json.dumps({"entry_point": entry_point, "params": params, "extra": extra}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


class Driver:
    def __init__(self, settings: Settings, experiment_id: str, log: Callable[[str], None]) -> None:
        from mlflow.tracking import MlflowClient

        self.settings = settings
        self.experiment_id = experiment_id
        self.client = MlflowClient()
        self.code = code_digest()
        self.log = log

    def _finished_run(self, key: str):
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{STEP_KEY_TAG}` = '{key}' and attributes.status = 'FINISHED'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        return runs[0] if runs else None

    def step(self, entry_point: str, params: dict[str, Any], extra: str = "",
             still_valid: Callable[[Any], bool] = lambda run: True):
        import mlflow
        import mlflow.projects
        from mlflow.exceptions import ExecutionException

        key = step_key(entry_point, params, f"{self.code}:{extra}")
        previous = self._finished_run(key)
        if previous is not None and still_valid(previous):
            self.log(f"[{entry_point}] reusing run {previous.info.run_id} (inputs unchanged)")
            mlflow.set_tag(f"llmops.reused.{entry_point}", previous.info.run_id)
            return previous
        self.log(f"[{entry_point}] running")
        try:
            submitted = mlflow.projects.run(
                uri=str(repo_root()),
                entry_point=entry_point,
                parameters={k: str(v) for k, v in params.items()},
                env_manager="local",
                experiment_id=self.experiment_id,
                synchronous=True,
            )
        except ExecutionException as exc:
            raise StepFailedError(f"step {entry_point} failed: {exc.message.splitlines()[0]}") from exc
        self.client.set_tag(submitted.run_id, STEP_KEY_TAG, key)
        return self.client.get_run(submitted.run_id)


def export_settings(settings: Settings) -> None:
    """Steps run as subprocesses in the project directory: hand them this process's resolved settings, and this
    interpreter first on PATH (step commands are `python -m llmops.cli ...`)."""
    import sys

    bin_dir = str(Path(sys.executable).parent)
    if os.environ.get("PATH", "").split(os.pathsep)[0] != bin_dir:
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    os.environ["MLFLOW_TRACKING_URI"] = settings.mlflow.tracking_uri
    os.environ["LLMOPS_MLFLOW__TRACKING_URI"] = settings.mlflow.tracking_uri
    os.environ["LLMOPS_MLFLOW__EXPERIMENT_NAME"] = settings.mlflow.experiment_name
    os.environ["LLMOPS_WAREHOUSE__TABLES"] = json.dumps(settings.warehouse.tables)
    os.environ["LLMOPS_DATA__OUTPUT_DIR"] = settings.data.output_dir
    config = os.environ.get("LLMOPS_CONFIG") or ("llmops.yaml" if Path("llmops.yaml").exists() else None)
    if config:
        os.environ["LLMOPS_CONFIG"] = str(Path(config).resolve())


def section_digest(settings: Settings, *sections: str) -> str:
    """Hash of the settings sections a step reads beyond its parameters (e.g. LoRA rank from LLMOPS_* or
    llmops.yaml): changing one reruns the step instead of reusing a stale run."""
    dumped = {name: settings.model_dump(mode="json")[name] for name in sections}
    return hashlib.sha256(json.dumps(dumped, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_pipeline(settings: Settings, promote_to: str = "staging", log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the loop for `settings.tuning.backend`; returns the registered model name, version and its alias."""
    import mlflow

    from llmops.gc import collect_garbage
    from llmops.tracking import configure_mlflow

    experiment_id = configure_mlflow(settings)
    collect_garbage(settings, log=log)  # what killed steps left behind: RUNNING runs, orphan folders
    export_settings(settings)
    backend = settings.tuning.backend
    with mlflow.start_run(run_name=f"pipeline {backend}") as parent:
        driver = Driver(settings, experiment_id, log)
        data = settings.data
        prep = driver.step("prepare_data", {
            "tag_pattern": data.tag_pattern, "answer_date_cutoff": data.answer_date_cutoff,
            "limit": data.limit, "eval_percent": data.eval_percent,
            "test_percent": settings.dataprep.test_percent,
            "question_date_from": settings.dataprep.question_date_from or "",
            "question_date_to": settings.dataprep.question_date_to or "",
        }, extra=f"{warehouse_fingerprint(settings)}:"
                 f"{section_digest(settings, 'data', 'dataprep', 'warehouse', 'prompt')}")
        train_uri, eval_uri = prep.data.tags["llmops.train_uri"], prep.data.tags["llmops.eval_uri"]
        tune = driver.step("tune", {
            "backend": backend, "train_uri": train_uri, "eval_uri": eval_uri, **_tuning_params(settings),
        }, extra=section_digest(settings, "tuning", "backend", "chain"))
        evaluate = driver.step("evaluate", {"tune_run_id": tune.info.run_id, "eval_uri": eval_uri},
                               extra=section_digest(settings, "evaluation", "chain", "backend"))
        name = settings.model.registered_name
        register = driver.step(
            "register",
            {"model_name": name, "tune_run_id": tune.info.run_id, "eval_run_id": evaluate.info.run_id},
            extra=section_digest(settings, "chain", "registry"),
            still_valid=lambda run: _version_exists(name, run.data.tags.get("llmops.model_version")),
        )
        version = register.data.tags["llmops.model_version"]
        driver.step("promote", {"model_name": name, "version": version, "alias": promote_to},
                    still_valid=lambda run: _alias_is(name, promote_to, version))
        mlflow.set_tags({"llmops.model_name": name, "llmops.model_version": version,
                         "llmops.dataset_digest": prep.data.tags["llmops.dataset_digest"],
                         "llmops.tuning_backend": backend,
                         "llmops.step": "main", "llmops.model_uri": f"models:/{name}@{promote_to}"})
        log(f"pipeline run {parent.info.run_id} done")
    return {"model_name": name, "version": version, "alias": promote_to}


def _tuning_params(settings: Settings) -> dict[str, Any]:
    """The tune entry point's parameters for the chosen backend (its other knobs come from the settings)."""
    backend = settings.tuning.backend
    if backend == "local":
        return {"vectorizer": settings.backend.vectorizer, "abstain_value": settings.backend.abstain_value}
    if backend == "hf":
        cfg = settings.tuning.hf
        return {"base_model": cfg.base_model_path or "", "epochs": cfg.epochs, "seed": settings.tuning.seed}
    if backend == "vertex":
        cfg = settings.tuning.vertex
        return {"base_model": cfg.base_model, "epochs": cfg.epochs, "gcs_uri": cfg.gcs_uri or ""}
    return {}


def _version_exists(name: str, version: str | None) -> bool:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    if not version:
        return False
    try:
        MlflowClient().get_model_version(name, version)
        return True
    except MlflowException:
        return False


def _alias_is(name: str, alias: str, version: str) -> bool:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        return str(MlflowClient().get_model_version_by_alias(name, alias).version) == str(version)
    except MlflowException:
        return False


