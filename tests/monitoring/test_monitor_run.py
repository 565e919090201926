"""`llmops monitor run` end to end: a log written by the core writer, a version registered with the lineage of the
real data step, a real SQLite MLflow store; skew vs the eval split, drift between windows, the MLflow run (metrics
at the window's time, params, PNG plots, report), the JSON output and the retuning trigger."""

from __future__ import annotations

import json
import sys
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from helpers import T0, cli, monitor_runs, other_language, write_log

RULES = """
mode: enforced
alpha: 0.05
min_rows: 20
trigger:
  command: ["{python}", "{script}", "{{reason_file}}", "{{kind}}", "{{model_version}}"]
  when: [drift, skew]
"""
TRIGGER_SCRIPT = """
import json, os, sys
reason = json.load(sys.stdin)
with open(os.environ["OUT_FILE"], "a") as out:
    out.write(json.dumps({"argv": sys.argv[1:], "env": os.environ["LLMOPS_MONITOR_REASON"], "reason": reason}) + "\\n")
"""


def _rules(tmp_path: Path, **replace: str) -> Path:
    script = tmp_path / "trigger.py"
    script.write_text(TRIGGER_SCRIPT, encoding="utf-8")
    text = RULES.format(python=sys.executable, script=script)
    for key, value in replace.items():
        text = text.replace(key, value)
    path = tmp_path / "rules.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _traffic(lineage: dict, shifted: bool, rng: np.random.Generator) -> list[str]:
    """Two hours of traffic: hour 0 drawn from the eval split's questions; hour 1 the same, or with 40% Russian
    questions when shifted. (Never from the training split: the vocabulary is fitted on it, so its own questions
    have no out-of-vocabulary words, unlike new traffic.)"""
    pool = lineage["eval"]
    first = [pool[i] for i in rng.integers(0, len(pool), 120)]
    second = [pool[i] for i in rng.integers(0, len(pool), 120)]
    if shifted:
        russian = other_language("ru")
        second[:48] = [russian[i] for i in rng.integers(0, len(russian), 48)]
        rng.shuffle(second)
    return first + second


def _write(tmp_path: Path, lineage: dict, shifted: bool, version: str = "1") -> Path:
    location = tmp_path / "log"
    questions = _traffic(lineage, shifted, np.random.default_rng(3))
    write_log(location, questions, start=T0, every=timedelta(seconds=30), parts=3, version=version,
              digest=lineage["digest"], latency_ms=25.0)
    return location


def test_run_reports_skew_drift_and_logs_a_whole_mlflow_run(store: str, lineage: dict, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    log = _write(tmp_path, lineage, shifted=True)
    rules = _rules(tmp_path)
    out_file = tmp_path / "triggered.jsonl"
    monkeypatch.setenv("OUT_FILE", str(out_file))
    before = {r.info.run_id for r in monitor_runs()}
    code, stdout, err = cli(["monitor", "run", "--log", str(log), "--model", "models:/so-qa-assistant@production",
                             "--window", "1h", "--rules", str(rules), "--json"], capsys)
    assert code == 0, err
    result = json.loads(stdout)
    (version,) = result["versions"]
    assert (version["model_name"], version["model_version"]) == ("so-qa-assistant", "1")
    assert version["skew_reference"]["uri"] == lineage["eval_uri"]
    assert version["skew_reference"]["digest"] == lineage["digest"]
    assert version["basis"].startswith("training inputs")
    first, second = version["windows"]
    assert first["records"] == second["records"] == 120
    # hour 0 is drawn like the eval split: no skew; hour 1 holds 40% Russian: skew and drift, named by script
    assert first["skew"]["status"] == "ok" and not first["skew"]["drift"]
    assert first["drift"] is None  # nothing before it
    for comparison in (second["skew"], second["drift"]):
        assert comparison["drift"] is True
        alarmed = {f["name"] for f in comparison["features"] if f["alarm"]}
        assert "script_share" in alarmed
        assert any("script_share moved" in line and "Cyrillic" in line for line in comparison["explanation"])
    assert second["drift_against"] == "window 0"
    # operational metrics come from the log's own values
    assert first["metrics"]["requests"] == 120 and first["metrics"]["latency_p95_ms"] == pytest.approx(25.0)
    assert first["metrics"]["throughput_rps"] == pytest.approx(120 / 3600)
    # the trigger ran once, for the latest alarming window, with the reason on stdin, in argv and in the env
    (call,) = [json.loads(line) for line in out_file.read_text().splitlines()]
    reason_file, kind, model_version = call["argv"]
    assert call["env"] == reason_file and Path(reason_file).is_file()
    assert kind in ("skew", "drift") and model_version == "1"
    assert call["reason"]["window_start"] == (T0 + timedelta(hours=1)).isoformat()
    assert "script_share" in call["reason"]["features"]
    questions = Path(call["reason"]["questions_file"]).read_text(encoding="utf-8").splitlines()
    assert len(questions) == 120
    assert result["triggers"][0]["status"] == "ran"

    (run,) = [r for r in monitor_runs() if r.info.run_id not in before]
    assert run.info.run_id == result["runs"]["so-qa-assistant v1"]
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["model_version"] == "1" and params["reference_digest"] == lineage["digest"]
    assert params["skew_reference_uri"] == lineage["eval_uri"]
    assert "" not in params.values(), "an unset parameter is not logged as ''"
    # the run's datasets: the inference log it read, and the eval split it compared with (the data step's entry)
    inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    assert set(inputs) == {"inference-log", "so-qa-eval"}
    assert inputs["so-qa-eval"].dataset.digest == lineage["digest"]
    assert [t.value for t in inputs["inference-log"].tags if t.key == "mlflow.data.context"] == ["monitoring"]
    assert run.data.tags["llmops.monitor.drift"] == "true"
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    history = client.get_metric_history(run.info.run_id, "skew/alarm")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [
        (int(T0.timestamp()), 0.0), (int((T0 + timedelta(hours=1)).timestamp()), 1.0)]
    assert {m.timestamp for m in history} == {int(T0.timestamp() * 1000), int((T0 + timedelta(hours=1)).timestamp() * 1000)}
    assert len(client.get_metric_history(run.info.run_id, "ops/latency_p99_ms")) == 2
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"report.md", "report.html", "monitor.json", "drift_examples.jsonl", "plots"} <= artifacts
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert "plots/timeseries.png" in plots and any("histograms" in p for p in plots)
    local = Path(client.download_artifacts(run.info.run_id, "plots/timeseries.png", str(tmp_path)))
    assert local.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = Path(client.download_artifacts(run.info.run_id, "report.md", str(tmp_path))).read_text()
    assert "script_share moved" in report and "![timeseries](plots/timeseries.png)" in report
    page = Path(client.download_artifacts(run.info.run_id, "report.html", str(tmp_path))).read_text()
    assert page.startswith("<!doctype html>") and "<table>" in page and '<img src="plots/timeseries.png"' in page
    # the examples the feedback component will read: Russian questions drive the alarm
    from monitoring.examples import drift_examples_from_run

    examples = drift_examples_from_run(run.info.run_id)
    russian = set(other_language("ru"))
    top = [e["question"] for e in examples if e["feature"] == "script_share"][:10]
    assert top and all(q in russian for q in top)

    # the same run again: the reason already ran, the command is not run twice
    code, stdout, _ = cli(["monitor", "run", "--log", str(log), "--model", "models:/so-qa-assistant@production",
                           "--rules", str(rules)], capsys)
    assert code == 0 and "already ran" in stdout
    assert len(out_file.read_text().splitlines()) == 1


def test_same_distribution_traffic_raises_no_alarm_and_dry_run_logs_nothing(
        store: str, lineage: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    log = _write(tmp_path, lineage, shifted=False)
    monkeypatch.setenv("OUT_FILE", str(tmp_path / "never.jsonl"))
    before = len(monitor_runs())
    code, stdout, err = cli(["monitor", "run", "--log", str(log), "--model", "models:/so-qa-assistant/1",
                             "--rules", str(_rules(tmp_path)), "--dry-run"], capsys)
    assert code == 0, err
    assert "ALARM" not in stdout and "dry-run: no MLflow run logged" in stdout
    assert "so-qa-assistant v1: 2 window(s); skew vs eval" in stdout
    assert len(monitor_runs()) == before
    assert not (tmp_path / "never.jsonl").exists()


def test_dry_run_shows_the_trigger_it_would_run(store: str, lineage: dict, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    log = _write(tmp_path, lineage, shifted=True)
    monkeypatch.setenv("OUT_FILE", str(tmp_path / "never.jsonl"))
    code, stdout, _ = cli(["monitor", "run", "--log", str(log), "--model", "models:/so-qa-assistant@production",
                           "--rules", str(_rules(tmp_path)), "--dry-run"], capsys)
    assert code == 0
    assert "ALARM" in stdout and "trigger (dry-run): would run" in stdout and sys.executable in stdout
    assert not (tmp_path / "never.jsonl").exists()


def test_rule_in_dry_run_mode_reports_alarms_but_never_triggers(store: str, lineage: dict, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    log = _write(tmp_path, lineage, shifted=True)
    monkeypatch.setenv("OUT_FILE", str(tmp_path / "never.jsonl"))
    rules = _rules(tmp_path, **{"mode: enforced": "mode: dry-run"})
    code, stdout, _ = cli(["monitor", "run", "--log", str(log), "--model", "models:/so-qa-assistant@production",
                           "--rules", str(rules)], capsys)
    assert code == 0
    assert "would alarm (dry-run) " in stdout and "rule mode" not in stdout
    assert "trigger (dry-run): would run" in stdout
    assert not (tmp_path / "never.jsonl").exists()


def test_versions_are_never_mixed(store: str, lineage: dict, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    """Two versions in one log: without --model each gets its own windows and run; v2 traffic is not v1's."""
    location = tmp_path / "log"
    pool = lineage["eval"]
    rng = np.random.default_rng(5)
    write_log(location, [pool[i] for i in rng.integers(0, len(pool), 60)], version="1", digest=lineage["digest"])
    write_log(location, other_language("ru") * 3, start=T0 + timedelta(seconds=5), version="2",
              digest=lineage["digest"])
    code, stdout, err = cli(["monitor", "run", "--log", str(location), "--window", "1d", "--rules",
                             str(_rules(tmp_path, **{"command:": "command: null #"})), "--json", "--dry-run"], capsys)
    assert code == 0, err
    result = json.loads(stdout)
    by_version = {v["model_version"]: v for v in result["versions"]}
    assert set(by_version) == {"1", "2"}
    assert [w["records"] for w in by_version["1"]["windows"]] == [60]
    assert [w["records"] for w in by_version["2"]["windows"]] == [75]
    assert by_version["1"]["windows"][0]["skew"]["drift"] is False
    assert by_version["2"]["windows"][0]["skew"]["drift"] is True


def test_feedback_count_runs_the_trigger(store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    out_file = tmp_path / "triggered.jsonl"
    monkeypatch.setenv("OUT_FILE", str(out_file))
    rules = _rules(tmp_path, **{"when: [drift, skew]": "when: [feedback]\n  min_feedback: 25"})
    args = ["monitor", "trigger", "--model", "models:/so-qa-assistant@production", "--rules", str(rules)]
    code, stdout, _ = cli([*args, "--feedback-count", "24"], capsys)
    assert code == 0 and "no trigger: 24 feedback record(s), the rule triggers from 25" in stdout
    code, stdout, _ = cli([*args, "--feedback-count", "30", "--dry-run"], capsys)
    assert code == 0 and "trigger (dry-run): would run" in stdout and not out_file.exists()
    code, stdout, _ = cli([*args, "--feedback-count", "30"], capsys)
    assert code == 0 and "trigger: ran" in stdout
    (call,) = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert call["argv"][1:] == ["feedback", "1"] and call["reason"]["feedback_count"] == 30


def test_drift_against_the_training_inputs_and_skew_against_a_file(store: str, lineage: dict, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    log = _write(tmp_path, lineage, shifted=True)
    eval_file = tmp_path / "eval-questions.jsonl"
    eval_file.write_text("".join(json.dumps({"question": q}) + "\n" for q in lineage["eval"]), encoding="utf-8")
    code, stdout, err = cli(["monitor", "run", "--log", str(log), "--model", "models:/so-qa-assistant/1",
                             "--rules", str(_rules(tmp_path, **{"command:": "command: null #"})),
                             "--drift-reference", "train", "--skew-reference", str(eval_file), "--json",
                             "--dry-run"], capsys)
    assert code == 0, err
    (version,) = json.loads(stdout)["versions"]
    assert version["skew_reference"]["kind"] == "file" and version["skew_reference"]["rows"] == len(lineage["eval"])
    assert version["basis"] == "the compared questions together"  # the training inputs are a compared side here
    first, second = version["windows"]
    assert first["drift_against"] == second["drift_against"] == f"train {lineage['train_uri']}"
    assert first["drift"]["n_reference"] == len(lineage["train"])
    assert second["drift"]["drift"] is True and second["skew"]["drift"] is True
