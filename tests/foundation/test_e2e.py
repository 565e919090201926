"""The whole loop through `mlflow run` on a real SQLite store and real DuckDB, then serving in a new process.

The loop runs with a test split (`-P test_percent=10`): the digest every step records is the data step's (over
train+eval+test), and "eval dataset is current" compares within the lineage, so another dataset prepared beside it
in the same experiment does not block its promotion (the last test)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
MODEL = "so-qa-assistant"

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]  # whole loops: minutes on a loaded 2-core machine


def _env(workdir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLMOPS_", "MLFLOW_"))}
    env.update(
        MLFLOW_TRACKING_URI=f"sqlite:///{workdir / 'mlflow.db'}",
        LLMOPS_DATA__OUTPUT_DIR=str(workdir / "datasets"),
        MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false", MLFLOW_MODEL_CATALOG_URI="",
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
    )
    return env


def _run(args: list[str], workdir: Path, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=False, cwd=workdir, env=_env(workdir), capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> dict:
    workdir = tmp_path_factory.mktemp("loop")
    cmd = [str(BIN / "mlflow"), "run", str(REPO), "--env-manager", "local", "--experiment-name", "llmops",
           "-P", "test_percent=10"]
    first = _run(cmd, workdir)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    second = _run(cmd, workdir)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    return {"workdir": workdir, "first": first, "second": second}


@pytest.fixture
def client(loop: dict, monkeypatch: pytest.MonkeyPatch):
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{loop['workdir'] / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    return MlflowClient(uri, uri)


def _runs_by_step(client) -> dict[str, list]:
    experiment = client.get_experiment_by_name("llmops")
    runs = client.search_runs([experiment.experiment_id], max_results=200)
    out: dict[str, list] = {}
    for run in runs:
        out.setdefault(run.data.tags.get("llmops.step", run.info.run_name), []).append(run)
    return out


def test_registered_version_alias_prompt_and_dataset(client) -> None:
    staging = client.get_model_version_by_alias(MODEL, "staging")
    dev = client.get_model_version_by_alias(MODEL, "dev")
    assert str(staging.version) == str(dev.version) == "1"
    tags = staging.tags
    steps = _runs_by_step(client)
    (prep,) = [r for r in steps["prepare_data"] if r.info.status == "FINISHED"]
    assert tags["llmops.dataset_digest"] == prep.data.tags["llmops.dataset_digest"]
    # the prompt version the model bundles is the one the dataset was built with, and it is linked in MLflow
    assert tags["llmops.prompt_version"] == prep.data.params["prompt_version"]
    assert tags["llmops.instruction_hash"] == prep.data.params["instruction_hash"]
    register_run = client.get_run(staging.run_id)
    linked = json.loads(register_run.data.tags["mlflow.linkedPrompts"])
    assert {"name": tags["llmops.prompt_name"], "version": tags["llmops.prompt_version"]} in linked
    import mlflow.genai

    prompt = mlflow.genai.load_prompt(f"prompts:/{tags['llmops.prompt_name']}/{tags['llmops.prompt_version']}")
    assert prompt.tags["llmops.instruction_hash"] == tags["llmops.instruction_hash"]
    # the eval run that justified staging holds the gate metrics
    eval_metrics = client.get_run(tags["llmops.eval_run_id"]).data.metrics
    assert {"answered_token_f1", "coverage", "token_f1/mean", "rouge_l/mean", "exact_match/mean"} <= set(eval_metrics)


def test_steps_are_child_runs_with_comparable_params(client) -> None:
    steps = _runs_by_step(client)
    parents = {r.info.run_id for r in steps["main"]}
    for step in ("prepare_data", "tune", "evaluate", "register", "promote"):
        finished = [r for r in steps[step] if r.info.status == "FINISHED"]
        assert len(finished) == 1, f"{step} should have run once and been reused after"
        assert finished[0].data.tags["mlflow.parentRunId"] in parents
    (tune,) = steps["tune"]
    assert {"prompt_name", "prompt_version", "dataset_digest", "backend"} <= set(tune.data.params)
    assert "threshold" in tune.data.metrics


def test_second_run_reuses_every_step(loop: dict, client) -> None:
    output = loop["second"].stdout + loop["second"].stderr
    for step in ("prepare_data", "tune", "evaluate", "register", "promote"):
        assert f"[{step}] reusing run" in output
    assert [str(v.version) for v in client.search_model_versions(f"name='{MODEL}'")] == ["1"]


def test_prediction_by_alias_in_a_fresh_process(loop: dict) -> None:
    result = _run([str(BIN / "llmops"), "serve", "predict", "--model", f"models:/{MODEL}@staging",
                   "--question", "How do I check whether a file exists in Python?"], loop["workdir"])
    assert result.returncode == 0, result.stderr[-2000:]
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["model_version"] == "1" and answer["prompt_name"] == "so-qa"
    assert answer["citations"] and answer["citations"][0]["link"].startswith("https://stackoverflow.com/q/")
    assert isinstance(answer["abstained"], bool) and answer["answer"]


def test_batch_prediction_writes_jsonl(loop: dict) -> None:
    workdir = loop["workdir"]
    (workdir / "questions.jsonl").write_text(
        json.dumps({"question": "How do I reverse a list?"}) + "\n" + json.dumps({"question": "Parse JSON?"}) + "\n")
    result = _run([str(BIN / "llmops"), "serve", "predict", "--model", f"models:/{MODEL}@staging",
                   "--input", "questions.jsonl", "--output", "answers.jsonl"], workdir)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [json.loads(line) for line in (workdir / "answers.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(r["model_version"] == "1" for r in rows)


def test_unknown_alias_is_one_clear_line(loop: dict) -> None:
    result = _run([str(BIN / "llmops"), "serve", "predict", "--model", f"models:/{MODEL}@nope",
                   "--question", "hi"], loop["workdir"])
    assert result.returncode == 4
    assert "alias" in result.stderr and "Traceback" not in result.stderr


def test_unknown_entry_point_parameter_fails(loop: dict) -> None:
    result = _run([str(BIN / "mlflow"), "run", str(REPO), "--env-manager", "local", "--experiment-name", "llmops",
                   "-e", "prepare_data", "-P", "bogus=1"], loop["workdir"])
    assert result.returncode != 0
    assert "No such option: --bogus" in result.stderr


def test_every_alias_move_is_in_the_ledger(loop: dict) -> None:
    result = _run([str(BIN / "llmops"), "registry", "history", MODEL, "--json"], loop["workdir"])
    assert result.returncode == 0, result.stderr[-2000:]
    moves = json.loads(result.stdout)
    # the pipeline's moves (the last test of this module promotes on to production after them)
    assert [(m["alias"], str(m["to_version"])) for m in moves][:2] == [("dev", "1"), ("staging", "1")]


def test_one_digest_across_the_steps_and_an_unrelated_dataset_beside_it(loop: dict, client) -> None:
    workdir = loop["workdir"]
    steps = _runs_by_step(client)
    (prep,) = [r for r in steps["prepare_data"] if r.info.status == "FINISHED"]
    (tune,) = [r for r in steps["tune"] if r.info.status == "FINISHED"]
    (evaluation,) = [r for r in steps["evaluate"] if r.info.status == "FINISHED"]
    version = client.get_model_version_by_alias(MODEL, "staging")
    digest = prep.data.tags["llmops.dataset_digest"]
    # one digest, computed once (by the data step, over train+eval+test) and recorded alike by every step
    assert prep.data.params["dataset_scope"] == tune.data.params["dataset_scope"] == "train+eval+test"
    assert tune.data.params["dataset_digest"] == evaluation.data.params["dataset_digest"] == digest
    assert version.tags["llmops.dataset_digest"] == digest and version.tags["llmops.dataset_scope"] == "train+eval+test"
    lineage = prep.data.tags["llmops.dataset_lineage"]
    assert tune.data.params["dataset_lineage"] == evaluation.data.params["dataset_lineage"] == lineage
    assert version.tags["llmops.dataset_lineage"] == lineage
    # the threshold was chosen on validation rows carved from train, and the eval split was scored beside baselines
    assert int(tune.data.params["validation_examples"]) > 0
    metrics = evaluation.data.metrics
    assert metrics["vs/random_answer/answered_token_f1/ci_low"] >= 0.05 and metrics["n_rows"] >= 30

    # another dataset prepared later in the same experiment (another lineage) leaves this one current
    llmops = str(BIN / "llmops")
    prepared = _run([llmops, "data", "prepare", "--tag-pattern", "pandas|numpy", "--eval-percent", "30"], workdir)
    assert prepared.returncode == 0, prepared.stderr[-2000:]
    assert len([r for r in _runs_by_step(client)["prepare_data"] if r.info.status == "FINISHED"]) == 2
    approved = _run([llmops, "registry", "approve", MODEL, str(version.version), "--by", "rita"], workdir)
    assert approved.returncode == 0, approved.stderr[-2000:]
    promoted = _run([llmops, "registry", "promote", MODEL, str(version.version), "--to", "production",
                     "--reason", "ship"], workdir)
    assert promoted.returncode == 0, promoted.stdout[-2000:] + promoted.stderr[-2000:]
    assert "PASS  eval dataset is current" in promoted.stdout and f"lineage {lineage}" in promoted.stdout
    assert str(client.get_model_version_by_alias(MODEL, "production").version) == str(version.version)
