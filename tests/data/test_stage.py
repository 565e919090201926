"""Cleaning workers stage batches in query order; staging drops exact duplicates, keeps one answer per question."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from projects.data.clean import EXAMPLE_COLUMNS, CleanOptions, clean_batch
from llmops.dataset import row_hash, split_digest
from projects.data.formats import streamed_split_digest
from projects.data.prepare import cleaned_batches
from projects.data.stage import Staging

OPTIONS = CleanOptions(template_parts=("Answer this:\n", "\nAnswer:"), prompt_name="so-qa", prompt_version=3,
                       instruction_hash="abc123", eval_percent=30)
SCHEMA = pa.schema([("site", pa.string()), ("question_id", pa.int64()), ("title", pa.string()),
                    ("question_body", pa.string()), ("tags", pa.string()), ("answer_id", pa.int64()),
                    ("answer_body", pa.string())])


def _row(qid: int, aid: int, title: str, body: str, answer: str, site: str | None = None) -> dict:
    return {"site": site, "question_id": qid, "title": title, "question_body": f"<p>{body}</p>",
            "tags": "python", "answer_id": aid, "answer_body": f"<p>{answer}</p>"}


def _batch(rows: list[dict]) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist(rows, schema=SCHEMA)


def test_each_example_carries_the_row_hash_consumers_recompute() -> None:
    rows = [_row(1, 11, "Sort a list", "How do I sort?", "Use <code>sorted</code>."),
            _row(2, 12, "Ünïcödé title ﬁle", "Body with\u00a0NBSP", "ok", site="ja.stackoverflow.com")]
    table, _, _ = clean_batch(_batch(rows), OPTIONS)
    for example in table.to_pylist():
        assert example["row_hash"] == row_hash({name: example[name] for name in EXAMPLE_COLUMNS})
        assert example["input_text"] == f"Answer this:\n{example['question']}\nAnswer:"
    assert table.column("id").to_pylist() == ["1", "ja.stackoverflow.com/2"]


def _staged(tmp_path: Path, batches: list[pa.RecordBatch], processes: bool = False) -> tuple[Staging, int]:
    staging = Staging(tmp_path, "64MB")
    kept = sum(n for n, _, _ in cleaned_batches(iter(batches), OPTIONS, staging, workers=3, processes=processes))
    return staging, kept


@pytest.mark.parametrize("processes", [False, True], ids=["threads", "processes"])
def test_workers_stage_batches_in_query_order(tmp_path: Path, processes: bool) -> None:
    batches = [_batch([_row(i, 1000 + i, f"Question {i} about topic {i % 7}", f"body {i}", f"answer {i}")
                       for i in range(start, start + 5)]) for start in range(0, 60, 5)]
    staging, kept = _staged(tmp_path, batches, processes)
    parts = sorted(staging.parts.iterdir())
    assert kept == 60 and len(parts) == 12
    assert [q for part in parts for q in pq.read_table(part).column("question_id").to_pylist()] == list(range(60))


def test_staging_drops_exact_duplicates_and_keeps_one_answer_per_question(tmp_path: Path) -> None:
    first = [_row(7, 70, "Reverse a list", "How to reverse?", "Use <code>[::-1]</code>."),
             _row(7, 71, "Reverse a list", "How to reverse?", "Call <code>reversed</code>."),  # second answer
             _row(8, 80, "Parse JSON", "How to parse JSON?", "Use <code>json.loads</code>.")]
    second = [_row(9, 90, "REVERSE A LIST", "HOW TO REVERSE?", "USE <code>[::-1]</code>."),  # same text up to case
              _row(10, 100, "Read a file", "How to read a file?", "Use <code>open</code>.")]
    staging, kept = _staged(tmp_path, [_batch(first), _batch(second)])
    con = staging.finish()
    try:
        examples = con.sql(f"SELECT {', '.join(EXAMPLE_COLUMNS)} FROM examples ORDER BY id").to_arrow_table()
        assert kept == 5
        # question 9 duplicates question 7's accepted text: the lower id stays; 7 keeps its lowest answer id
        assert [(e["id"], e["answer_id"]) for e in examples.to_pylist()] == [("10", 100), ("7", 70), ("8", 80)]
        for split in {e["split"] for e in examples.to_pylist()}:
            assert streamed_split_digest(con, "examples", split) == \
                split_digest(e for e in examples.to_pylist() if e["split"] == split)
    finally:
        staging.close()
