"""What used to pass silently now stops with a clear line (or says what it does): misspelled LLMOPS_* variables,
a missing templates folder, a mistyped tracking store path."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmops.cli import main


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(args)
    captured = capsys.readouterr()
    return int(info.value.code or 0), captured.out, captured.err


@pytest.mark.parametrize(("variable", "expected"), [
    ("LLMOPS_DTA__LIMIT", "unknown section 'dta' in settings (known: mlflow, warehouse, data,"),
    ("LLMOPS_DATA__LIMT", "unknown key 'limt' in data (known: query, tag_pattern,"),
    ("LLMOPS_CHAIN__PROVIDR__MODEL", "unknown key 'providr' in chain"),
    ("LLMOPS_DATA__LIMIT__MAX", "data.limit is a value, not a section"),
    ("LLMOPS_DATAPRP", "unknown section 'dataprp'"),
])
def test_misspelled_environment_variable_is_an_error(variable: str, expected: str, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(variable, "5")
    code, _, err = _cli(["config", "show"], capsys)
    assert code == 2
    (line,) = err.strip().splitlines()
    assert line.startswith(f"error: environment variable {variable} names no setting: ") and expected in line


def test_misspelled_variable_gets_the_right_spelling_suggested(monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LLMOPS_DTA__LIMIT", "5")
    assert "did you mean LLMOPS_DATA__LIMIT?" in _cli(["data", "prepare"], capsys)[2]


def test_correct_nested_variables_still_apply(monkeypatch: pytest.MonkeyPatch) -> None:
    from llmops.settings import load_settings

    monkeypatch.setenv("LLMOPS_DATA__LIMIT", "5")
    monkeypatch.setenv("LLMOPS_EVALUATION__PRICES__LOCAL__INPUT_PER_1M", "1.5")  # a key inside a mapping
    monkeypatch.setenv("LLMOPS_CONFIG", "")  # not a setting
    monkeypatch.setenv("LLMOPS_SOMETHING_ELSE", "x")  # another tool's variable, nothing like a section
    settings = load_settings()
    assert settings.data.limit == 5 and settings.evaluation.prices["local"].input_per_1m == 1.5


def test_prompts_sync_with_a_missing_templates_folder_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "mlflow.db"
    code, _, err = _cli(["prompts", "sync", "--templates-dir", str(tmp_path / "tempaltes"),
                         "--tracking-uri", f"sqlite:///{store}"], capsys)
    assert code == 4 and f"prompt templates folder not found: {tmp_path / 'tempaltes'}" in err
    assert not store.exists()  # nothing was created for a command that could not run
    (tmp_path / "empty").mkdir()
    code, _, err = _cli(["prompts", "sync", "--templates-dir", str(tmp_path / "empty")], capsys)
    assert code == 4 and "no prompt templates (*.yaml)" in err
    code, _, err = _cli(["prompts", "sync", "--name", "so-qq"], capsys)
    assert code == 4 and "prompt template 'so-qq' not found" in err and "known: so-qa" in err


def test_reading_a_mistyped_store_refuses_instead_of_creating_it(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    typo = tmp_path / "mlfow.db"
    code, _, err = _cli(["prompts", "show", "prompts:/so-qa/1", "--tracking-uri", f"sqlite:///{typo}"], capsys)
    assert code == 4 and f"MLflow tracking store sqlite:///{typo} does not exist" in err
    assert not typo.exists()


def test_writing_to_a_new_store_says_it_creates_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "fresh.db"
    code, out, err = _cli(["prompts", "sync", "--tracking-uri", f"sqlite:///{store}"], capsys)
    assert code == 0 and "created" in out
    assert f"warning: creating a new MLflow tracking store at {store}" in err and store.exists()
    code, _, err = _cli(["prompts", "sync", "--tracking-uri", f"sqlite:///{store}"], capsys)
    assert code == 0 and "warning" not in err  # the second time it exists: nothing to say
