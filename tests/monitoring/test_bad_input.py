"""Bad input at every boundary of `llmops monitor`: one `error:` line and a non-zero exit, or a "not enough data"
result; never a false alarm, never a half-logged MLflow run."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import T0, cli, inference_record, monitor_runs, other_language, write_log
from pools import sample_questions

from llmops.records import INFERENCE_SCHEMA

QUESTIONS = list(sample_questions())


def _rules(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _run(args: list[str], capsys) -> tuple[int, str, str]:
    return cli(["monitor", "run", "--skew-reference", "none", *args], capsys)


def test_empty_or_missing_log(tmp_path: Path, capsys: pytest.CaptureFixture[str], tracking_uri: str) -> None:
    (tmp_path / "empty").mkdir()
    for location in (tmp_path / "empty", tmp_path / "absent"):
        code, _, err = _run(["--log", str(location)], capsys)
        assert code == 3 and err == f"error: inference log {location} holds no records"
    code, _, err = _run([], capsys)  # no --log: the server's own location, serving.log_uri
    assert code == 3 and err == f"error: inference log {tmp_path / 'outputs' / 'inference-log'} holds no records"
    assert not (tmp_path / "mlflow.db").exists()  # the tracking store was not even created
    assert monitor_runs() == []


def test_windows_below_the_minimum_give_not_enough_data_never_an_alarm(tmp_path: Path, tracking_uri: str,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """30 records per hour, the last hour all Russian: still below min_rows, so no comparison and no alarm."""
    location = tmp_path / "log"
    write_log(location, QUESTIONS[:30], every=timedelta(seconds=60))
    write_log(location, other_language("ru")[:20], start=T0 + timedelta(hours=1), every=timedelta(seconds=60))
    code, stdout, err = _run(["--log", str(location), "--window", "1h", "--json"], capsys)
    assert code == 0, err
    (version,) = json.loads(stdout)["versions"]
    second = version["windows"][1]
    assert second["drift"]["status"] == "not_enough_data" and second["drift"]["drift"] is False
    assert second["drift"]["features"] == []
    assert "not enough data: 30 reference and 20 current rows (the rule needs 50 per side)" in \
        second["drift"]["explanation"][0]
    assert version["alarms"] == 0
    (run,) = monitor_runs()  # the run is logged: operational metrics are still worth having
    assert run.data.tags["llmops.monitor.drift"] == "false"


def test_log_part_missing_a_column_or_with_another_type(tmp_path: Path, tracking_uri: str,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    location = tmp_path / "log"
    write_log(location, QUESTIONS[:60])
    table = pa.Table.from_pylist([inference_record(q, T0) for q in QUESTIONS[:5]], schema=INFERENCE_SCHEMA)
    pq.write_table(table.drop_columns(["question"]), location / "inference-zz-missing.parquet")
    code, _, err = _run(["--log", str(location)], capsys)
    assert code == 3 and "lacks column(s): question" in err and "inference-zz-missing.parquet" in err
    (location / "inference-zz-missing.parquet").unlink()
    mixed = table.set_column(table.schema.get_field_index("latency_ms"), "latency_ms",
                             pa.array(["fast"] * 5, pa.string()))
    pq.write_table(mixed, location / "inference-zz-mixed.parquet")
    code, _, err = _run(["--log", str(location)], capsys)
    assert code == 3 and "column latency_ms is string, expected double" in err
    (location / "inference-zz-mixed.parquet").write_bytes(b"not parquet")
    code, _, err = _run(["--log", str(location)], capsys)
    assert code == 3 and "is not a readable Parquet file" in err
    assert monitor_runs() == []


def test_reference_from_another_version_or_dataset_is_refused(store: str, lineage: dict, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    location = tmp_path / "log"
    write_log(location, lineage["eval"], version="1", digest=lineage["digest"])
    before = len(monitor_runs())
    code, _, err = cli(["monitor", "run", "--log", str(location), "--model", "models:/so-qa-assistant/1",
                        "--skew-reference", "models:/so-qa-assistant/2"], capsys)
    assert code == 3 and "belongs to so-qa-assistant v2, but the windows are so-qa-assistant v1" in err
    other = tmp_path / "other-log"
    write_log(other, lineage["eval"], version="1", digest="another-dataset")
    code, _, err = cli(["monitor", "run", "--log", str(other), "--model", "models:/so-qa-assistant/1"], capsys)
    assert code == 3 and f"is dataset {lineage['digest']}, but the log's records" in err and "another-dataset" in err
    code, _, err = cli(["monitor", "run", "--log", str(location), "--model", "models:/so-qa-assistant/2"], capsys)
    assert code == 3 and "the log holds no records of so-qa-assistant v2 (it holds so-qa-assistant v1)" in err
    code, _, err = cli(["monitor", "run", "--log", str(location), "--model", "models:/so-qa-assistant@nope"], capsys)
    assert code == 4 and "not found" in err
    assert len(monitor_runs()) == before


@pytest.mark.parametrize(("text", "message"), [
    ("alpha: [1", "is not valid YAML"),
    ("- a list", "must hold a mapping"),
    ("alpha: 0.9", "alpha: Input should be less than or equal to 0.5"),
    ("features: [question_chars, vibes]", "unknown feature(s) vibes"),
    ("min_rows: 3", "min_rows: Input should be greater than or equal to 10"),
    ("colour: red", "unknown key 'colour'"),
    ("trigger: {command: [retune, '{window}']}", "unknown placeholder(s) window"),
    ("min_effect: {nonsense: 1}", "min_effect names unknown feature(s) nonsense"),
])
def test_malformed_rule_file(text: str, message: str, tmp_path: Path, tracking_uri: str,
                             capsys: pytest.CaptureFixture[str]) -> None:
    location = tmp_path / "log"
    write_log(location, QUESTIONS[:60])
    rules = _rules(tmp_path, text + "\n")
    for args in (["monitor", "rules", "--rules", str(rules)],
                 ["monitor", "run", "--skew-reference", "none", "--log", str(location), "--rules", str(rules)],
                 ["monitor", "compare", "--reference", str(_questions(tmp_path, "a", QUESTIONS[:60])),
                  "--current", str(_questions(tmp_path, "b", QUESTIONS[60:120])), "--rules", str(rules)]):
        code, _, err = cli(args, capsys)
        assert code == 2 and message in err and "alarm rule file" in err, (args, err)
    assert monitor_runs() == []


def test_bad_window_and_times(tmp_path: Path, tracking_uri: str, capsys: pytest.CaptureFixture[str]) -> None:
    location = tmp_path / "log"
    write_log(location, QUESTIONS[:60])
    for window in ("soon", "0", "5x", "-1h"):
        code, _, err = _run(["--log", str(location), "--window", window], capsys)
        assert code == 2 and "--window must be" in err or "at least 1 record" in err, err
    code, _, err = _run(["--log", str(location), "--since", "yesterday"], capsys)
    assert code == 2 and "--since must be an ISO time" in err
    code, _, err = _run(["--log", str(location), "--since", "2030-01-01"], capsys)
    assert code == 3 and "holds no records between" in err


def _questions(tmp_path: Path, name: str, questions: list[str]) -> Path:
    path = tmp_path / f"{name}.jsonl"
    path.write_text("".join(json.dumps({"question": q}) + "\n" for q in questions), encoding="utf-8")
    return path


def test_compare_with_bad_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = _questions(tmp_path, "good", QUESTIONS[:60])
    bad_line = tmp_path / "bad.jsonl"
    bad_line.write_text('{"question": "ok"}\nnot json\n', encoding="utf-8")
    no_field = tmp_path / "nofield.jsonl"
    no_field.write_text('{"title": "x"}\n', encoding="utf-8")
    no_column = tmp_path / "nocolumn.parquet"
    pq.write_table(pa.table({"title": ["x"]}), no_column)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", encoding="utf-8")
    cases = [(bad_line, 3, "line 2 is not JSON"), (no_field, 3, "line 1 has no 'question' string"),
             (no_column, 3, "has no 'question' column"), (empty, 3, "holds no questions"),
             (tmp_path / "absent.jsonl", 4, "question file not found")]
    for path, exit_code, message in cases:
        code, _, err = cli(["monitor", "compare", "--reference", str(good), "--current", str(path)], capsys)
        assert code == exit_code and message in err, (path, err)


def test_compare_small_sets_say_not_enough_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = _questions(tmp_path, "a", QUESTIONS[:30])
    b = _questions(tmp_path, "b", other_language("ru"))
    code, stdout, _ = cli(["monitor", "compare", "--reference", str(a), "--current", str(b), "--json"], capsys)
    result = json.loads(stdout)
    assert code == 0 and result["drift"] is False and result["status"] == "not_enough_data"
    assert result["n_reference"] == 30 and result["n_current"] == 25


def test_log_from_an_fsspec_url_and_a_newer_schema(tmp_path: Path, tracking_uri: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """The log may live behind any fsspec URL (memory:// here, gs:// or s3:// in production); a part written by a
    newer schema version than this monitor knows is refused rather than misread."""
    url = f"memory://monitor-test-{tmp_path.name}/log"
    write_log(url, QUESTIONS[:120], every=timedelta(seconds=30))
    code, stdout, err = _run(["--log", url, "--window", "60", "--json", "--dry-run"], capsys)
    assert code == 0, err
    (version,) = json.loads(stdout)["versions"]
    assert [w["records"] for w in version["windows"]] == [60, 60]
    assert version["windows"][1]["drift"]["status"] == "ok"
    newer = tmp_path / "newer"
    write_log(newer, QUESTIONS[:60], schema_version=99)
    code, _, err = _run(["--log", str(newer)], capsys)
    assert code == 3 and "schema version 99" in err


def test_unregistered_versions_are_monitored_without_skew(tmp_path: Path, tracking_uri: str,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    location = tmp_path / "log"
    write_log(location, QUESTIONS[:120], version="7")
    code, stdout, err = cli(["monitor", "run", "--log", str(location), "--window", "60", "--json", "--dry-run"],
                            capsys)
    assert code == 0, err
    (version,) = json.loads(stdout)["versions"]
    assert version["skew_reference"] is None and "not in the model registry" in version["notes"][0]
    assert version["windows"][1]["drift"]["status"] == "ok"
    code, _, err = cli(["monitor", "run", "--log", str(location), "--model", "models:/unknown/7"], capsys)
    assert code == 4 and "model models:/unknown/7 not found" in err


def test_a_failure_while_logging_leaves_no_run(tmp_path: Path, tracking_uri: str, capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The artifact store cannot be written (its folder is a file): one line, and the half-made run is deleted."""
    import mlflow

    location = tmp_path / "log"
    write_log(location, QUESTIONS[:120])
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the artifact folder should be", encoding="utf-8")
    monkeypatch.setenv("LLMOPS_MLFLOW__EXPERIMENT_NAME", "broken-artifacts")
    monkeypatch.setenv("LLMOPS_MLFLOW__ARTIFACT_LOCATION", (blocker / "artifacts").as_uri())
    code, _, err = _run(["--log", str(location), "--window", "60"], capsys)
    assert code == 2 and "logging the monitor run of so-qa-assistant v1 failed, nothing kept" in err
    experiment = mlflow.get_experiment_by_name("broken-artifacts")
    assert mlflow.search_runs([experiment.experiment_id], output_format="list") == []
    deleted = mlflow.search_runs([experiment.experiment_id], output_format="list",
                                 run_view_type=mlflow.entities.ViewType.DELETED_ONLY)
    assert len(deleted) == 1 and deleted[0].info.status == "FAILED"
