"""The pipeline definition against MLproject as MLflow itself parses it: every step an entry point, every step
parameter either wired or a pipeline parameter with MLproject's default; adding a parameter is one edit of
MLproject; values and reuse keys as both runners compute them."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline_helpers import REPO, project_copy  # noqa: E402


def _mlflow_entry_points():
    from mlflow.projects._project_spec import load_project

    return load_project(str(REPO))


def test_every_step_parameter_is_wired_or_a_pipeline_parameter_with_the_mlproject_default() -> None:
    from projects.pipeline_definition import STEPS, pipeline_name_of, pipeline_parameters

    project = _mlflow_entry_points()
    params = pipeline_parameters()
    seen = set()
    for step in STEPS:
        for name, spec in project.get_entry_point(step.name).parameters.items():
            if name in step.wires:
                assert spec.default is None  # handed over by an earlier step, never a user default
                continue
            pipeline_name = pipeline_name_of(step, name)
            assert params[pipeline_name].default == str(spec.default)
            seen.add(pipeline_name)
    assert seen == set(params)
    assert params["promote_to"].default == "staging" and params["reason"].default == "pipeline run"


def test_main_only_declares_pipeline_parameters() -> None:
    """`mlflow run . -P x=1` hands `x` to the driver: each of main's parameters must be one of the pipeline's."""
    from projects.pipeline_definition import pipeline_parameters

    main = _mlflow_entry_points().get_entry_point("main")
    params = pipeline_parameters()
    for name, spec in main.parameters.items():
        assert name in params, name
        assert str(spec.default) == params[name].default, name


def test_wires_name_outputs_of_earlier_steps_and_outputs_are_locations() -> None:
    from projects.pipeline_definition import STEPS

    order = [s.name for s in STEPS]
    assert order == ["prepare_data", "tune", "evaluate", "register", "promote"]
    for i, step in enumerate(STEPS):
        for source, output in step.wires.values():
            assert order.index(source) < i
            assert output in {o.name for o in STEPS[order.index(source)].outputs}


def test_a_parameter_added_to_mlproject_is_one_edit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What issue 14 did for include_feedback: one line in MLproject (plus the step's own flag) and both runners
    have it - a pipeline parameter, a value for the step, a changed definition digest, a KFP input."""
    from llmops.settings import load_settings
    from projects import pipeline_definition as d

    before = d.definition_digest()
    anchor = '      include_feedback: {type: string, default: ""}'

    def add(text: str) -> str:
        assert anchor in text
        return text.replace(anchor, anchor + '\n      min_score: {type: string, default: "no"}', 1)

    project_copy(tmp_path, monkeypatch, add)
    assert d.pipeline_parameters()["min_score"].default == "no"
    assert d.definition_digest() != before
    step = d.step_named("prepare_data")
    settings = load_settings()
    assert d.step_values(step, settings, {}, {})["min_score"] == "no"
    assert d.step_values(step, settings, {"min_score": "yes"}, {})["min_score"] == "yes"
    from projects.pipeline_kfp import component_source

    source = component_source("img", "0" * 16, "1" * 16)
    assert "def prepare_data(tag_pattern: str" in source and "min_score: str" in source
    assert "min_score: str = 'no'" in source  # the pipeline parameter, with MLproject's default


def test_two_defaults_for_one_pipeline_parameter_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from projects import pipeline_definition as d

    project_copy(tmp_path, monkeypatch, lambda t: t.replace(
        '      model_name: {type: string, default: ""}\n    command: >-\n      sh projects/run-llmops registry register',
        '      model_name: {type: string, default: "other"}\n    command: >-\n      sh projects/run-llmops registry '
        'register', 1))
    with pytest.raises(d.DefinitionError, match="model_name has two defaults"):
        d.pipeline_parameters()


def test_a_step_missing_from_mlproject_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from projects import pipeline_definition as d

    project_copy(tmp_path, monkeypatch, lambda t: t.replace("  evaluate:\n", "  evaluation:\n", 1))
    with pytest.raises(d.DefinitionError, match="evaluate is not an entry point"):
        d.pipeline_parameters()


def test_unknown_parameter_is_named_with_a_suggestion() -> None:
    from projects.pipeline_definition import DefinitionError, check_parameters, parse_assignments

    assert check_parameters({"limit": 5, "promote_to": "staging"}) == {"limit": "5", "promote_to": "staging"}
    with pytest.raises(DefinitionError, match="limt is not a parameter of the pipeline .*did you mean limit"):
        check_parameters({"limt": "5"})
    with pytest.raises(DefinitionError, match="expected NAME=VALUE"):
        parse_assignments(["limit"])
    assert parse_assignments(["tag_pattern=a=b"]) == {"tag_pattern": "a=b"}


def test_values_explicit_beat_settings_and_follow_the_backend() -> None:
    from llmops.settings import load_settings
    from projects.pipeline_definition import step_named, step_values

    settings = load_settings({"data": {"limit": 50}, "tuning": {"hf": {"epochs": 2}, "vertex": {"epochs": 7}}})
    prep = step_named("prepare_data")
    assert step_values(prep, settings, {}, {})["limit"] == "50"
    assert step_values(prep, settings, {"limit": "9"}, {})["limit"] == "9"
    tune = step_named("tune")
    wired = {"train_uri": "runs:/a/datasets/train.jsonl", "eval_uri": "runs:/a/datasets/eval.jsonl"}
    local = step_values(tune, settings, {}, wired)
    assert local["backend"] == "local" and local["vectorizer"] == "tfidf" and "epochs" not in local
    hf = step_values(tune, settings, {"backend": "hf"}, wired)  # knobs follow an explicit backend
    assert hf["epochs"] == "2" and "vectorizer" not in hf and hf["train_uri"] == wired["train_uri"]
    assert step_values(tune, settings, {"backend": "vertex"}, wired)["epochs"] == "7"
    promote = step_values(step_named("promote"), settings, {"promote_to": "production"}, {"version": "3"})
    assert promote == {"version": "3", "alias": "production", "model_name": "so-qa-assistant",
                       "reason": "pipeline run"}


def test_flag_settings_are_found_on_the_step_command() -> None:
    """A parameter without an entry in SETTING_OF takes the settings key of its step's `setting_option` flag."""
    from projects.pipeline_definition import _flag_setting_keys, step_named

    keys = _flag_setting_keys(step_named("prepare_data"))
    assert keys["tag_pattern"] == "data.tag_pattern" and keys["test_percent"] == "dataprep.test_percent"
    assert keys["question_date_to"] == "dataprep.question_date_to"
    tune = _flag_setting_keys(step_named("tune"))
    assert tune["learning_rate"] == "tuning.hf.learning_rate"
    assert "epochs" not in tune and "base_model" not in tune  # a key per backend: resolved by SETTING_OF


def test_reuse_key_follows_the_sections_a_step_reads() -> None:
    from llmops.settings import load_settings
    from projects.pipeline_definition import key_of, step_named

    base = load_settings()
    changed = load_settings({"evaluation": {"bootstrap_samples": 200}})
    params = {"tune_run_id": "r1", "eval_uri": "runs:/p/datasets/eval.jsonl"}
    evaluate, prep = step_named("evaluate"), step_named("prepare_data")
    assert key_of(evaluate, params, base, "c") == key_of(evaluate, params, load_settings(), "c")
    assert key_of(evaluate, params, base, "c") != key_of(evaluate, params, changed, "c")
    assert key_of(evaluate, params, base, "c") != key_of(evaluate, params, base, "d")  # the code digest
    assert key_of(prep, {}, base, "c") == key_of(prep, {}, changed, "c")  # the data step does not read evaluation


def test_run_llmops_finds_the_venv_from_a_shell_without_it(tmp_path: Path) -> None:
    """MLproject's commands from a fresh shell: PATH without the venv, the checkout's `python3` not importable."""
    import os
    import subprocess

    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp")}
    ok = subprocess.run(["sh", str(REPO / "projects" / "run-llmops"), "--version"], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=60, check=False)
    assert ok.returncode == 0 and ok.stdout.startswith("llmops "), ok.stderr
    forced = subprocess.run(["sh", str(REPO / "projects" / "run-llmops"), "--version"], cwd=tmp_path,
                            env={**env, "LLMOPS_PYTHON": sys.executable}, capture_output=True, text=True,
                            timeout=60, check=False)
    assert forced.returncode == 0 and f"python {sys.version_info.major}.{sys.version_info.minor}" in forced.stdout
    # a checkout without a .venv, and nothing with llmops on PATH: one line, exit 2
    lone = tmp_path / "checkout" / "projects"
    lone.mkdir(parents=True)
    (lone / "run-llmops").write_text((REPO / "projects" / "run-llmops").read_text())
    missing = subprocess.run(["/bin/sh", str(lone / "run-llmops"), "--version"], cwd=tmp_path,
                             env={"PATH": "/nonexistent"}, capture_output=True, text=True, timeout=60, check=False)
    assert missing.returncode == 2 and "no Python with the llmops package" in missing.stderr


def test_extra_flags_from_mlflow_run_become_pipeline_parameters() -> None:
    """`mlflow run . -P validation_percent=20` appends `--validation-percent 20` to main's command."""
    from projects.cli import _extra_params
    from projects.pipeline_definition import DefinitionError

    assert _extra_params(["--validation-percent", "20", "--seed=3"]) == {"validation_percent": "20", "seed": "3"}
    with pytest.raises(DefinitionError, match="needs a value"):
        _extra_params(["--seed"])
    with pytest.raises(DefinitionError, match="unexpected argument 'stray'"):
        _extra_params(["stray"])
