"""Helpers of the feedback tests: inference records written through the core writer (the one the server uses), a real
uvicorn server on 127.0.0.1 in a thread, the CLI in-process."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from llmops.records import INFERENCE_SCHEMA_VERSION, write_inference_records

T0 = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)


def served(question: str, answer: str = "Use the standard library.", *, version: str = "1",
           name: str = "so-qa-assistant", when: datetime | None = None, status: int = 200, abstained: bool = False,
           blocked: bool = False, similarity: float = 0.7, digest: str = "d0d0d0d0d0d0d0d0", role: str = "champion",
           trace_id: str | None = None, request_id: str | None = None) -> dict[str, Any]:
    """One inference-log record as the server writes it (INFERENCE_SCHEMA)."""
    ok = status < 400
    return {
        "schema_version": INFERENCE_SCHEMA_VERSION, "request_id": request_id or uuid.uuid4().hex,
        "time": when or T0, "latency_ms": 12.0, "status": status, "error": None if ok else "failed",
        "endpoint": "invocations", "model_name": name, "model_version": version, "model_alias": "staging",
        "role": role, "shadow_of": None, "prompt_name": "so-qa", "prompt_version": 1,
        "instruction_hash": "ih0123456789abcd", "dataset_digest": digest, "question": question,
        "answer": answer if ok else None,
        "citations": [{"source_id": "1", "link": "https://stackoverflow.com/q/1", "similarity": similarity}]
        if ok and not abstained else [],
        "abstained": abstained if ok else None, "safety_blocked": blocked if ok else None, "provider": "retrieval",
        "model_id": "retrieval", "session_hash": None, "redactions": 0, "replica": "test:1", "trace_id": trace_id,
    }


def write_log(location: Path | str, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    write_inference_records(str(location), records)
    return records


def spaced(records: list[dict[str, Any]], start: datetime = T0, every: timedelta = timedelta(seconds=5)) -> list:
    return [{**r, "time": start + i * every} for i, r in enumerate(records)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def uvicorn_server(app: Any) -> Iterator[str]:
    """`app` served by a real uvicorn on 127.0.0.1 (a thread of this process); yields its base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


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


def cli_streams(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """`llmops ARGS` in-process: (exit code, stdout, stderr)."""
    from llmops.cli import main

    with pytest.raises(SystemExit) as info:
        main(args)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err, captured.err
    return int(info.value.code or 0), captured.out, captured.err
