"""`llmops pipeline compile --target kfp`: the YAML kfp writes, read back as data - its inputs with MLproject's
defaults, the DAG, what each step hands on, caching keyed on the MLflow step key, the stamp - and bad input: one
line, non-zero exit, nothing written."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline_helpers import REPO, cli, project_copy  # noqa: E402

IMAGE = "us-docker.pkg.dev/demo/llmops/llmops:abc123"
SERVER = "https://mlflow.example.internal"


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict]:
    """One compile for the module's read-only checks, through the CLI in a clean environment and directory."""
    import contextlib
    import io
    import os

    folder = tmp_path_factory.mktemp("compiled")
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        for key in [k for k in os.environ if k.startswith(("LLMOPS_", "MLFLOW_"))]:
            mp.delenv(key)
        mp.setenv("LLMOPS_PIPELINE__ENV", json.dumps({"LLMOPS_WAREHOUSE__ENGINE": "bigquery"}))
        mp.chdir(folder)
        from llmops.cli import main

        with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as done:
            main(["pipeline", "compile", "--target", "kfp", "--output", "pipeline.yaml", "--image", IMAGE,
                  "--pipeline-tracking-uri", SERVER, "--json"])
    assert not done.value.code, out.getvalue()
    return yaml.safe_load((folder / "pipeline.yaml").read_text()), json.loads(out.getvalue())


def _tasks(spec: dict) -> dict:
    return spec["root"]["dag"]["tasks"]


def test_inputs_are_the_pipeline_parameters_with_mlproject_defaults(compiled) -> None:
    from mlflow.projects._project_spec import load_project

    spec, result = compiled
    inputs = spec["root"]["inputDefinitions"]["parameters"]
    project = load_project(str(REPO))
    expected = {"parent_run_id": ""}
    for step in ("prepare_data", "tune", "evaluate", "register", "promote"):
        for name, param in project.get_entry_point(step).parameters.items():
            if param.default is not None:  # wired parameters have none
                expected["promote_to" if (step, name) == ("promote", "alias") else name] = str(param.default)
    assert {name: value.get("defaultValue") for name, value in inputs.items()} == expected
    assert all(value["parameterType"] == "STRING" for value in inputs.values())
    assert set(result["parameters"]) | {"parent_run_id"} == set(expected)


def test_dag_hands_over_locations_and_run_ids(compiled) -> None:
    spec, _ = compiled
    tasks = _tasks(spec)
    assert set(tasks) == {"start", "prepare-data-key", "prepare-data", "tune-key", "tune", "evaluate-key", "evaluate",
                          "register", "promote", "finish"}

    def source(task: str, param: str) -> tuple[str, str] | str:
        value = tasks[task]["inputs"]["parameters"][param]
        if "taskOutputParameter" in value:
            return value["taskOutputParameter"]["producerTask"], value["taskOutputParameter"]["outputParameterKey"]
        return value.get("componentInputParameter") or value["runtimeValue"]["constant"]

    assert source("tune", "train_uri") == ("prepare-data", "train_uri")
    assert source("tune", "eval_uri") == ("prepare-data", "eval_uri")
    assert source("evaluate", "tune_run_id") == ("tune", "run_id")
    assert source("evaluate", "eval_uri") == ("prepare-data", "eval_uri")
    assert source("register", "eval_run_id") == ("evaluate", "run_id")
    assert source("promote", "version") == ("register", "model_version")
    assert source("promote", "alias") == "promote_to"
    assert source("prepare-data", "limit") == "limit"
    assert source("prepare-data", "include_feedback") == "include_feedback"  # issue 14's switch, a pipeline input
    assert source("prepare-data", "model_name") == source("register", "model_name") == "model_name"  # one value
    for step in ("prepare-data", "tune", "evaluate"):
        assert source(step, "step_key") == (f"{step}-key", "Output")
    assert source("finish", "register_run_id") == ("register", "run_id")
    # every step after the first depends on the one before it (the loop is a line)
    assert "prepare-data" in tasks["tune-key"]["dependentTasks"] and "tune" in tasks["evaluate-key"]["dependentTasks"]
    assert "evaluate" in tasks["register"]["dependentTasks"] and "register" in tasks["promote"]["dependentTasks"]
    outputs = spec["components"]["comp-prepare-data"]["outputDefinitions"]["parameters"]
    assert set(outputs) == {"run_id", "train_uri", "eval_uri", "dataset_digest", "step_key"}
    assert set(spec["root"]["outputDefinitions"]["parameters"]) == {"model_name", "model_version", "alias", "run_id"}


def test_caching_is_keyed_on_the_step_key_and_off_for_the_registry(compiled) -> None:
    spec, _ = compiled
    tasks = _tasks(spec)
    cached = {name for name, task in tasks.items() if task.get("cachingOptions", {}).get("enableCache")}
    assert cached == {"prepare-data", "tune", "evaluate"}
    for name in cached:  # the cached tasks' inputs: their parameters and the key, no per-run value
        assert "parent_run_id" not in tasks[name]["inputs"]["parameters"]


def test_image_environment_and_stamp(compiled) -> None:
    from projects.pipeline_definition import code_digest, definition_digest

    spec, result = compiled
    executors = spec["deploymentSpec"]["executors"]
    assert {e["container"]["image"] for e in executors.values()} == {IMAGE}
    for executor in executors.values():
        env = {e["name"]: e["value"] for e in executor["container"]["env"]}
        assert env["MLFLOW_TRACKING_URI"] == SERVER and env["LLMOPS_MLFLOW__EXPERIMENT_NAME"] == "llmops"
        assert env["LLMOPS_WAREHOUSE__ENGINE"] == "bigquery"
        assert "pip install" not in " ".join(executor["container"]["command"])  # the image has everything
    assert result["definition_digest"] == definition_digest() and result["code_digest"] == code_digest()
    assert f"definition {definition_digest()}, code {code_digest()}" in spec["pipelineInfo"]["description"]
    start = _tasks(spec)["start"]["inputs"]["parameters"]
    assert start["definition_digest"]["runtimeValue"]["constant"] == definition_digest()


def test_compile_is_deterministic_and_atomic(tmp_path: Path, capsys) -> None:
    args = ("pipeline", "compile", "--output", "a.yaml", "--image", IMAGE, "--pipeline-tracking-uri", SERVER)
    assert cli(capsys, *args)[0] == 0
    assert cli(capsys, *args[:3], "b.yaml", *args[4:])[0] == 0
    assert (tmp_path / "a.yaml").read_text() == (tmp_path / "b.yaml").read_text()
    assert sorted(p.name for p in tmp_path.iterdir() if "yaml" in p.name) == ["a.yaml", "b.yaml"]


@pytest.mark.parametrize(("args", "env", "message"), [
    (("--target", "argo"), {}, "unknown target 'argo': choose kfp"),
    ((), {}, "pipeline.image is not set"),
    (("--image", IMAGE, "--pipeline-tracking-uri", "https://bob:hunter2@mlflow.example"), {},
     "holds credentials"),
    (("--image", IMAGE), {"LLMOPS_PIPELINE__ENV": '{"MLFLOW_TRACKING_PASSWORD": "x"}'}, "looks like a secret"),
    (("--image", IMAGE, "--output", "missing/p.yaml"), {}, "does not exist"),
    (("--image", IMAGE, "--output", "."), {}, "is a directory"),
])
def test_compile_bad_input(tmp_path: Path, capsys, monkeypatch, args, env, message) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    code, out, err = cli(capsys, "pipeline", "compile", *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert "hunter2" not in err
    assert not list(tmp_path.glob("*.yaml")) and not list(tmp_path.glob(".*tmp*"))


@pytest.mark.parametrize(("args", "message"), [
    (("run", "--target", "kubeflow"), "unknown target 'kubeflow': choose mlflow or kfp-local"),
    (("run", "-P", "bogus=1"), "bogus is not a parameter of the pipeline"),
    (("run", "--limt", "5"), "limt is not a parameter of the pipeline (MLproject declares"),
    (("run", "-P", "limit"), "expected NAME=VALUE"),
    (("run", "-P", "include_feedback=maybe"), "include_feedback='maybe': expected true or false"),
    (("submit", "-P", "include_feedback=sometimes"), "include_feedback='sometimes': expected true or false"),
    (("submit", "--target", "kfp"), "unknown target 'kfp': choose vertex"),
    (("submit", "-P", "vectoriser=tfidf"), "did you mean vectorizer"),
])
def test_run_and_submit_bad_input_touch_no_store(tmp_path: Path, capsys, args, message) -> None:
    code, out, err = cli(capsys, "pipeline", *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "mlflow.db").exists()


def test_compiled_file_from_another_definition_is_refused(tmp_path: Path, capsys, monkeypatch) -> None:
    from projects.pipeline_kfp import CompiledFileError, read_compiled

    assert cli(capsys, "pipeline", "compile", "--image", IMAGE, "--pipeline-tracking-uri", SERVER)[0] == 0
    assert read_compiled(tmp_path / "pipeline.yaml")["tracking_uri"] == SERVER
    project_copy(tmp_path, monkeypatch, lambda t: t.replace('promote_to: {type: string, default: "staging"}',
                                                            'promote_to: {type: string, default: "dev"}', 1)
                 .replace('alias: {type: string, default: "staging"}', 'alias: {type: string, default: "dev"}', 1))
    with pytest.raises(CompiledFileError, match="compiled from another version of the pipeline definition"):
        read_compiled(tmp_path / "pipeline.yaml")
    (tmp_path / "other.yaml").write_text("pipelineInfo: {name: something}\n")
    with pytest.raises(CompiledFileError, match="was not compiled by `llmops pipeline compile`"):
        read_compiled(tmp_path / "other.yaml")
    with pytest.raises(CompiledFileError, match="does not exist"):
        read_compiled(tmp_path / "nope.yaml")
