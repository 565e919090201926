"""Helpers of the monitoring tests: inference logs written through the core writer (`write_inference_records`, the
one the server uses), the other-language questions, the CLI in-process, the monitor runs of a store."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from llmops.records import INFERENCE_SCHEMA_VERSION, write_inference_records

T0 = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
OTHER_LANGUAGES = Path(__file__).resolve().parent / "data" / "other_languages.jsonl"


def other_language(language: str) -> list[str]:
    rows = [json.loads(line) for line in OTHER_LANGUAGES.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r["question"] for r in rows if r["language"] == language]


def inference_record(question: str, when: datetime, *, version: str = "1", name: str = "so-qa-assistant",
                     status: int = 200, latency_ms: float = 20.0, abstained: bool = False, blocked: bool = False,
                     similarity: float | None = 0.6, digest: str | None = None, answer: str | None = None,
                     role: str = "champion", schema_version: int = INFERENCE_SCHEMA_VERSION) -> dict[str, Any]:
    ok = status < 400
    return {
        "schema_version": schema_version, "request_id": uuid.uuid4().hex, "time": when,
        "latency_ms": latency_ms, "status": status, "error": None if ok else "refused", "endpoint": "invocations",
        "model_name": name, "model_version": version, "model_alias": "production", "role": role, "shadow_of": None,
        "prompt_name": "so-qa", "prompt_version": 1, "instruction_hash": "abc", "dataset_digest": digest,
        "question": question, "answer": (answer if answer is not None else f"See the docs for: {question[:40]}")
        if ok else None,
        "citations": [{"source_id": "1", "link": "https://stackoverflow.com/q/1", "similarity": similarity}]
        if ok and similarity is not None and not abstained else [],
        "abstained": abstained if ok else None, "safety_blocked": blocked if ok else None, "provider": "local",
        "model_id": "retrieval", "session_hash": "s" * 12, "redactions": 0, "replica": "host:1",
    }


def write_log(location: Path | str, questions: Sequence[str], start: datetime = T0, every: timedelta = timedelta(seconds=10),
              parts: int = 1, **fields: Any) -> list[dict[str, Any]]:
    """Write one record per question, `every` apart from `start`, into `parts` part files; returns the records."""
    records = [inference_record(q, start + i * every, **fields) for i, q in enumerate(questions)]
    for chunk in np.array_split(np.arange(len(records)), parts):
        if len(chunk):
            write_inference_records(str(location), [records[i] for i in chunk])
    return records


def cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """`llmops ARGS` in-process: (exit code, stdout, the one `error:` line or '')."""
    from llmops.cli import main

    with pytest.raises(SystemExit) as info:
        main(args)
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(errors) <= 1, errors
    assert "Traceback" not in captured.err, captured.err
    return int(info.value.code or 0), captured.out, errors[0] if errors else ""


def monitor_runs() -> list:
    import mlflow

    return mlflow.search_runs(search_all_experiments=True, output_format="list",
                              filter_string="tags.`llmops.step` = 'monitor'", order_by=["start_time ASC"])
