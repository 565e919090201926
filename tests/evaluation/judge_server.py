"""A local OpenAI-compatible judge on 127.0.0.1 (stdlib only): answers verdicts from the request's content.

The verdict is "yes" when the graded answer shares its first code line with the reference (or, for judges
without a reference, when the answer is non-empty), so it can disagree with the scorers. `mode="garbage"`
returns text that is not a verdict. Requests are counted so tests can see cache hits.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def _between(text: str, start: str, end: str) -> str | None:
    if start not in text:
        return None
    rest = text.split(start, 1)[1]
    return rest.rsplit(end, 1)[0] if end in rest else rest


def verdict_for(user: str) -> str:
    reference = _between(user, "Reference answer:\n", "\n\nAnswer to grade:\n")
    if reference is not None:
        answer = _between(user, "Answer to grade:\n", "\n\n") or ""
        ok = bool(reference.strip()) and reference.strip().splitlines()[0][:25] in answer
    else:
        ok = bool((_between(user, "Answer:\n", "\n\n") or "").strip())
    return json.dumps({"verdict": "yes" if ok else "no", "rationale": "stub judge"})


class JudgeServer:
    def __init__(self, mode: str = "verdict", delay_s: float = 0.0) -> None:
        self.mode = mode
        self.delay_s = delay_s  # simulated model latency (benchmark)
        self.requests = 0
        self._lock = threading.Lock()

    def start(self) -> JudgeServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                with server._lock:
                    server.requests += 1
                if server.delay_s:
                    time.sleep(server.delay_s)
                user = [m for m in body["messages"] if m["role"] == "user"][-1]["content"]
                text = "I think it is fine." if server.mode == "garbage" else verdict_for(user)
                data = json.dumps({"id": "x", "object": "chat.completion", "model": body.get("model"),
                                   "choices": [{"index": 0, "finish_reason": "stop",
                                                "message": {"role": "assistant", "content": text}}],
                                   "usage": {"prompt_tokens": 50, "completion_tokens": 12, "total_tokens": 62}})
                raw = data.encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
