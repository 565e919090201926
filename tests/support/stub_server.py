"""A tiny OpenAI-compatible server on 127.0.0.1 (stdlib only): the provider boundary for the tests and benchmarks.

It speaks `POST /v1/chat/completions` and answers from a script: each queued `Reply` is used once, then the
`default` reply forever; a `responder` computes the text from the request instead (a judge that grades what it
is sent). Requests are recorded so a test can check what the client sent. Test support: not in the package.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


@dataclass
class Reply:
    """`text` becomes choices[0].message.content; `status`/`body` override the whole response; `delay_s` sleeps
    before answering (to provoke client timeouts)."""

    text: str = "ok"
    status: int = 200
    body: str | None = None
    delay_s: float = 0.0


@dataclass
class StubChatServer:
    default: Reply = field(default_factory=Reply)
    echo_prompt: bool = False  # answer with the last user message (shows what the chain rendered)
    responder: Callable[[str], str] | None = None  # the last user message -> the reply text
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    _queue: list[Reply] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def queue(self, *replies: Reply) -> None:
        with self._lock:
            self._queue.extend(replies)

    def _next(self) -> Reply:
        with self._lock:
            return self._queue.pop(0) if self._queue else self.default

    def start(self) -> StubChatServer:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                if self.path.rstrip("/") != "/v1/chat/completions":
                    return self._send(404, json.dumps({"error": {"message": f"no route {self.path}"}}))
                try:
                    request = json.loads(raw)
                except json.JSONDecodeError:
                    return self._send(400, json.dumps({"error": {"message": "request is not JSON"}}))
                with stub._lock:
                    stub.requests.append(request)
                    stub.headers.append({k.lower(): v for k, v in self.headers.items()})
                reply = stub._next()
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                if reply.body is not None or reply.status != 200:
                    return self._send(reply.status, reply.body if reply.body is not None else "{}")
                text = reply.text
                if stub.echo_prompt or stub.responder is not None:
                    user = [m for m in request.get("messages", []) if m.get("role") == "user"][-1]["content"]
                    text = stub.responder(user) if stub.responder is not None else user
                payload = {
                    "id": f"chatcmpl-{len(stub.requests)}", "object": "chat.completion", "created": int(time.time()),
                    "model": request.get("model", "stub"),
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                 "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 10, "completion_tokens": len(text.split()),
                              "total_tokens": 10 + len(text.split())},
                }
                self._send(200, json.dumps(payload))

            def _send(self, status: int, body: str) -> None:
                data = body.encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
                    pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
