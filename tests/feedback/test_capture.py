"""Capture through the CLI and the service on a real SQLite MLflow store: MLflow assessments with a HUMAN source on
the request's trace when the server logged one, the store as the record of truth when an assessment cannot be
logged, the 1-5 schema, and every refusal as one line with its exit code and nothing stored."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest

from feedback.capture import FeedbackInput, FeedbackService
from llmops.errors import InputError
from llmops.records import read_feedback
from llmops.settings import load_settings
from tests.feedback.helpers import cli, cli_streams, served, write_log


def _traced_answer(question: str, request_id: str) -> str:
    """A trace as a server logs a sampled request: its client request id is the X-Request-ID."""
    mlflow.set_experiment("serving")

    @mlflow.trace(name="answer")
    def answer(q: str) -> str:
        mlflow.update_current_trace(client_request_id=request_id)
        return "Use reversed(xs)."

    answer(question)
    trace_id = mlflow.get_last_active_trace_id()
    mlflow.flush_trace_async_logging()
    return trace_id


def test_feedback_on_a_traced_request_becomes_human_assessments(tmp_path: Path, tracking_uri: str, capsys) -> None:
    trace_id = _traced_answer("How do I reverse a list?", "req-traced")
    untraced = served("How do I sort?", "Use sorted().")
    write_log(tmp_path / "log", [served("How do I reverse a list?", "Use reversed(xs).", request_id="req-traced",
                                        trace_id=trace_id), untraced])
    code, out, err = cli(["feedback", "add", "--log", str(tmp_path / "log"), "--request-id", "req-traced",
                          "--rating", "down", "--correction", "Use xs[::-1] (a copy) or xs.reverse() (in place).",
                          "--comment", "reversed() gives an iterator", "--user", "alice", "--json"], capsys)
    assert code == 0, err
    result = json.loads(out)
    assert result["assessments"] == "logged" and result["user"] == "alice" and result["source"] == "cli"
    trace = mlflow.get_trace(trace_id)
    found = {a.name: a for a in trace.info.assessments}
    rating, expected = found["human_rating"], found["expected_response"]
    assert rating.value == 0.0 and rating.rationale == "reversed() gives an iterator"
    assert expected.value == "Use xs[::-1] (a copy) or xs.reverse() (in place)."
    for assessment in (rating, expected):
        assert assessment.source.source_type == "HUMAN" and assessment.source.source_id == "alice"
        assert assessment.metadata["feedback_id"] == result["feedback_id"]
        assert assessment.metadata["request_id"] == "req-traced"
    code, out, err = cli(["feedback", "add", "--log", str(tmp_path / "log"), "--request-id",
                          untraced["request_id"], "--rating", "up"], capsys)
    assert code == 0 and "MLflow assessments: no trace" in out
    assert read_feedback("outputs/feedback").num_rows == 2


def test_an_assessment_that_cannot_be_logged_loses_no_feedback(tmp_path: Path, tracking_uri: str) -> None:
    record = write_log(tmp_path / "log", [served("Q?", "A.", trace_id="tr-00000000000000000000000000000000")])[0]
    service = FeedbackService(load_settings({"feedback": {"log_uri": str(tmp_path / "log")}}))
    (taken,) = service.take([FeedbackInput(request_id=record["request_id"], rating=1)], source="cli", users=["bo"])
    assert taken.assessments.startswith("failed: ")
    (stored,) = read_feedback("outputs/feedback").to_pylist()
    assert stored["feedback_id"] == taken.record["feedback_id"]


def test_the_five_point_scale(tmp_path: Path) -> None:
    record = write_log(tmp_path / "log", [served("Q?", "A.")])[0]
    settings = load_settings({"feedback": {"log_uri": str(tmp_path / "log"), "rating": "scale5"}})
    service = FeedbackService(settings)
    for bad in (0, 6, 3.5, "up", True, "five", float("nan")):
        with pytest.raises(InputError, match="not a whole number from 1 to 5"):
            service.take([FeedbackInput(request_id=record["request_id"], rating=bad)], source="cli", users=["a"])
    assert read_feedback(settings.feedback.store_uri).num_rows == 0
    taken = service.take([FeedbackInput(request_id=record["request_id"], rating=r) for r in ("4", 2, 5.0)],
                         source="cli", users=["a", "b", "c"])
    assert [t.record["rating"] for t in taken] == [4.0, 2.0, 5.0]
    assert {t.record["rating_kind"] for t in taken} == {"scale5"}
    assert read_feedback(settings.feedback.store_uri).num_rows == 3  # one part for the batch


def test_one_bad_item_stores_none_of_the_batch(tmp_path: Path) -> None:
    records = write_log(tmp_path / "log", [served("Q1?", "A1."), served("Q2?", "A2.")])
    service = FeedbackService(load_settings({"feedback": {"log_uri": str(tmp_path / "log")}}))
    items = [FeedbackInput(request_id=records[0]["request_id"], rating=1),
             FeedbackInput(request_id="unknown-id", rating=1)]
    with pytest.raises(Exception, match="item 2: unknown request id 'unknown-id'"):
        service.take(items, source="import", where=["item 1", "item 2"], users=["a", "a"])
    assert read_feedback(service.store_uri).num_rows == 0


@pytest.mark.parametrize(("args", "code", "message"), [
    (["--rating", "sideways"], 7, "not a thumbs rating"),
    (["--rating", "0", "--correction", " "], 7, "empty correction"),
    (["--rating", "up", "--request-id-override", "missing"], 4, "unknown request id 'missing'"),
])
def test_cli_refusals_are_one_line_with_their_exit_code(tmp_path: Path, capsys, args: list[str], code: int,
                                                        message: str) -> None:
    record = write_log(tmp_path / "log", [served("Q?", "A.")])[0]
    request_id = record["request_id"]
    if "--request-id-override" in args:
        request_id = args[args.index("--request-id-override") + 1]
        args = args[:args.index("--request-id-override")]
    got, out, err = cli(["feedback", "add", "--log", str(tmp_path / "log"), "--request-id", request_id, *args],
                        capsys)
    assert got == code and message in err and out == ""
    assert not Path("outputs/feedback").exists() or read_feedback("outputs/feedback").num_rows == 0


def test_with_no_log_configured_feedback_reads_where_the_server_writes(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("LLMOPS_SERVING__LOG_URI", str(tmp_path / "served"))
    code, _, err = cli(["feedback", "add", "--request-id", "x", "--rating", "up"], capsys)
    assert code == 4 and f"unknown request id 'x': it is not in the inference log at {tmp_path / 'served'}" in err
    record = write_log(tmp_path / "served", [served("Q?", "A.")])[0]
    code, out, err = cli(["feedback", "add", "--request-id", record["request_id"], "--rating", "up", "--json"],
                         capsys)
    assert code == 0 and json.loads(out)["provenance"]["model_version"] == "1", err


def test_a_mistyped_tracking_store_is_not_created_and_the_feedback_is_kept(tmp_path: Path, capsys) -> None:
    """The trace of a request lives in the tracking store: a store that does not exist holds none, so it is not
    created as a side effect; the feedback still reaches its store, with a warning naming the store."""
    record = write_log(tmp_path / "log", [served("Q?", "A.", trace_id="tr-123")])[0]
    missing = tmp_path / "mlfow.db"
    code, out, err = cli_streams(["feedback", "add", "--log", str(tmp_path / "log"), "--request-id",
                                  record["request_id"], "--rating", "up", "--tracking-uri", f"sqlite:///{missing}",
                                  "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["assessments"] == "off"
    assert f"warning: MLflow tracking store sqlite:///{missing} does not exist" in err
    assert not missing.exists() and read_feedback("outputs/feedback").num_rows == 1
