"""The inference-log writer: one record per answered (or refused) question, off the request path.

Requests put raw records on a bounded queue; one background thread redacts PII (`llmops.pii.redact`) from
question and answer as it takes them (raw text lives only in that queue, never on disk), turns them into `llmops.records.INFERENCE_SCHEMA` rows and appends them to the log as Parquet
parts (`llmops.parts`: a local folder or any fsspec URL), one part per `part_max_records` records or
`part_max_seconds`, whichever comes first. Nothing is dropped silently: a full queue makes the request wait up to
`log_put_timeout_s` (backpressure); only past that is a record dropped, and counted (`dropped`, exported in
/metrics). A part that fails to write is retried with backoff; its records stay queued meanwhile. `flush()` writes
what was queued before it now (feedback on an answer given a moment ago resolves at once); `close()` drains the
queue and writes the last part.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from llmops.records import INFERENCE_PREFIX, INFERENCE_SCHEMA_VERSION, write_inference_records

log = logging.getLogger(__name__)
_STOP = object()


class _Flush:
    """A marker in the queue: everything queued before it is written when the writer reaches it."""

    def __init__(self) -> None:
        self.done = threading.Event()


def replica_id() -> str:
    """host:pid of this server process, written into every record."""
    return f"{socket.gethostname()}:{os.getpid()}"


def inference_record(*, request_id: str, started: float, latency_ms: float, status: int, endpoint: str,
                     model: Any, role: str, question: str, answer: Mapping[str, Any] | None = None,
                     error: str | None = None, shadow_of: str | None = None, session_hash: str | None = None,
                     replica: str | None = None, trace_id: str | None = None) -> dict[str, Any]:
    """A raw record (question and answer NOT yet redacted: the writer thread does that). `model` is the
    LoadedVersion that answered (or would have)."""
    bundle = getattr(model, "bundle", {}) or {}
    answer = answer or {}
    prompt_version = answer.get("prompt_version", bundle.get("prompt_version"))
    return {
        "schema_version": INFERENCE_SCHEMA_VERSION,
        "request_id": request_id,
        "time": datetime.fromtimestamp(started, tz=UTC),
        "latency_ms": float(latency_ms),
        "status": int(status),
        "error": error,
        "endpoint": endpoint,
        "model_name": getattr(model, "name", None) or "",
        "model_version": getattr(model, "version", None) or "",
        "model_alias": getattr(model, "alias", None),
        "role": role,
        "shadow_of": shadow_of,
        "prompt_name": answer.get("prompt_name", bundle.get("prompt_name")),
        "prompt_version": int(prompt_version) if prompt_version not in (None, "") else None,
        "instruction_hash": answer.get("instruction_hash", bundle.get("instruction_hash")),
        "dataset_digest": bundle.get("dataset_digest"),
        "question": question or "",
        "answer": answer.get("answer"),
        "citations": [{"source_id": c.get("source_id"), "link": c.get("link"), "similarity": c.get("similarity")}
                      for c in answer.get("citations") or []] if answer else None,
        "abstained": answer.get("abstained") if answer else None,
        "safety_blocked": (answer.get("safety") or {}).get("blocked") if answer else None,
        "provider": answer.get("provider", bundle.get("provider")),
        "model_id": answer.get("model_id", bundle.get("model_id")),
        "session_hash": session_hash,
        "redactions": None,
        "replica": replica or replica_id(),
        "trace_id": trace_id,
    }


def redact_record(record: dict[str, Any]) -> dict[str, Any]:
    """Question and answer through the PII redactor; `redactions` counts what was replaced."""
    from llmops.pii import redact

    question = redact(record.get("question") or "")
    answer = redact(record["answer"]) if record.get("answer") else None
    total = question.total + (answer.total if answer else 0)
    return {**record, "question": question.text, "answer": answer.text if answer else record.get("answer"),
            "redactions": total}


class InferenceLogWriter:
    """Bounded queue -> background thread -> rotated Parquet parts. Thread-safe `submit`; `close` flushes."""

    def __init__(self, location: str, *, queue_size: int = 20_000, put_timeout_s: float = 10.0,
                 part_max_records: int = 10_000, part_max_seconds: float = 30.0, prefix: str = INFERENCE_PREFIX,
                 on_written: Callable[[int], None] | None = None, on_dropped: Callable[[int], None] | None = None,
                 write: Callable[[str, list[dict[str, Any]], str], str] | None = None) -> None:
        self.location = location
        self.put_timeout_s = put_timeout_s
        self.part_max_records = part_max_records
        self.part_max_seconds = part_max_seconds
        self.prefix = prefix
        self.written = 0
        self.dropped = 0
        self.parts = 0
        self.failures = 0
        self.last_error: str | None = None
        self._on_written = on_written or (lambda n: None)
        self._on_dropped = on_dropped or (lambda n: None)
        self._write = write or (lambda location, rows, prefix: write_inference_records(location, rows, prefix))
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="inference-log", daemon=True)
        self._closed = False
        self._thread.start()

    # -- request side ------------------------------------------------------------------------------------------
    def submit(self, record: dict[str, Any], block: bool = True) -> bool:
        """Queue a record; when the queue is full wait up to put_timeout_s (never on the event loop: pass
        block=False there and retry in a thread). False = dropped (counted)."""
        if self._closed:
            self._count_dropped(1)
            return False
        try:
            self._queue.put_nowait(record)
            return True
        except queue.Full:
            if not block:
                return False
        try:
            self._queue.put(record, timeout=self.put_timeout_s)
            return True
        except queue.Full:
            self._count_dropped(1)
            log.error("inference log queue full for %.1f s: a record was dropped (%d so far)", self.put_timeout_s,
                      self.dropped)
            return False

    def _count_dropped(self, n: int) -> None:
        with self._lock:
            self.dropped += n
        self._on_dropped(n)

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Write every record queued before this call now, without waiting for the part to fill or age; True once
        they are in a part (False: closed, or not done within `timeout_s`)."""
        if self._closed:
            return False
        marker = _Flush()
        try:
            self._queue.put(marker, timeout=timeout_s)
        except queue.Full:
            return False
        return marker.done.wait(timeout_s)

    # -- writer side -------------------------------------------------------------------------------------------
    def _run(self) -> None:
        buffer: list[dict[str, Any]] = []
        first_at: float | None = None
        stopping = False
        while True:
            timeout = None if first_at is None else max(0.0, first_at + self.part_max_seconds - time.monotonic())
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                item = None
            flushes: list[_Flush] = []
            while item is not None:  # this item, then what is already waiting, without blocking
                if item is _STOP:
                    stopping = True
                    break
                if isinstance(item, _Flush):
                    flushes.append(item)
                    break  # write now: the records queued before the marker are in the buffer
                if not buffer:
                    first_at = time.monotonic()
                buffer.append(redact_record(item))  # as records arrive: no burst of CPU at each flush
                if len(buffer) >= self.part_max_records:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    item = None
            due = first_at is not None and time.monotonic() - first_at >= self.part_max_seconds
            if buffer and (len(buffer) >= self.part_max_records or due or stopping or flushes):
                self._flush(buffer, final=stopping)
                buffer, first_at = [], None
            for marker in flushes:
                marker.done.set()
            if stopping:
                return

    def _flush(self, redacted: list[dict[str, Any]], final: bool) -> None:
        rows = redacted
        delay = 0.5
        while True:
            try:
                self._write(self.location, redacted, self.prefix)
            except Exception as exc:  # noqa: BLE001 - storage trouble: keep the records, retry, report
                self.failures += 1
                self.last_error = " ".join(str(exc).split())[:300]
                log.error("inference log: writing a part of %d records to %s failed (%s); retrying in %.1f s",
                          len(rows), self.location, self.last_error, delay)
                if final and self.failures > 5:
                    self._count_dropped(len(rows))
                    return
                time.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            break
        with self._lock:
            self.written += len(rows)
            self.parts += 1
        self._on_written(len(rows))

    def close(self, timeout_s: float = 60.0) -> None:
        """Drain, write the last part, stop the thread."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join(timeout_s)
