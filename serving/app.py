"""The HTTP server: a FastAPI app over one `ServingState` (serving/state.py).

Routes: POST /invocations (MLflow's request formats, the pyfunc's response schema), POST /v1/chat/completions
(OpenAI-compatible), GET /health (alive), /ping (MLflow's name for it), /ready (a champion loaded and
smoke-checked), /version, /metrics (Prometheus), POST /admin/refresh (poll the registry now: point
`registry.notify_url` here). Extra routers (e.g. feedback's `POST /feedback`) plug in through `create_app(...,
routers=[...])` or the `serving.routers` setting; they reach the state as `request.app.state.server`.

Every request gets an id (the `X-Request-ID` response header, the log record's `request_id`). Bad input of any kind
is a 4xx with a one-line message, in MLflow's error shape on /invocations and OpenAI's on /v1; the model runs in
a bounded thread pool so the event loop only parses and routes.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response, StreamingResponse

from serving.requests import RequestError, parse_chat, parse_invocations
from serving.state import ServingState, new_request_id

log = logging.getLogger("serving.app")

LOCAL_PROVIDERS = ("retrieval", "hf")  # answer on this process's CPU
MLFLOW_ERROR_CODES = {400: "BAD_REQUEST", 404: "RESOURCE_DOES_NOT_EXIST", 405: "BAD_REQUEST",
                      413: "REQUEST_LIMIT_EXCEEDED", 415: "BAD_REQUEST", 500: "INTERNAL_ERROR",
                      503: "TEMPORARILY_UNAVAILABLE"}


def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(payload, ensure_ascii=False, default=str).encode("utf-8"), status_code=status,
                    media_type="application/json", headers=headers)


def mlflow_error(status: int, message: str, request_id: str | None = None):
    headers = {"X-Request-ID": request_id} if request_id else None
    return _json({"error_code": MLFLOW_ERROR_CODES.get(status, "BAD_REQUEST"), "message": message}, status, headers)


def openai_error(status: int, message: str, request_id: str | None = None, code: str | None = None,
                 param: str | None = None):
    kind = "invalid_request_error" if status < 500 else "server_error"
    headers = {"X-Request-ID": request_id} if request_id else None
    return _json({"error": {"message": message, "type": kind, "param": param, "code": code}}, status, headers)


async def read_body(request: Any, limit: int) -> bytes:
    """The body, refused with 413 past `limit` bytes whether or not Content-Length is sent (or honest)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError as exc:
            raise RequestError(400, f"Content-Length {declared!r} is not a number") from exc
        if size > limit:
            raise RequestError(413, f"request body is {size} bytes; the limit is {limit}")
    chunks, total = [], 0
    try:
        async for chunk in request.stream():
            total += len(chunk)
            if total > limit:
                raise RequestError(413, f"request body exceeds the limit of {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect as exc:  # a truncated body: the client's doing, not a server error (nor a traceback)
        raise RequestError(400, "the client closed the connection before the whole body arrived") from exc
    return b"".join(chunks)


def create_app(settings: Any, *, routers: Iterable[Any] = (), state: ServingState | None = None,
               follow: bool = True, releaser: Callable[[], Any] | None = None):
    """The app for `settings.serving`. `routers`: extra APIRouters, or functions of the ServingState returning
    one. `follow=False` leaves loading to the caller (tests drive a follower by hand)."""
    import anyio

    from serving.follower import AliasFollower
    from serving.loader import smoke_questions

    cfg = settings.serving
    server_state = state or ServingState(settings)
    questions_for_smoke = smoke_questions(settings)
    limiter = anyio.CapacityLimiter(cfg.threads)  # remote providers: threads wait on the network
    local_limiter = anyio.CapacityLimiter(cfg.local_threads)  # local providers: CPU under the GIL

    def limiter_for(loaded) -> Any:
        return local_limiter if getattr(loaded.chain, "provider", None) in LOCAL_PROVIDERS else limiter

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if follow:  # the first load happens before this worker accepts a request (uvicorn awaits the startup)
            follower = AliasFollower(server_state, questions_for_smoke, releaser)
            await anyio.to_thread.run_sync(follower.start)
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(server_state.close)

    app = FastAPI(title="llmops serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.server = server_state

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        message = exc.detail if isinstance(exc.detail, str) else "request refused"
        if exc.status_code == 404:
            message = f"no route {request.method} {request.url.path}"
        elif exc.status_code == 405:
            message = f"method {request.method} is not allowed on {request.url.path}"
        if request.url.path.startswith("/v1/"):
            return openai_error(exc.status_code, message)
        return mlflow_error(exc.status_code, message)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):  # pragma: no cover - a bug; still one line, no trace
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return mlflow_error(500, f"internal error: {type(exc).__name__}")

    # -- probes ---------------------------------------------------------------------------------------------------
    @app.get("/health")
    @app.get("/ping")
    async def health():
        return _json({"status": "alive"})

    @app.get("/ready")
    async def ready():
        champion = server_state.champion
        if server_state.ready:
            return _json({"status": "ready", "model_version": champion.current.version})
        why = champion.refusals[-1]["reason"] if champion.refusals else (champion.poll_error or "loading")
        return _json({"status": "not ready", "reason": why}, 503)

    @app.get("/version")
    async def version():
        return _json(server_state.version_info())

    @app.get("/metrics")
    async def metrics():
        body, content_type = server_state.metrics.exposition()
        return Response(body, media_type=content_type)

    @app.get("/v1/models")
    async def models():
        """OpenAI's model list: what `model` may name here."""
        slots = [server_state.champion] + ([server_state.challenger] if server_state.challenger else [])
        return _json({"object": "list", "data": [
            {"id": slot.ref.label, "object": "model", "created": int(server_state.started_at), "owned_by": "llmops",
             "llmops": {"role": slot.role, "model_version": slot.current.version if slot.current else None}}
            for slot in slots]})

    @app.post("/admin/refresh", status_code=202)
    async def refresh():
        if server_state.follower is not None:
            server_state.follower.wake()
        return _json({"status": "polling"}, 202)

    # -- answering ------------------------------------------------------------------------------------------------
    async def refuse(status: int, message: str, *, request_id: str, started: float, t0: float, endpoint: str,
                     session: str | None) -> None:
        record = server_state.refused_record(request_id=request_id, started=started, t0=t0, status=status,
                                             error=message, endpoint=endpoint, loaded=server_state.champion.current,
                                             session=session)
        if not server_state.writer.submit(record, block=False):
            await anyio.to_thread.run_sync(server_state.writer.submit, record, limiter=limiter)

    async def answer(slot_loaded, role, questions, *, request_id, started, t0, endpoint, session):
        loaded = slot_loaded
        result = await anyio.to_thread.run_sync(
            lambda: server_state.answer(loaded, role, questions, request_id=request_id, started=started, t0=t0,
                                        endpoint=endpoint, session=session), limiter=limiter_for(loaded))
        if result.status == 200 and role == "champion" and cfg.shadow:
            server_state.shadow(questions, request_id=request_id, endpoint=endpoint, session=session)
        return result

    @app.post("/invocations")
    async def invocations(request: Request):
        started, t0, request_id = time.time(), time.perf_counter(), new_request_id()
        session = server_state.session_of(request.headers)
        server_state.metrics.in_flight.inc()
        try:
            try:
                body = await read_body(request, cfg.max_body_bytes)
                questions = parse_invocations(request.headers.get("content-type"), body,
                                              max_questions=cfg.max_questions, max_chars=cfg.max_question_chars)
            except RequestError as exc:
                await refuse(exc.status, exc.message, request_id=request_id, started=started, t0=t0,
                             endpoint="invocations", session=session)
                return mlflow_error(exc.status, exc.message, request_id)
            slot, loaded = server_state.route(session)
            if loaded is None:
                message = "no model version is ready yet (see /ready)"
                await refuse(503, message, request_id=request_id, started=started, t0=t0, endpoint="invocations",
                             session=session)
                return mlflow_error(503, message, request_id)
            result = await answer(loaded, slot.role, questions, request_id=request_id, started=started, t0=t0,
                                  endpoint="invocations", session=session)
            headers = {"X-Request-ID": request_id, "X-Model-Version": loaded.version, "X-Model-Role": slot.role}
            if result.status != 200:
                return _json({"error_code": MLFLOW_ERROR_CODES.get(result.status, "INTERNAL_ERROR"),
                              "message": result.error}, result.status, headers)
            return _json({"predictions": result.answers}, 200, headers)
        finally:
            server_state.metrics.in_flight.dec()

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        started, t0, request_id = time.time(), time.perf_counter(), new_request_id()
        session = server_state.session_of(request.headers)
        server_state.metrics.in_flight.inc()
        try:
            try:
                body = await read_body(request, cfg.max_body_bytes)
                chat = parse_chat(request.headers.get("content-type"), body, max_chars=cfg.max_question_chars)
                slot, loaded = _chat_target(server_state, chat.model, session)
            except RequestError as exc:
                await refuse(exc.status, exc.message, request_id=request_id, started=started, t0=t0,
                             endpoint="chat", session=session)
                return openai_error(exc.status, exc.message, request_id, exc.code, exc.param)
            if loaded is None:
                message = "no model version is ready yet (see /ready)"
                await refuse(503, message, request_id=request_id, started=started, t0=t0, endpoint="chat",
                             session=session)
                return openai_error(503, message, request_id)
            result = await answer(loaded, slot.role, [chat.question], request_id=request_id, started=started, t0=t0,
                                  endpoint="chat", session=session)
            headers = {"X-Request-ID": request_id, "X-Model-Version": loaded.version, "X-Model-Role": slot.role}
            if result.status != 200:
                return openai_error(result.status, result.error or "failed", request_id)
            completion = chat_completion(result.answers[0], request_id, started, loaded, slot.role)
            if chat.stream:
                return StreamingResponse(_sse(completion), media_type="text/event-stream", headers=headers)
            return _json(completion, 200, headers)
        finally:
            server_state.metrics.in_flight.dec()

    for router in [*routers, *_configured_routers(cfg.routers)]:
        app.include_router(router(server_state) if callable(router) and not _is_router(router) else router)
    return app


def _is_router(obj: Any) -> bool:
    from fastapi import APIRouter

    return isinstance(obj, APIRouter)


def _configured_routers(specs: list[str]) -> list[Any]:
    """`serving.routers`: `module:attribute` strings (an APIRouter, or a function of the state returning one)."""
    import importlib

    from llmops.errors import ConfigError

    found = []
    for spec in specs:
        module_name, _, attribute = spec.partition(":")
        if not module_name or not attribute:
            raise ConfigError(f"serving.routers entry {spec!r} must look like module:attribute")
        try:
            found.append(getattr(importlib.import_module(module_name), attribute))
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"serving.routers entry {spec!r} cannot be loaded: {exc}") from exc
    return found


def _chat_target(state: ServingState, model: str | None, session: str | None):
    """`model` omitted or the champion's NAME@alias (or NAME): routed as usual; the challenger's: the challenger."""
    champion, challenger = state.champion, state.challenger
    if model in (None, "", champion.ref.label, champion.ref.name):
        return state.route(session)
    if challenger is not None and model == challenger.ref.label:
        return challenger, challenger.current
    served = [champion.ref.label] + ([challenger.ref.label] if challenger else [])
    raise RequestError(404, f"model {model!r} is not served here; this server serves {', '.join(served)}",
                       code="model_not_found", param="model")


def chat_completion(answer: dict[str, Any], request_id: str, started: float, loaded: Any, role: str) -> dict:
    """An OpenAI chat.completion; everything beyond the text (citations, safety, versions) under `llmops`."""
    blocked = bool((answer.get("safety") or {}).get("blocked"))
    extra = {k: v for k, v in answer.items() if k != "answer"}
    return {
        "id": f"chatcmpl-{request_id}", "object": "chat.completion", "created": int(started),
        "model": f"{loaded.name}/{loaded.version}",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer.get("answer", "")},
                     "finish_reason": "content_filter" if blocked else "stop", "logprobs": None}],
        "llmops": {**extra, "request_id": request_id, "role": role},
    }


async def _sse(completion: dict[str, Any]):
    """The whole answer as one delta chunk, then the finish chunk, then [DONE] (the answer is not generated token
    by token here; clients that ask to stream still work)."""
    base = {"id": completion["id"], "object": "chat.completion.chunk", "created": completion["created"],
            "model": completion["model"]}
    choice = completion["choices"][0]
    first = {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": choice["message"]["content"]},
                                  "finish_reason": None}]}
    last = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": choice["finish_reason"]}],
            "llmops": completion["llmops"]}
    for chunk in (first, last):
        yield f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"
    yield "data: [DONE]\n\n"
