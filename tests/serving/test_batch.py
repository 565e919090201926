"""`llmops serve batch` in real processes: JSONL and Parquet in and out, chunked, one log record per row (PII
redacted), a bad row refused without stopping the run, and a run killed half-way resumed without redoing a chunk or
writing a log record twice, on the version it started with."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from serving_helpers import SKIP_ENV, log_records, move_alias, wait_for

MODEL = "batch-qa"
LLMOPS = str(Path(sys.executable).parent / "llmops")


@pytest.fixture(scope="module")
def batch_versions(world):
    first, second = world.register(MODEL), world.register(MODEL)
    move_alias(MODEL, "dev", first, "batch on the first version")
    return first, second


def env(store) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith("LLMOPS_") and k not in SKIP_ENV}
    return {**keep, "MLFLOW_TRACKING_URI": store.tracking_uri}


def batch(store, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([LLMOPS, "serve", "batch", "--model", f"models:/{MODEL}@dev", *args], env=env(store),
                          capture_output=True, text=True, timeout=600, check=False)
    if check:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


def questions(n: int) -> list[str]:
    topics = ["reverse a list", "merge two dicts", "read a file line by line", "sort a dict by value"]
    return [f"How do I {topics[i % 4]}? ({i}, ping me at dev{i}@example.com)" for i in range(n)]


def test_jsonl_in_chunks_with_a_bad_row_and_one_log_record_per_row(store, batch_versions, tmp_path) -> None:
    first, _ = batch_versions
    rows = questions(230)
    rows[17] = "   "
    source = tmp_path / "questions.jsonl"
    source.write_text("".join(json.dumps({"question": q, "id": i}) + "\n" for i, q in enumerate(rows)))
    output, log = tmp_path / "answers.jsonl", tmp_path / "log"
    done = batch(store, "--input", str(source), "--output", str(output), "--chunk-rows", "50", "--log", str(log),
                 "--json")
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert (summary["rows"], summary["chunks"], summary["failed_rows"], summary["model_version"]) == \
        (230, 5, 1, first)
    answers = [json.loads(line) for line in output.read_text().splitlines()]
    assert [a["row"] for a in answers] == list(range(230))
    assert answers[17]["error"] == "question is empty" and "answer" not in answers[17]
    assert all(a["model_version"] == first and a["citations"] for i, a in enumerate(answers) if i != 17)
    assert not (tmp_path / "answers.jsonl.parts").exists()
    records = log_records(log)
    job = summary["job_id"]
    assert sorted(r["request_id"] for r in records) == sorted(f"batch-{job}-{i}" for i in range(230))
    assert {r["endpoint"] for r in records} == {"batch"} and {r["model_version"] for r in records} == {first}
    by_id = {r["request_id"]: r for r in records}
    assert by_id[f"batch-{job}-17"]["status"] == 400 and by_id[f"batch-{job}-18"]["status"] == 200
    assert not any("@example.com" in r["question"] for r in records)
    assert all(r["redactions"] >= 1 for r in records if r["status"] == 200)


def test_parquet_in_and_out(store, batch_versions, tmp_path) -> None:
    first, _ = batch_versions
    source = tmp_path / "questions.parquet"
    pq.write_table(pa.table({"question": questions(40), "other": list(range(40))}), source)
    output = tmp_path / "answers.parquet"
    done = batch(store, "--input", str(source), "--output", str(output), "--chunk-rows", "16",
                 "--log", str(tmp_path / "log"))
    assert "wrote 40 answer(s)" in done.stdout and "in 3 chunk(s)" in done.stdout
    table = pq.read_table(output)
    assert table.column("row").to_pylist() == list(range(40))
    assert set(table.column("model_version").to_pylist()) == {first}
    assert json.loads(table.column("citations")[0].as_py())[0]["source_id"]


def test_a_killed_run_resumes_without_redoing_a_chunk_on_the_version_it_started_with(store, batch_versions,
                                                                                    tmp_path) -> None:
    first, second = batch_versions
    source = tmp_path / "many.jsonl"
    source.write_text("".join(json.dumps({"question": q}) + "\n" for q in questions(2000)))
    output, log = tmp_path / "out" / "many-answers.jsonl", tmp_path / "log"
    parts = output.with_name(output.name + ".parts")
    args = ["--input", str(source), "--output", str(output), "--chunk-rows", "50", "--log", str(log), "--json"]
    process = subprocess.Popen([LLMOPS, "serve", "batch", "--model", f"models:/{MODEL}@dev", *args], env=env(store),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        wait_for(lambda: parts.exists() and len(list(parts.glob("chunk-*.jsonl"))) >= 3, 300, "three chunks",
                 every_s=0.05)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(30)
    committed = sorted(p.name for p in parts.glob("chunk-*.jsonl"))
    assert 3 <= len(committed) < 40 and not output.exists()
    logged_before = log_records(log)

    move_alias(MODEL, "dev", second, "the alias moves while the batch is interrupted")
    try:
        changed = tmp_path / "changed.jsonl"
        changed.write_text(source.read_text() + json.dumps({"question": "one more?"}) + "\n")
        refused = batch(store, "--input", str(changed), *args[2:], check=False)
        assert refused.returncode == 2 and "interrupted run on another input" in refused.stderr
        assert "--restart" in refused.stderr

        done = batch(store, *args)
    finally:
        move_alias(MODEL, "dev", first, "back")
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["resumed_chunks"] == len(committed) and summary["model_version"] == first  # kept, not redone
    answers = [json.loads(line) for line in output.read_text().splitlines()]
    assert [a["row"] for a in answers] == list(range(2000))
    assert {a["model_version"] for a in answers} == {first}  # the version the run started with, pinned
    records = log_records(log)
    ids = [r["request_id"] for r in records]
    assert len(ids) == len(set(ids)) == 2000  # no row logged twice, none missing
    assert len(logged_before) >= len(committed) * 50
