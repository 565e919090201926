"""`POST /feedback`: a FastAPI router the model server mounts (`server_router`, in `serving.routers` by default).

What the endpoint executes is decided here, not by a well-behaved client:
- only the JSON body counts: `Content-Type` must be `application/json` (else 415), a query string is refused
  (400: nothing is read from it), the body is read in chunks and cut at `feedback.max_body_bytes` (413, checked
  before reading when Content-Length says so), malformed JSON is 400, anything but one object with the known
  fields is 422;
- a rating outside the schema, an empty correction, a correction of a blocked answer or of a failed request: 422;
  an unknown request id: 404; the store written or nothing (one part per request);
- the user is the header an authenticating proxy sets (`feedback.user_header`) when configured - a different
  `user` in the body is 403 - else the body's, stored as a pseudonym (`feedback.pseudonymise_app_users`).
Errors are `{"error": "<one line>"}`. Storage and MLflow calls run in a worker thread, off the event loop.

In the model server, request ids resolve through the server's own inference log (`serving.log_uri`: one setting),
and an id not yet in a part makes the server's log writer write what it holds first (at most once a second), so
feedback on an answer just given resolves at once instead of after `serving.part_max_seconds`.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from feedback.capture import FeedbackService, parse_input
from feedback.resolve import InferenceLog
from llmops.errors import InputError, LlmopsError, NotFoundError
from llmops.settings import Settings


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": " ".join(message.split())}, status_code=status)


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The body, or None when it exceeds `limit` bytes (read no further than that)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def feedback_router(settings: Settings, *, log_uri: str | None = None, store_uri: str | None = None,
                    service: FeedbackService | None = None) -> APIRouter:
    """The router; `log_uri` defaults to feedback.log_uri / monitoring.log_uri (the server passes its own log)."""
    service = service or FeedbackService(settings, log_uri=log_uri, store_uri=store_uri)
    cfg = settings.feedback
    router = APIRouter()

    @router.post("/feedback", status_code=201, summary="Feedback on an answer, by its X-Request-ID",
                 responses={400: {}, 403: {}, 404: {}, 413: {}, 415: {}, 422: {}})
    async def post_feedback(request: Request) -> JSONResponse:
        media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media != "application/json":
            return _error(415, f"send the feedback as a JSON body (Content-Type: application/json), got "
                               f"{media or 'no content type'}")
        if request.url.query:
            return _error(400, "feedback is read from the JSON body only; remove the query string")
        try:
            body = await _read_body(request, cfg.max_body_bytes)
        except ClientDisconnect:  # a truncated body: the client's doing, never a 500 with a traceback
            return _error(400, "the client closed the connection before the whole body arrived")
        if body is None:
            return _error(413, f"body larger than feedback.max_body_bytes ({cfg.max_body_bytes:,} bytes)")
        try:
            data = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return _error(400, f"malformed JSON: {getattr(exc, 'msg', None) or exc}")
        try:
            item = parse_input(data, "body")
        except InputError as exc:
            return _error(422, str(exc))
        user = item.user
        if cfg.user_header:
            proxied = request.headers.get(cfg.user_header)
            if not proxied:
                return _error(401, f"no {cfg.user_header} header: feedback needs the authenticated user")
            if item.user is not None and item.user != proxied:
                return _error(403, f"body user {item.user!r} is not the authenticated user")
            user = proxied
        try:
            (taken,) = await run_in_threadpool(service.take, [item], source="server", users=[user])
        except NotFoundError as exc:
            return _error(404, str(exc))
        except InputError as exc:
            return _error(422, str(exc))
        except LlmopsError as exc:  # the store or the log cannot be read or written: the server's problem
            return _error(503, str(exc))
        return JSONResponse(taken.summary(), status_code=201)

    return router


class CoalescedFlush:
    """`flush` at most once per `min_gap_s`: a caller waits for the gap, and returns at once when a flush that
    started after it arrived already covers it (unknown ids sent in a flood make one small part a second)."""

    def __init__(self, flush: Callable[[], object], min_gap_s: float = 1.0) -> None:
        self._flush = flush
        self._gap = min_gap_s
        self._lock = threading.Lock()
        self._last_start = float("-inf")
        self.calls = 0

    def __call__(self) -> None:
        arrived = time.monotonic()
        with self._lock:
            if self._last_start >= arrived:
                return
            wait = self._last_start + self._gap - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            self._last_start = time.monotonic()
            self.calls += 1
            self._flush()


def server_router(state: Any) -> APIRouter:
    """The router as the model server mounts it (`serving.routers` entry `feedback.http:server_router`): `state`
    is the server's state (its settings and its inference-log writer)."""
    settings = state.settings
    log_uri = settings.serving.log_uri
    index = InferenceLog(log_uri, on_miss=CoalescedFlush(state.writer.flush))
    return feedback_router(settings, service=FeedbackService(settings, log_uri=log_uri, inference_log=index))
