"""Conventions every `llmops` command follows, checked on the real command tree: `--json` wherever a result is
printed, the settings' effective values in `--help` (never "default: settings"), and read-only commands that
refuse a tracking store that does not exist instead of creating an empty one."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import typer

from llmops.cli import app, main
from tests.conftest import VENV_BIN

LLMOPS = str(VENV_BIN / "llmops")
# Left out: these run or stop a long-lived process (a server); they print no result.
NO_RESULT = {"server start", "server stop", "serve start"}


def _leaves() -> dict[str, object]:
    from llmops.cli import _register_groups

    if not app.registered_groups:
        _register_groups()
    root = typer.main.get_command(app)
    out: dict[str, object] = {}

    def walk(command: object, path: list[str]) -> None:
        commands = getattr(command, "commands", None)
        if commands:
            for name, sub in commands.items():
                walk(sub, [*path, name])
        else:
            out[" ".join(path)] = command

    walk(root, [])
    return out


def test_every_command_that_prints_a_result_takes_json() -> None:
    leaves = _leaves()
    assert {"eval run", "eval compare", "registry promote", "data prepare", "tune", "gc", "monitor run",
            "feedback add", "feedback import", "feedback export", "feedback review", "feedback report",
            "serve batch", "serve predict", "pipeline run", "pipeline compile", "pipeline submit"} <= set(leaves)
    assert NO_RESULT <= set(leaves)  # the exemptions name real commands
    missing = [path for path, command in leaves.items()
               if path not in NO_RESULT
               and "--json" not in {o for p in command.params for o in getattr(p, "opts", [])}]
    assert not missing, f"commands without --json: {missing}"


def test_no_help_says_default_settings() -> None:
    """Every flag that overrides a setting shows the setting's value (setting_option), not a placeholder."""
    for path, command in _leaves().items():
        for param in command.params:
            assert "default: settings" not in (getattr(param, "help", "") or ""), (path, param.name)


@pytest.mark.parametrize(("args", "shown"), [
    (["eval", "run", "--help"], "evaluation.judge.provider = none"),
    (["eval", "run", "--help"], "evaluation.workers = 4"),
    (["eval", "compare", "--help"], "evaluation.bootstrap_samples = 1000"),
    (["tune", "--help"], "tuning.backend = local"),
    (["tune", "--help"], "tuning.hf.epochs = 3, tuning.vertex.epochs = 3"),
    (["registry", "promote", "--help"], "registry.policy_file = "),
    (["registry", "register", "--help"], "model.registered_name = so-qa-assistant"),
    (["gc", "--help"], "data.output_dir = "),
    (["feedback", "review", "--help"], "feedback.review_size = 50"),
    (["feedback", "add", "--help"], "feedback.store_uri = "),
    (["monitor", "run", "--help"], "monitoring.window = 1h"),
    (["data", "prepare", "--help"], "feedback.include_in_dataset = False"),
    (["pipeline", "run", "--help"], "data.tag_pattern = python"),
    (["pipeline", "run", "--help"], "tuning.hf.epochs = 3, tuning.vertex.epochs = 3"),
])
def test_help_shows_the_effective_setting(args: list[str], shown: str) -> None:
    result = subprocess.run([LLMOPS, *args], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "COLUMNS": "400"})
    assert result.returncode == 0, result.stderr
    assert shown in " ".join(result.stdout.split())


READ_ONLY = [
    ["registry", "show", "m", "1"],
    ["registry", "history", "m"],
    ["registry", "promote", "m", "1", "--reason", "x"],
    ["registry", "rollback", "m", "--reason", "x"],
    ["registry", "approve", "m", "1", "--by", "ann"],
    ["registry", "register", "--tune-run-id", "abc", "--eval-run-id", "def"],
    ["eval", "compare", "a" * 32, "b" * 32],
    ["eval", "gate", "a" * 32],
    ["eval", "review", "export", "a" * 32, "--out", "x.csv"],
    ["eval", "review", "import", "a" * 32, "x.csv", "--reviewer", "ann"],
    ["eval", "run", "--eval-uri", "e.jsonl", "--tune-run-id", "a" * 32],
    ["monitor", "trigger", "--feedback-count", "3", "--model", "models:/m/1"],
    ["prompts", "show", "prompts:/so-qa/1"],
    ["gc"],
    ["feedback", "review", "--queue", "drift", "--monitor-run", "a" * 32, "--out", "x.csv"],
    ["serve", "predict", "--model", "models:/m/1", "--question", "q?"],
]


@pytest.mark.parametrize("args", READ_ONLY, ids=[" ".join(a[:2]) for a in READ_ONLY])
def test_read_only_commands_refuse_a_missing_store_and_create_nothing(args: list[str], tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "mlfow.db"  # the typo the check exists for
    (tmp_path / "e.jsonl").write_text('{"question": "q?", "answer": "a"}\n')
    with pytest.raises(SystemExit) as info:
        main([*args, "--tracking-uri", f"sqlite:///{store}"])
    err = capsys.readouterr().err
    assert info.value.code == 4, err
    assert f"MLflow tracking store sqlite:///{store} does not exist" in err
    assert not store.exists()


def test_json_results_are_one_document_on_stdout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for args in (["eval", "metrics", "--json"], ["monitor", "rules", "--json"], ["config", "show", "--json"]):
        with pytest.raises(SystemExit) as info:
            main(args)
        out = capsys.readouterr().out
        assert info.value.code == 0
        json.loads(out)  # nothing else on stdout
    with pytest.raises(SystemExit):
        main(["eval", "metrics", "--json"])
    names = {m["name"]: m for m in json.loads(capsys.readouterr().out)}
    assert names["Headline/answered_token_f1"]["direction"] == "higher"
    assert names["latency_ms/mean"]["direction"] == "lower"
