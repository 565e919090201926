"""The MLflow runner of the pipeline definition (`projects/pipeline_definition.py`): the `main` driver, each step an
MLflow Project entry point run as a child run, reused when its inputs match.

A step's reuse key (`pipeline_definition.key_of`) hashes its entry point, its resolved parameters, the code that runs
it and the settings sections it reads (for the data step, a fingerprint of the local warehouse files). Only runs
that FINISHED and were tagged with the key count. The KFP tasks (`projects/pipeline_kfp.py`) run each step through
the same `Driver.step`, so both runners compute one key and reuse each other's runs on a shared tracking server.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from llmops.errors import LlmopsError
from llmops.settings import Settings, repo_root
from projects.pipeline_definition import (  # noqa: F401 - re-exported: the helpers lived here first
    STEP_KEY_TAG,
    STEPS,
    Step,
    code_digest,
    key_of,
    outputs_of,
    section_digest,
    step_key,
    step_settings,
    step_values,
    warehouse_fingerprint,
    wired_values,
)

PARENT_RUN_TAG = "mlflow.parentRunId"


class StepFailedError(LlmopsError):
    exit_code = 8


class Driver:
    def __init__(self, settings: Settings, experiment_id: str, log: Callable[[str], None],
                 parent_run_id: str | None = None) -> None:
        from mlflow.tracking import MlflowClient

        self.settings = settings
        self.experiment_id = experiment_id
        self.client = MlflowClient()
        self.code = code_digest()
        self.log = log
        self.parent_run_id = parent_run_id
        self.key_settings = step_settings()  # after export_settings: what the steps will see

    def _finished_run(self, key: str):
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{STEP_KEY_TAG}` = '{key}' and attributes.status = 'FINISHED'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        return runs[0] if runs else None

    def step(self, entry_point: str, params: dict[str, Any], extra: str = "",
             still_valid: Callable[[Any], bool] = lambda run: True, key: str | None = None):
        """Run `entry_point` with `params` as a child run, or reuse the newest FINISHED run with the same key."""
        import mlflow
        import mlflow.projects
        from mlflow.exceptions import ExecutionException

        key = key or step_key(entry_point, params, f"{self.code}:{extra}")
        previous = self._finished_run(key)
        if previous is not None and still_valid(previous):
            self.log(f"[{entry_point}] reusing run {previous.info.run_id} (inputs unchanged)")
            if self.parent_run_id:
                self.client.set_tag(self.parent_run_id, f"llmops.reused.{entry_point}", previous.info.run_id)
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
        if self.parent_run_id and not mlflow.active_run():  # a KFP task: no active parent run to nest under
            self.client.set_tag(submitted.run_id, PARENT_RUN_TAG, self.parent_run_id)
        return self.client.get_run(submitted.run_id)

    def run_defined(self, step: Step, explicit: Mapping[str, str], wired: Mapping[str, str]):
        """One step of the definition: its values resolved, its key computed, run or reused; returns the run, what
        it hands on and the parameters it ran with."""
        params = step_values(step, self.settings, explicit, wired)
        key = key_of(step, params, self.key_settings, self.code)
        run = self.step(step.name, params, key=key, still_valid=_validity(step, params))
        return run, {**outputs_of(step, run), "step_key": key}, params


def _validity(step: Step, params: Mapping[str, str]) -> Callable[[Any], bool]:
    """Registry steps are reused only while what they did still holds (the version exists, the alias points at it)."""
    name = params.get("model_name", "")
    if step.still_valid == "version":
        return lambda run: _version_exists(name, run.data.tags.get("llmops.model_version"))
    if step.still_valid == "alias":
        return lambda run: _alias_is(name, params.get("alias", "staging"), params["version"])
    return lambda run: True


def export_settings(settings: Settings) -> None:
    """Steps run as subprocesses in the project directory: hand them this process's resolved settings and this
    interpreter (`projects/run-llmops` runs `$LLMOPS_PYTHON -m llmops.cli`; it is also put first on PATH)."""
    import sys

    os.environ["LLMOPS_PYTHON"] = sys.executable
    bin_dir = str(Path(sys.executable).parent)
    if os.environ.get("PATH", "").split(os.pathsep)[0] != bin_dir:
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    os.environ["MLFLOW_TRACKING_URI"] = settings.mlflow.tracking_uri
    os.environ["LLMOPS_MLFLOW__TRACKING_URI"] = settings.mlflow.tracking_uri
    os.environ["LLMOPS_MLFLOW__EXPERIMENT_NAME"] = settings.mlflow.experiment_name
    os.environ["LLMOPS_WAREHOUSE__TABLES"] = json.dumps(settings.warehouse.tables)
    os.environ["LLMOPS_DATA__OUTPUT_DIR"] = settings.data.output_dir
    os.environ["LLMOPS_FEEDBACK__STORE_URI"] = settings.feedback.store_uri  # absolute: the key and the step agree
    config = os.environ.get("LLMOPS_CONFIG") or ("llmops.yaml" if Path("llmops.yaml").exists() else None)
    if config:
        os.environ["LLMOPS_CONFIG"] = str(Path(config).resolve())


def summary_tags(produced: Mapping[str, Mapping[str, str]], resolved: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
    """The tags a pipeline's parent run ends with (both runners)."""
    name, alias = resolved["register"]["model_name"], resolved["promote"]["alias"]
    return {"llmops.model_name": name, "llmops.model_version": produced["register"]["model_version"],
            "llmops.dataset_digest": produced["prepare_data"]["dataset_digest"],
            "llmops.tuning_backend": resolved["tune"]["backend"],
            "llmops.step": "main", "llmops.model_uri": f"models:/{name}@{alias}"}


def run_pipeline(settings: Settings, promote_to: str = "staging", log: Callable[[str], None] = print,
                 params: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Run the loop for `settings.tuning.backend`; returns the registered model name, version and its alias.
    `params`: explicit pipeline parameter values (`-P name=value`), checked against MLproject."""
    import mlflow

    from llmops.gc import collect_garbage
    from llmops.tracking import configure_mlflow
    from projects.pipeline_definition import check_parameters

    explicit = check_parameters({**(params or {}), "promote_to": promote_to})
    experiment_id = configure_mlflow(settings)
    collect_garbage(settings, log=log)  # what killed steps left behind: RUNNING runs, orphan folders
    export_settings(settings)
    backend = explicit.get("backend") or settings.tuning.backend
    with mlflow.start_run(run_name=f"pipeline {backend}") as parent:
        driver = Driver(settings, experiment_id, log, parent_run_id=parent.info.run_id)
        produced: dict[str, dict[str, str]] = {}
        resolved: dict[str, dict[str, str]] = {}
        for step in STEPS:
            _, produced[step.name], resolved[step.name] = driver.run_defined(
                step, explicit, wired_values(step, produced))
        tags = summary_tags(produced, resolved)
        mlflow.set_tags(tags)
        log(f"pipeline run {parent.info.run_id} done")
    return {"model_name": tags["llmops.model_name"], "version": tags["llmops.model_version"],
            "alias": resolved["promote"]["alias"], "run_id": parent.info.run_id,
            "steps": {name: out["run_id"] for name, out in produced.items()},
            "step_keys": {name: out["step_key"] for name, out in produced.items()}}


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
