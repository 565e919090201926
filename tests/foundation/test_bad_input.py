"""Bad input at the data and serving boundaries: one clear line, non-zero exit, nothing half-written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmops.cli import main


def _run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as info:
        main(args)
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) <= 1, errors
    return int(info.value.code), errors[0] if errors else ""


def _tables_env(monkeypatch: pytest.MonkeyPatch, directory: Path) -> None:
    monkeypatch.setenv("LLMOPS_WAREHOUSE__TABLES", json.dumps({
        "bigquery-public-data.stackoverflow.posts_questions": str(directory / "posts_questions.jsonl"),
        "bigquery-public-data.stackoverflow.posts_answers": str(directory / "posts_answers.jsonl"),
    }))


def _finished_runs(tracking_uri: str) -> list:
    import mlflow

    return mlflow.search_runs(search_all_experiments=True, output_format="list")


def test_prepare_on_sample_writes_a_versioned_dataset(tracking_uri: str, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["data", "prepare", "--output-dir", str(tmp_path / "out")])
    assert info.value.code == 0
    (version_dir,) = (tmp_path / "out").iterdir()
    train = (version_dir / "train.jsonl").read_text().splitlines()
    evaluation = (version_dir / "eval.jsonl").read_text().splitlines()
    assert len(train) > 3 * len(evaluation) > 0
    row = json.loads(train[0])
    assert row["input_text"].endswith(row["question"]) and row["prompt_name"] == "so-qa"
    (run,) = _finished_runs(tracking_uri)
    assert run.info.status == "FINISHED" and run.data.tags["llmops.dataset_digest"] in version_dir.name
    assert {d.dataset.name for d in run.inputs.dataset_inputs} == {"so-qa-train", "so-qa-eval"}


def test_missing_column_is_named_and_nothing_written(tracking_uri: str, copy_sample: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    path = copy_sample / "posts_questions.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    path.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "tags"}) + "\n" for r in rows))
    _tables_env(monkeypatch, copy_sample)
    code, err = _run_cli(["data", "prepare", "--output-dir", str(tmp_path / "out")], capsys)
    assert code == 3 and "missing column(s): tags" in err
    assert not (tmp_path / "out").exists()
    assert _finished_runs(tracking_uri) == []


def test_zero_rows_fails_the_run_and_leaves_no_dataset(tracking_uri: str, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run_cli(["data", "prepare", "--tag-pattern", "^no-such-tag$", "--output-dir",
                          str(tmp_path / "out")], capsys)
    assert code == 3 and "zero examples" in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    assert [r.info.status for r in _finished_runs(tracking_uri)] == ["FAILED"]


def test_missing_table_file(tracking_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                            capsys: pytest.CaptureFixture[str]) -> None:
    _tables_env(monkeypatch, tmp_path / "nowhere")
    code, err = _run_cli(["data", "prepare"], capsys)
    assert code == 4 and "file not found" in err


@pytest.mark.parametrize("question", ["", "   \n\t "])
def test_empty_question_is_refused_before_loading(question: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run_cli(["serve", "predict", "--model", "models:/whatever@staging", "--question", question], capsys)
    assert code == 7 and err == "error: question is empty"


def test_batch_input_errors_name_the_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "q.jsonl").write_text('{"question": "ok"}\n{"q": 1}\n')
    code, err = _run_cli(["serve", "predict", "--model", "models:/m@staging", "--input", str(tmp_path / "q.jsonl")],
                         capsys)
    assert code == 7 and "line 2" in err
