"""What one server process holds: the champion (and challenger) slot, the log writer, the metrics, the rollout.

A slot's `current` is swapped by plain reference assignment: a request reads it once when it starts and keeps that
LoadedVersion to the end, so requests in flight finish on the version they started on and none fails on a swap.
Everything else here is counting and reporting; the decisions live in follower.py (when to swap or roll back),
rollout.py (who answers) and watch.py (is the new version healthy).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from llmops.errors import BackendError, InputError
from serving.inference_log import InferenceLogWriter, inference_record, replica_id
from serving.loader import LoadedVersion, ModelRef, answer_questions, answer_traced, parse_model_uri
from serving.metrics import ServerMetrics
from serving.rollout import CanarySplitter, session_hash
from serving.watch import VersionWatch

log = logging.getLogger(__name__)


def iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="milliseconds")


@dataclass
class Slot:
    """The champion or the challenger: the alias it follows, what it serves, what it refused and rolled back."""

    role: str  # champion | challenger
    ref: ModelRef
    current: LoadedVersion | None = None
    previous: LoadedVersion | None = None  # kept during the watch window, to swap back to
    watch: VersionWatch | None = None
    target: str | None = None  # where the alias pointed at the last poll
    refused: dict[str, dict[str, Any]] = field(default_factory=dict)  # version -> why (while the alias points there)
    refusals: list[dict[str, Any]] = field(default_factory=list)  # every refusal, newest last (for /version)
    rollbacks: list[dict[str, Any]] = field(default_factory=list)
    swaps: int = 0
    last_swap_at: float | None = None
    last_poll_at: float | None = None
    poll_error: str | None = None

    def describe(self) -> dict[str, Any]:
        current = self.current.describe() if self.current else None
        return {
            "model_uri": self.ref.uri, "serving": current, "alias_points_at": self.target,
            "last_poll": iso(self.last_poll_at), "poll_error": self.poll_error, "swaps": self.swaps,
            "last_swap": iso(self.last_swap_at),
            "watch": None if self.watch is None else {
                "version": self.watch.version, "previous": self.watch.previous,
                "seconds_left": max(0.0, round(self.watch.window_s - (time.monotonic() - self.watch.started), 1)),
                "requests": len(self.watch.latencies_ms), "errors": self.watch.errors},
            "refused": self.refusals[-10:], "rollbacks": self.rollbacks[-10:],
        }


@dataclass(frozen=True)
class Answered:
    """The outcome of answering one request's questions with one version."""

    status: int
    answers: list[dict[str, Any]] | None
    error: str | None
    loaded: LoadedVersion
    role: str
    latency_ms: float
    trace_ids: list[str | None] | None = None  # per question, when tracing is on


class ServingState:
    def __init__(self, settings: Any, *, writer: InferenceLogWriter | None = None) -> None:
        cfg = settings.serving
        if not cfg.model_uri:
            raise ValueError("serving.model_uri is required")
        self.settings = settings
        self.cfg = cfg
        self.replica = replica_id()
        self.metrics = ServerMetrics()
        self.champion = Slot("champion", parse_model_uri(cfg.model_uri, "--model"))
        self.challenger = Slot("challenger", parse_model_uri(cfg.challenger_uri, "--challenger")) \
            if cfg.challenger_uri else None
        self.splitter = CanarySplitter(cfg.canary_percent if self.challenger and not cfg.shadow else 0.0)
        self.writer = writer or InferenceLogWriter(
            cfg.log_uri, queue_size=cfg.log_queue_size, put_timeout_s=cfg.log_put_timeout_s,
            part_max_records=cfg.part_max_records, part_max_seconds=cfg.part_max_seconds,
            on_written=lambda n: self.metrics.log_written.inc(n), on_dropped=lambda n: self.metrics.log_dropped.inc(n))
        self._shadow_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="shadow") if cfg.shadow else None
        self._shadow_room = threading.BoundedSemaphore(cfg.shadow_queue_size)
        self.started_at = time.time()
        self.follower: Any = None

    # -- routing -------------------------------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self.champion.current is not None

    def route(self, session: str | None) -> tuple[Slot, LoadedVersion | None]:
        """Who answers: the challenger for the canary share (sticky per session), else the champion."""
        challenger = self.challenger
        if challenger is not None and challenger.current is not None and self.splitter.choose(session):
            return challenger, challenger.current
        return self.champion, self.champion.current

    def session_of(self, headers: Any) -> str | None:
        for name in self.cfg.session_headers:
            value = headers.get(name)
            if value:
                return value[:256]
        return None

    # -- answering (runs in a worker thread) ---------------------------------------------------------------------
    def answer(self, loaded: LoadedVersion, role: str, questions: list[str], *, request_id: str, started: float,
               t0: float, endpoint: str, session: str | None) -> Answered:
        """Answer, count, watch, and queue one log record per question (blocking on a full queue: backpressure)."""
        trace_ids = None
        try:
            if self.cfg.trace_sample_rate > 0:
                answers, trace_ids = answer_traced(loaded.chain, questions)
            else:
                answers = answer_questions(loaded.chain, questions)
            status, error = 200, None
        except InputError as exc:
            answers, status, error = None, 400, str(exc)
        except BackendError as exc:
            answers, status, error = None, 503, f"the model's backend failed: {exc}"
        except Exception as exc:  # noqa: BLE001 - an unexpected failure is a 500 with one line, the server stays up
            log.exception("models:/%s/%s failed on a request", loaded.name, loaded.version)
            answers, status, error = None, 500, f"the model failed: {type(exc).__name__}: {exc}"
        latency_ms = (time.perf_counter() - t0) * 1000
        result = Answered(status, answers, error and " ".join(error.split()), loaded, role, latency_ms, trace_ids)
        self.account(result, endpoint)
        self._log(result, questions, request_id=request_id, started=started, endpoint=endpoint, session=session)
        return result

    def account(self, result: Answered, endpoint: str) -> None:
        m, version = self.metrics, result.loaded.version
        m.requests.labels(endpoint, str(result.status), version, result.role).inc()
        m.latency.labels(endpoint, version, result.role).observe(result.latency_ms / 1000)
        for answer in result.answers or []:
            if answer.get("abstained"):
                m.abstentions.labels(version, result.role).inc()
            if (answer.get("safety") or {}).get("blocked"):
                m.safety_blocks.labels(version, result.role).inc()
        slot = self.champion if result.role == "champion" else self.challenger
        watch = slot.watch if slot is not None else None
        if watch is not None and watch.version == version and result.status != 400:
            watch.observe(result.latency_ms, result.status >= 500)

    def _log(self, result: Answered, questions: list[str], *, request_id: str, started: float, endpoint: str,
             session: str | None, shadow_of: str | None = None) -> None:
        hashed = session_hash(session) if session else None
        many = len(questions) > 1
        for index, question in enumerate(questions):
            answer = result.answers[index] if result.answers else None
            trace_id = result.trace_ids[index] if result.trace_ids else None
            self.writer.submit(inference_record(
                request_id=f"{request_id}.{index}" if many else request_id, started=started,
                latency_ms=result.latency_ms, status=result.status, endpoint=endpoint, model=result.loaded,
                role=result.role, question=question, answer=answer, error=result.error, shadow_of=shadow_of,
                session_hash=hashed, replica=self.replica, trace_id=trace_id))

    def refused_record(self, *, request_id: str, started: float, t0: float, status: int, error: str, endpoint: str,
                       loaded: LoadedVersion | None, session: str | None) -> dict[str, Any]:
        """The record of a request refused before any model saw it (bad input, no model ready): no question kept."""
        latency_ms = (time.perf_counter() - t0) * 1000
        version = loaded.version if loaded else ""
        self.metrics.requests.labels(endpoint, str(status), version, "champion").inc()
        self.metrics.latency.labels(endpoint, version, "champion").observe(latency_ms / 1000)
        return inference_record(request_id=request_id, started=started, latency_ms=latency_ms, status=status,
                                endpoint=endpoint, model=loaded or _Unloaded(self.champion.ref), role="champion",
                                question="", error=error, session_hash=session_hash(session) if session else None,
                                replica=self.replica)

    # -- shadow --------------------------------------------------------------------------------------------------
    def shadow(self, questions: list[str], *, request_id: str, endpoint: str, session: str | None) -> None:
        """Queue a copy for the challenger; skipped (and counted) when the shadow queue is full."""
        challenger = self.challenger
        if self._shadow_pool is None or challenger is None or challenger.current is None:
            return
        if not self._shadow_room.acquire(blocking=False):
            self.metrics.shadow_skipped.inc()
            return
        loaded = challenger.current

        def run() -> None:
            try:
                started, t0 = time.time(), time.perf_counter()
                result = self.answer_quietly(loaded, questions, t0)
                self.account(result, endpoint)
                self._log(result, questions, request_id=f"{request_id}-shadow", started=started, endpoint=endpoint,
                          session=session, shadow_of=request_id)
            finally:
                self._shadow_room.release()

        self._shadow_pool.submit(run)

    def answer_quietly(self, loaded: LoadedVersion, questions: list[str], t0: float) -> Answered:
        try:
            answers, status, error = answer_questions(loaded.chain, questions), 200, None
        except InputError as exc:
            answers, status, error = None, 400, str(exc)
        except BackendError as exc:
            answers, status, error = None, 503, str(exc)
        except Exception as exc:  # noqa: BLE001 - a shadow failure never reaches the client
            answers, status, error = None, 500, f"{type(exc).__name__}: {exc}"
        return Answered(status, answers, error, loaded, "shadow", (time.perf_counter() - t0) * 1000)

    # -- reporting -----------------------------------------------------------------------------------------------
    def version_info(self) -> dict[str, Any]:
        cfg = self.cfg
        mode = "none" if self.challenger is None else ("shadow" if cfg.shadow else "canary")
        champion = self.champion.describe()
        return {
            "ready": self.ready, "replica": self.replica, "started": iso(self.started_at),
            **(champion["serving"] or {"model_name": self.champion.ref.name, "model_version": None,
                                       "alias": self.champion.ref.alias}),
            "champion": champion,
            "challenger": self.challenger.describe() if self.challenger else None,
            "rollout": {"mode": mode, "canary_percent": cfg.canary_percent if mode == "canary" else None},
            "log": {"uri": cfg.log_uri, "written": self.writer.written, "dropped": self.writer.dropped,
                    "queued": self.writer.depth, "parts": self.writer.parts, "last_error": self.writer.last_error},
            "tracing": {"sample_rate": cfg.trace_sample_rate},
        }

    def close(self) -> None:
        if self.follower is not None:
            self.follower.stop()
        if self._shadow_pool is not None:
            self._shadow_pool.shutdown(wait=True)
        self.writer.close()


@dataclass(frozen=True)
class _Unloaded:
    """Stands for the champion in the record of a request refused before any version was loaded."""

    ref: ModelRef
    bundle: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.ref.name

    @property
    def version(self) -> str:
        return ""

    @property
    def alias(self) -> str | None:
        return self.ref.alias


def new_request_id() -> str:
    return uuid.uuid4().hex
