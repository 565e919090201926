"""Bulk import/export and review sessions through the CLI: a malformed file line named by number with nothing stored,
the review queues (low-rated, abstained, sampled, and drift from a real `llmops monitor run`) and the round trip of
a filled-in batch, whose corrections then outrank the app's."""

from __future__ import annotations

import csv
import json
from datetime import timedelta
from pathlib import Path

import pytest

from feedback.capture import FeedbackInput, FeedbackService
from llmops.records import FEEDBACK_SCHEMA, read_feedback
from llmops.settings import load_settings
from tests.feedback.helpers import T0, cli, served, spaced, write_log

STORE = "outputs/feedback"


@pytest.fixture
def log(tmp_path: Path) -> dict:
    records = write_log(tmp_path / "log", spaced([
        served("How do I reverse a list?", "Use reversed()."),
        served("How do I sort a dict by value?", "Use sorted()."),
        served("How do I read a file?", "Use open()."),
        served("What is a monad in Haskell?", "I don't know.", abstained=True),
        served("What is a monad in Haskell?", "I don't know.", abstained=True),
        served("How do I bake bread?", "I don't know.", abstained=True),
        served("How do I do something unsafe?", "[withheld]", blocked=True),
        served("How do I merge dicts?", "Use |.", version="2"),
    ]))
    return {"uri": str(tmp_path / "log"), "records": records, "rid": [r["request_id"] for r in records]}


def _write_csv(path: Path, rows: list[dict], columns: list[str]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def _stored() -> list[dict]:
    return read_feedback(STORE).to_pylist() if Path(STORE).exists() else []


@pytest.mark.parametrize(("body", "code", "message"), [
    ('{"request_id": "R0", "rating": 1}\n{"request_id": "R1", "rating": 0\n', 3, "line 2 is not JSON"),
    ('{"request_id": "R0", "rating": 1}\n\n["R1", 0]\n', 3, "line 3 is not a JSON object"),
    ('{"request_id": "R0", "rating": 1}\n{"request_id": "R1", "rating": 7}\n', 7, "line 2: rating 7 is not a thumbs"),
    ('{"request_id": "R0", "rating": 1}\n{"request_id": "nope", "rating": 1}\n', 4,
     "line 2: unknown request id 'nope'"),
    ('{"request_id": "R0", "rating": 1, "corected_answer": "x"}\n', 3, "line 1: unknown column(s) corected_answer"),
    ('{"request_id": "R6", "rating": 0, "corrected_answer": "safe now"}\n', 7, "line 1: request"),
    ('{"request_id": "R0", "rating": 1, "user": ""}\n', 7, "line 1: who gave this feedback?"),
    ("", 3, "holds no rows"),
])
def test_a_bad_jsonl_line_is_named_and_nothing_is_stored(tmp_path: Path, log: dict, capsys, body: str, code: int,
                                                        message: str) -> None:
    for i, rid in enumerate(log["rid"]):
        body = body.replace(f'"R{i}"', json.dumps(rid))
    path = tmp_path / "feedback.jsonl"
    path.write_text(body, encoding="utf-8")
    user = [] if "who gave" in message else ["--user", "ann"]
    got, out, err = cli(["feedback", "import", str(path), "--log", log["uri"], *user], capsys)
    assert got == code and message in err, err
    assert _stored() == []


def test_a_csv_row_with_extra_cells_is_named_by_its_line(tmp_path: Path, log: dict, capsys) -> None:
    path = tmp_path / "f.csv"
    path.write_text(f'request_id,rating,comment\n{log["rid"][0]},1,"spans\ntwo lines"\n{log["rid"][1]},0,x,extra\n',
                    encoding="utf-8")
    got, _, err = cli(["feedback", "import", str(path), "--log", log["uri"], "--user", "ann"], capsys)
    assert got == 3 and "line 4 has more cells than the header" in err and _stored() == []


def test_import_then_export(tmp_path: Path, log: dict, capsys) -> None:
    path = _write_csv(tmp_path / "f.csv", [
        {"request_id": log["rid"][0], "rating": "up", "corrected_answer": "", "comment": "", "user": ""},
        {"request_id": log["rid"][1], "rating": "", "corrected_answer": "Use sorted(d.items(), key=...).",
         "comment": "ok", "user": "bob"},
        {"request_id": log["rid"][2], "rating": "", "corrected_answer": "", "comment": "", "user": ""},
    ], ["request_id", "rating", "corrected_answer", "comment", "user"])
    code, out, err = cli(["feedback", "import", str(path), "--log", log["uri"], "--user", "ann", "--json"], capsys)
    assert code == 0, err
    result = json.loads(out)
    assert (result["imported"], result["skipped"], result["corrections"], result["source"]) == (2, 1, 1, "import")
    by_request = {r["request_id"]: r for r in _stored()}
    assert by_request[log["rid"][0]]["user"] == "ann" and by_request[log["rid"][0]]["rating"] == 1.0
    # a correction without a rating is rated the lowest of the schema; the row's own user wins over --user
    assert by_request[log["rid"][1]]["rating"] == 0.0 and by_request[log["rid"][1]]["user"] == "bob"
    for suffix in (".csv", ".jsonl"):
        target = tmp_path / f"export{suffix}"
        code, out, err = cli(["feedback", "export", "--out", str(target)], capsys)
        assert code == 0 and "wrote 2 feedback record(s)" in out
    with (tmp_path / "export.csv").open(encoding="utf-8") as handle:
        exported = list(csv.DictReader(handle))
    assert list(exported[0]) == list(FEEDBACK_SCHEMA.names)
    assert {r["model_version"] for r in exported} == {"1"} and {r["dataset_digest"] for r in exported} != {""}
    lines = (tmp_path / "export.jsonl").read_text().splitlines()
    assert len(lines) == 2 and set(json.loads(lines[0])) == set(FEEDBACK_SCHEMA.names)
    code, out, _ = cli(["feedback", "export", "--out", str(tmp_path / "v2.csv"), "--model-version", "2"], capsys)
    assert "wrote 0 feedback record(s)" in out


def test_review_batches_and_their_round_trip(tmp_path: Path, log: dict, capsys) -> None:
    service = FeedbackService(load_settings({"feedback": {"log_uri": log["uri"]}}))
    rid = log["rid"]
    for i, user in enumerate(("u1", "u2")):
        service.take([FeedbackInput(request_id=rid[0], rating=0)], source="server", users=[user],
                     now=T0 + timedelta(minutes=i))
    service.take([FeedbackInput(request_id=rid[1], rating=0)], source="server", users=["u1"])
    service.take([FeedbackInput(request_id=rid[2], rating=0, corrected_answer="Use open(path).")], source="server",
                 users=["u3"])  # corrected already: never queued again
    service.take([FeedbackInput(request_id=rid[2], rating=0)], source="server", users=["u4"])

    low = tmp_path / "low.csv"
    code, out, err = cli(["feedback", "review", "--queue", "low-rated", "--out", str(low), "--log", log["uri"]],
                         capsys)
    assert code == 0, err
    with low.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["request_id"] for r in rows] == [rid[0], rid[1]]  # the most often rated low first
    assert rows[0]["reason"] == "rated low 2 time(s)" and rows[0]["question"] == "How do I reverse a list?"
    assert rows[0]["model_version"] == "1" and rows[0]["corrected_answer"] == ""

    abstained = tmp_path / "abstained.jsonl"
    code, out, err = cli(["feedback", "review", "--queue", "abstained", "--out", str(abstained), "--log",
                          log["uri"]], capsys)
    queued = [json.loads(line) for line in abstained.read_text().splitlines()]
    assert [q["question"] for q in queued] == ["What is a monad in Haskell?", "How do I bake bread?"]
    assert queued[0]["request_id"] == rid[4] and queued[0]["reason"] == "abstained, asked 2 time(s)"

    sampled = tmp_path / "sampled.csv"
    cli(["feedback", "review", "--queue", "sampled", "--out", str(sampled), "--log", log["uri"], "--n", "2",
         "--seed", "1"], capsys)
    again = tmp_path / "again.csv"
    cli(["feedback", "review", "--queue", "sampled", "--out", str(again), "--log", log["uri"], "--n", "2",
         "--seed", "1"], capsys)
    assert sampled.read_text() == again.read_text() and len(sampled.read_text().splitlines()) == 3
    assert "I don't know" not in sampled.read_text() and "How do I read a file?" not in sampled.read_text()
    code, out, err = cli(["feedback", "review", "--queue", "sampled", "--out", str(tmp_path / "v3.csv"), "--log",
                          log["uri"], "--model-version", "3"], capsys)
    assert code == 0 and "wrote 0 row(s)" in out and "nothing to review" in out

    # reviewers fill in the low-rated batch; it comes back as review feedback
    rows[0]["corrected_answer"], rows[0]["comment"] = "Use xs[::-1] or reversed(xs) for an iterator.", "fixed"
    rows[1]["rating"] = "up"
    _write_csv(low, rows, list(rows[0]))
    code, out, err = cli(["feedback", "import", str(low), "--log", log["uri"], "--user", "carol"], capsys)
    assert code == 0, err
    assert "imported 2 feedback record(s)" in out and "as review" in out
    reviewed = [r for r in _stored() if r["source"] == "review"]
    assert {r["user"] for r in reviewed} == {"carol"} and len(reviewed) == 2
    code, out, err = cli(["feedback", "review", "--queue", "low-rated", "--out", str(low), "--log", log["uri"]],
                         capsys)
    with low.open(encoding="utf-8") as handle:
        assert [r["request_id"] for r in csv.DictReader(handle)] == [rid[1]]  # the corrected one left the queue


@pytest.mark.parametrize(("args", "message"), [
    (["--queue", "angry"], "unknown review queue 'angry'"),
    (["--queue", "drift"], "--monitor-run"),
    (["--queue", "sampled", "--n", "0"], "feedback.review_size"),
])
def test_review_refusals(tmp_path: Path, log: dict, capsys, args: list[str], message: str) -> None:
    code, _, err = cli(["feedback", "review", *args, "--out", str(tmp_path / "b.csv"), "--log", log["uri"]], capsys)
    assert code != 0 and message in err and not (tmp_path / "b.csv").exists()


def test_the_drift_queue_takes_a_monitor_runs_examples(tmp_path: Path, tracking_uri: str, capsys) -> None:
    """A real `llmops monitor run` over a log whose second hour is 40% Russian: its drift examples, matched to their
    newest log records, make the batch."""
    from tests.monitoring.helpers import other_language
    from tests.monitoring.pools import sample_questions

    english, russian = list(sample_questions()), other_language("ru")
    first = [english[i % len(english)] for i in range(120)]
    second = [english[(i * 7) % len(english)] for i in range(72)] + [russian[i % len(russian)] for i in range(48)]
    log = tmp_path / "log"
    records = [served(q, "An answer.", when=T0 + timedelta(seconds=30 * i)) for i, q in enumerate(first + second)]
    write_log(log, records)
    code, out, err = cli(["monitor", "run", "--log", str(log), "--window", "1h", "--skew-reference", "none",
                          "--json"], capsys)
    assert code == 0, err
    import mlflow

    (run,) = mlflow.search_runs(search_all_experiments=True, output_format="list",
                                filter_string="tags.`llmops.step` = 'monitor'")
    batch = tmp_path / "drift.csv"
    code, out, err = cli(["feedback", "review", "--queue", "drift", "--monitor-run", run.info.run_id, "--out",
                          str(batch), "--log", str(log), "--n", "5"], capsys)
    assert code == 0, err
    with batch.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert 1 <= len(rows) <= 5 and all(r["reason"].startswith("drift example") for r in rows)
    newest = {r["question"]: r["request_id"] for r in records}
    assert all(newest[r["question"]] == r["request_id"] for r in rows)
    assert any(any("\u0400" <= ch <= "\u04ff" for ch in r["question"]) for r in rows)  # the Russian questions
