"""One definition, two runners, on real SQLite stores and real DuckDB (data/sample):

- A: `mlflow run .` from a fresh shell (PATH without the venv), as the README writes it;
- B: the compiled KFP YAML run with `kfp.local` (SubprocessRunner) in a fresh store, KFP cache on;
- B2: the same again with the evaluation settings changed: prepare-data and tune are KFP cache hits (their MLflow step
  keys did not change), evaluate is not (its key did, although its task inputs did not) and reruns;
- B3: the MLflow runner (`llmops pipeline run`) in B's store with B2's settings: every step is reused from the
  kfp.local runs, data and tune from B, the rest from B2 (one key, both runners).

Both runners give the same steps and the same kind of registered version with the same aliases.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
MODEL = "so-qa-assistant"
STEPS = ["prepare_data", "tune", "evaluate", "register", "promote"]

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1500)]


def _env(workdir: Path, fresh_shell: bool = False, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLMOPS_", "MLFLOW_", "VIRTUAL_ENV"))}
    env.update(MLFLOW_TRACKING_URI=f"sqlite:///{workdir / 'mlflow.db'}", LLMOPS_DATA__OUTPUT_DIR=str(workdir / "data"),
               MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false", MLFLOW_MODEL_CATALOG_URI="", **extra)
    env["PATH"] = "/usr/bin:/bin" if fresh_shell else f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def _run(args: list[str], workdir: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(args, cwd=workdir, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _kfp_local(workdir: Path, env: dict[str, str], template: str, *flags: str) -> dict:
    proc = _run([str(BIN / "llmops"), "pipeline", "run", "--target", "kfp-local", "--template", template,
                 "--json", *flags], workdir, env)
    return {**json.loads(proc.stdout), "log": proc.stderr}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    a, b = tmp_path_factory.mktemp("mlflow-run"), tmp_path_factory.mktemp("kfp-local")
    env_a = _env(a, fresh_shell=True)
    mlflow_run = _run([str(BIN / "mlflow"), "run", str(REPO), "--env-manager", "local", "--experiment-name",
                       "llmops"], a, env_a)
    env_b = _env(b)
    _run([str(BIN / "llmops"), "pipeline", "compile", "--target", "kfp", "--output", "pipeline.yaml",
          "--image", "python:3.11-llmops"], b, env_b)
    first = _kfp_local(b, env_b, "pipeline.yaml", "--kfp-cache")
    first["aliases"] = _version(_client(b), "1")[1]  # before the second run moves them
    env_b2 = {**env_b, "LLMOPS_EVALUATION__BOOTSTRAP_SAMPLES": "200"}
    second = _kfp_local(b, env_b2, "pipeline.yaml", "--kfp-cache")
    proc = _run([str(BIN / "llmops"), "pipeline", "run", "--json"], b, env_b2)
    reused = {**json.loads(proc.stdout), "log": proc.stderr}
    return {"a": a, "b": b, "mlflow_run": mlflow_run, "first": first, "second": second, "reused": reused}


def _client(workdir: Path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    return MlflowClient(uri, uri)


def _pipelines(client) -> list:
    """Parent runs, oldest first, each with its child step runs by step name."""
    experiment = client.get_experiment_by_name("llmops")
    runs = client.search_runs([experiment.experiment_id], max_results=500, order_by=["attributes.start_time ASC"])
    parents = [r for r in runs if r.data.tags.get("llmops.step") == "main"]
    for parent in parents:
        parent.steps = {r.data.tags["llmops.step"]: r for r in runs
                        if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    return parents


def _version(client, version: str):
    aliases = client.get_registered_model(MODEL).aliases  # {alias: version}
    return client.get_model_version(MODEL, version), {a for a, v in aliases.items() if str(v) == version}


def test_mlflow_run_from_a_fresh_shell_and_kfp_local_give_the_same_steps_and_version(runs) -> None:
    client_a, client_b = _client(runs["a"]), _client(runs["b"])
    (local,), kfp = _pipelines(client_a)[:1], _pipelines(client_b)[0]
    assert local.info.run_name == "pipeline local" and kfp.info.run_name == "pipeline kfp"
    assert sorted(local.steps) == sorted(kfp.steps) == sorted(STEPS)
    assert local.info.status == kfp.info.status == "FINISHED"
    for step in STEPS:  # the same entry point ran with the same parameter names
        assert set(local.steps[step].data.params) == set(kfp.steps[step].data.params), step
    (v_local, aliases_local), (v_kfp, _) = _version(client_a, "1"), _version(client_b, "1")
    assert aliases_local == runs["first"]["aliases"] == {"dev", "staging"}
    assert set(v_local.tags) == set(v_kfp.tags)
    for tag in ("llmops.dataset_digest", "llmops.dataset_scope", "llmops.provider_kind"):
        assert v_local.tags.get(tag) == v_kfp.tags.get(tag), tag
    for tag in ("llmops.model_name", "llmops.model_version", "llmops.dataset_digest", "llmops.tuning_backend",
                "llmops.model_uri"):
        assert local.data.tags[tag] == kfp.data.tags[tag], tag
    assert kfp.data.tags["llmops.model_uri"] == f"models:/{MODEL}@staging"
    assert runs["first"]["version"] == "1" and runs["first"]["alias"] == "staging"
    assert "command not found" not in runs["mlflow_run"].stderr


def test_steps_hand_over_mlflow_locations(runs) -> None:
    kfp = _pipelines(_client(runs["b"]))[0]
    prep = kfp.steps["prepare_data"].info.run_id
    tune = kfp.steps["tune"].data.params
    assert tune["train_uri"] == f"runs:/{prep}/datasets/train.jsonl"
    assert kfp.steps["evaluate"].data.params["tune_run_id"] == kfp.steps["tune"].info.run_id
    assert kfp.steps["promote"].data.params["version"] == "1"


def test_kfp_cache_hits_exactly_when_the_mlflow_step_key_is_unchanged(runs) -> None:
    first_log, log = runs["first"]["log"], runs["second"]["log"]

    def key(text: str, step: str) -> str:
        return re.search(rf"\[{step}\] step key (\w+)", text).group(1)

    for step in ("prepare_data", "tune"):  # same key: the key task ran, the step task was served from the cache
        assert key(first_log, step) == key(log, step)
        assert f"[{step}] run_id:" in first_log and f"[{step}] run_id:" not in log
    assert key(first_log, "evaluate") != key(log, "evaluate")  # its key changed: the task ran, and so did the step
    assert "[evaluate] running" in log and "[evaluate] run_id:" in log
    client = _client(runs["b"])
    first, second = _pipelines(client)[:2]
    # what evaluate's task received besides its key was the same both times: a cache keyed on inputs alone hits
    assert second.steps.get("tune") is None  # a cache hit runs nothing: the tune run is the first pipeline's
    assert second.data.tags["llmops.reused.tune"] == first.steps["tune"].info.run_id
    assert second.data.tags["llmops.reused.prepare_data"] == first.steps["prepare_data"].info.run_id
    assert second.steps["evaluate"].data.params["tune_run_id"] == first.steps["tune"].info.run_id
    assert second.steps["evaluate"].data.tags["llmops.step_key"] != first.steps["evaluate"].data.tags["llmops.step_key"]
    assert runs["second"]["version"] == "2" and _version(client, "2")[1] == {"dev", "staging"}


def test_one_key_for_both_runners_every_step_reused_across_them(runs) -> None:
    client = _client(runs["b"])
    first, second, local = _pipelines(client)
    assert local.info.run_name == "pipeline local" and local.info.status == "FINISHED"
    log = runs["reused"]["log"]
    for step in STEPS:  # the newest FINISHED run with the key: data and tune from the first kfp.local run
        source = (first if step in ("prepare_data", "tune") else second).steps[step]
        assert f"[{step}] reusing run {source.info.run_id}" in log, step
        assert local.data.tags[f"llmops.reused.{step}"] == source.info.run_id
    assert local.steps == {}  # nothing new ran
    assert sorted(str(v.version) for v in client.search_model_versions(f"name='{MODEL}'")) == ["1", "2"]
    assert runs["reused"]["version"] == "2" and runs["reused"]["alias"] == "staging"
