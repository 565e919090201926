"""The inference-log writer on its own: records redacted before they are stored, read back by the one reader in
`llmops.records`, parts rotated by count and by time, backpressure instead of silent loss, a dropped record
counted, storage failures retried, and any fsspec URL as the location."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

from llmops.parts import list_parts
from llmops.records import read_inference_log
from serving.inference_log import InferenceLogWriter, inference_record

MODEL = SimpleNamespace(name="so-qa", version="3", alias="production",
                        bundle={"prompt_name": "so-qa", "prompt_version": "2", "instruction_hash": "abc123",
                                "dataset_digest": "d1g3st", "provider": "retrieval", "model_id": "retrieval-tfidf"})
ANSWER = {"answer": "Write to jane.doe@example.com or call +1 415 555 0132.", "abstained": False,
          "citations": [{"source_id": "7", "link": "https://stackoverflow.com/q/7", "similarity": 0.8, "kind": "r"}],
          "safety": {"blocked": False}, "prompt_name": "so-qa", "prompt_version": 2, "instruction_hash": "abc123",
          "provider": "retrieval", "model_id": "retrieval-tfidf"}


def record(i: int, question: str = "How do I reverse a list?", **changes) -> dict:
    fields = {"request_id": f"r{i}", "started": time.time(), "latency_ms": 2.5, "status": 200,
              "endpoint": "invocations", "model": MODEL, "role": "champion", "question": question,
              "answer": ANSWER, **changes}
    return inference_record(**fields)


def test_records_are_redacted_complete_and_read_back_in_the_shared_schema(tmp_path) -> None:
    writer = InferenceLogWriter(str(tmp_path / "log"), part_max_records=100, part_max_seconds=60)
    writer.submit(record(1, "My mail is john@corp.example.org, card 4111 1111 1111 1111, key sk-abcdefghijklmnop"
                            "qrstuvwxyz123456"))
    writer.submit(record(2, "", status=400, answer=None, error="question is empty"))
    writer.close()
    table = read_inference_log(str(tmp_path / "log")).to_pylist()
    assert [r["request_id"] for r in table] == ["r1", "r2"] and writer.written == 2 and writer.dropped == 0
    first, refused = table
    assert first["question"] == "My mail is [EMAIL], card [CARD], key [SECRET]"
    assert first["answer"] == "Write to [EMAIL] or call [PHONE]."
    assert first["redactions"] == 5
    assert "@" not in first["question"] + first["answer"]
    assert (first["model_name"], first["model_version"], first["model_alias"], first["prompt_version"],
            first["instruction_hash"], first["dataset_digest"]) == ("so-qa", "3", "production", 2, "abc123", "d1g3st")
    assert first["citations"] == [{"source_id": "7", "link": "https://stackoverflow.com/q/7", "similarity": 0.8}]
    assert first["abstained"] is False and first["safety_blocked"] is False and first["replica"]
    assert (refused["status"], refused["error"], refused["question"], refused["answer"]) == \
        (400, "question is empty", "", None)


def test_parts_rotate_by_count_and_by_time(tmp_path) -> None:
    location = str(tmp_path / "log")
    writer = InferenceLogWriter(location, part_max_records=10, part_max_seconds=0.3)
    for i in range(25):
        writer.submit(record(i))
    deadline = time.monotonic() + 10
    while writer.written < 25 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert writer.written == 25  # the last 5 went out on the timer, not at close
    assert len(list_parts(location)) == 3
    writer.close()
    assert sorted(r["request_id"] for r in read_inference_log(location).to_pylist()) == \
        sorted(f"r{i}" for i in range(25))


def test_a_full_queue_applies_backpressure_and_only_then_drops_and_counts(tmp_path) -> None:
    gate = threading.Event()
    written: list[int] = []

    def slow_write(location, rows, prefix):  # the real writer behind a gate: storage that stalls
        gate.wait(10)
        written.append(len(rows))
        from llmops.records import write_inference_records

        return write_inference_records(location, rows, prefix)

    dropped: list[int] = []
    writer = InferenceLogWriter(str(tmp_path / "log"), queue_size=2, put_timeout_s=0.2, part_max_records=1,
                                part_max_seconds=60, write=slow_write, on_dropped=dropped.append)
    for i in range(3):  # one taken by the (stalled) writer thread, two fill the queue
        assert writer.submit(record(i))
        time.sleep(0.05)
    started = time.perf_counter()
    assert writer.submit(record(3)) is False  # waited put_timeout_s for room, then dropped
    assert time.perf_counter() - started >= 0.19
    assert writer.dropped == 1 and dropped == [1]
    writer.put_timeout_s = 10.0
    threading.Timer(0.2, gate.set).start()
    assert writer.submit(record(4))  # room appears while it waits: backpressure, not loss
    writer.close()
    assert writer.written == 4 and writer.dropped == 1
    assert sorted(r["request_id"] for r in read_inference_log(str(tmp_path / "log")).to_pylist()) == \
        ["r0", "r1", "r2", "r4"]


def test_a_failing_store_is_retried_and_nothing_is_lost(tmp_path) -> None:
    from llmops.records import write_inference_records

    failures = [OSError("bucket unavailable"), OSError("bucket unavailable")]

    def flaky(location, rows, prefix):
        if failures:
            raise failures.pop()
        return write_inference_records(location, rows, prefix)

    writer = InferenceLogWriter(str(tmp_path / "log"), part_max_records=5, part_max_seconds=60, write=flaky)
    for i in range(5):
        writer.submit(record(i))
    writer.close()
    assert writer.failures == 2 and writer.last_error == "bucket unavailable"
    assert writer.written == 5 and len(read_inference_log(str(tmp_path / "log"))) == 5


def test_any_fsspec_url_is_a_location(tmp_path) -> None:
    url = f"memory://serving-test-{tmp_path.name}/log"
    writer = InferenceLogWriter(url, part_max_records=2, part_max_seconds=60)
    for i in range(3):
        writer.submit(record(i))
    writer.close()
    assert len(list_parts(url)) == 2 and len(read_inference_log(url)) == 3


def test_a_closed_writer_counts_what_it_refuses(tmp_path) -> None:
    writer = InferenceLogWriter(str(tmp_path / "log"))
    writer.close()
    assert writer.submit(record(1)) is False and writer.dropped == 1


def test_flush_writes_what_was_queued_before_it_at_once_and_nothing_when_empty(tmp_path) -> None:
    location = str(tmp_path / "log")
    writer = InferenceLogWriter(location, part_max_records=1000, part_max_seconds=3600)
    for i in range(3):
        writer.submit(record(i, trace_id=f"tr-{i}"))
    assert writer.flush(timeout_s=10) is True  # not an hour later: now
    assert sorted(r["request_id"] for r in read_inference_log(location).to_pylist()) == ["r0", "r1", "r2"]
    assert [r["trace_id"] for r in read_inference_log(location).to_pylist()] == ["tr-0", "tr-1", "tr-2"]
    assert writer.flush(timeout_s=10) is True and len(list_parts(location)) == 1  # nothing queued: no empty part
    writer.submit(record(3))
    writer.close()
    assert writer.flush(timeout_s=1) is False and len(read_inference_log(location)) == 4
