"""The `llmops serve` commands at their boundary: usage and setting errors are one line and an exit code before
anything starts; several workers serve, each following the alias and writing its own log parts; the settings
section reaches monitoring (one log location)."""

from __future__ import annotations

from pathlib import Path

import pytest
from serving_helpers import ServerProcess, log_records

from llmops.cli import main


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as info:
        main(args)
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) <= 1, errors
    return int(info.value.code), errors[0] if errors else ""


@pytest.mark.parametrize("args,code,message", [
    ([], 2, "give --model models:/NAME@ALIAS"),
    (["--model", "so-qa@production"], 2, "--model must look like models:/NAME@ALIAS or models:/NAME/VERSION"),
    (["--model", "models:/m@production", "--challenger", "models:/m@staging"], 2,
     "--challenger needs --canary-percent P (> 0) or --shadow"),
    (["--model", "models:/m@production", "--canary-percent", "10"], 2, "need a --challenger"),
    (["--model", "models:/m@production", "--challenger", "models:/m@staging", "--canary-percent", "10", "--shadow"],
     2, "choose one of --canary-percent and --shadow"),
    (["--model", "models:/m@production", "--challenger", "models:/m@staging", "--canary-percent", "120"], 2,
     "invalid setting serving.canary_percent"),
    (["--model", "models:/m@production", "--port", "70000"], 2, "invalid setting serving.port"),
    (["--model", "models:/m@production", "--tracking-uri", "sqlite:///nowhere/mlfow.db"], 4, "does not exist"),
])
def test_start_refuses_bad_flags_with_one_line(args, code, message, capsys, tmp_path) -> None:
    got, line = run_cli(["serve", "start", *args], capsys)
    assert (got, message in line) == (code, True), line


def test_batch_and_predict_refuse_bad_input_before_loading(capsys, tmp_path) -> None:
    (tmp_path / "q.txt").write_text("x")
    code, line = run_cli(["serve", "batch", "--model", "models:/m@dev", "--input", str(tmp_path / "q.txt"),
                          "--output", str(tmp_path / "a.jsonl")], capsys)
    assert code == 2 and "must end in .jsonl or .parquet" in line
    code, line = run_cli(["serve", "batch", "--model", "models:/m@dev", "--input", str(tmp_path / "none.jsonl"),
                          "--output", str(tmp_path / "a.jsonl"), "--chunk-rows", "0"], capsys)
    assert code == 2 and "--chunk-rows must be at least 1" in line


def test_monitoring_and_feedback_read_where_the_server_writes(monkeypatch, tmp_path) -> None:
    """One setting: serving.log_uri is where monitoring and feedback read unless theirs is set; a flag that moves
    the server's log moves theirs too (resolved when read, not copied at load)."""
    from llmops.settings import inference_log_uri, load_settings

    monkeypatch.setenv("LLMOPS_SERVING__LOG_URI", "gs://bucket/inference-log")
    settings = load_settings()
    assert settings.serving.log_uri == "gs://bucket/inference-log" and settings.monitoring.log_uri is None
    assert {reader: inference_log_uri(settings, reader) for reader in ("serving", "monitoring", "feedback")} == \
        dict.fromkeys(("serving", "monitoring", "feedback"), "gs://bucket/inference-log")
    moved = load_settings({"serving": {"log_uri": "rel/log"}})
    assert inference_log_uri(moved, "feedback") == inference_log_uri(moved, "monitoring") == \
        moved.serving.log_uri == str(Path("rel/log").resolve())
    own = load_settings({"monitoring": {"log_uri": "mon/log"}})
    assert inference_log_uri(own, "monitoring") == inference_log_uri(own, "feedback") == str(Path("mon/log").resolve())
    assert inference_log_uri(own, "serving") == "gs://bucket/inference-log"
    both = load_settings({"monitoring": {"log_uri": "mon/log"}, "feedback": {"log_uri": "memory://fb"}})
    assert (inference_log_uri(both, "feedback"), inference_log_uri(both, "monitoring")) == \
        ("memory://fb", str(Path("mon/log").resolve()))
    assert load_settings().serving.routers == ["feedback.http:server_router"]  # POST /feedback is mounted


def test_several_workers_each_follow_the_alias_and_write_their_own_parts(store) -> None:
    name = "workers-qa"
    version = store.register(name)
    server = ServerProcess(store.root / "workers", store.tracking_uri, f"models:/{name}@dev",
                           args=("--workers", "2"), name="workers")
    with server:
        replicas, ids = set(), []
        for _ in range(60):
            response = server.ask("How do I reverse a list?")
            assert response.status_code == 200 and response.headers["x-model-version"] == version
            ids.append(response.headers["x-request-id"])
            replicas.add(server.version()["replica"])
        requests = server.metric("llmops_requests_total", endpoint="invocations", status="200")
    assert len(replicas) == 2  # both processes answered
    assert requests == 60  # /metrics sums the workers (Prometheus multiprocess mode)
    records = log_records(server.log_dir)
    assert sorted(r["request_id"] for r in records) == sorted(ids)
    assert {r["replica"] for r in records} == replicas
