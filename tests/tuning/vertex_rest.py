"""A fake Google Cloud on 127.0.0.1 for the real SDKs: OAuth token endpoint, Cloud Storage JSON API, Vertex AI
tuning jobs and `:generateContent`. The real `google-auth`, `google-cloud-storage` and `google-genai` clients talk
to it over HTTP, so their own request building, auth and response parsing run; subprocesses (pipeline steps, a
fresh model-loading process) reach it through the environment only:

- `GOOGLE_APPLICATION_CREDENTIALS`: a service-account file (a real RSA key made here) whose `token_uri` is ours;
- `STORAGE_EMULATOR_HOST`: Cloud Storage's documented emulator variable;
- `LLMOPS_TUNING__VERTEX__API_ENDPOINT`: the Vertex API endpoint setting.

The "tuned model" learns the training file that was uploaded: it answers a prompt with the answer of the most
similar uploaded training prompt (TF-IDF cosine), so a wrong upload, a wrong endpoint or the eval split leaking into
training shows in its answers. Requests are recorded; a Vertex call without the bearer token is refused (401).
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

TOKEN = "fake-access-token"
PROJECT = "demo-project"
LOCATION = "us-central1"
JOB_ID = "4242"
ENDPOINT = f"projects/{PROJECT}/locations/{LOCATION}/endpoints/777"
TUNED_MODEL = f"projects/{PROJECT}/locations/{LOCATION}/models/888@1"
class FakeGoogleCloud:
    def __init__(self, buckets: tuple[str, ...] = ("llmops-tuning",), polls_until_done: int = 1) -> None:
        self.buckets: dict[str, dict[str, bytes]] = {name: {} for name in buckets}
        self.requests: list[tuple[str, str]] = []
        self.jobs: dict[str, dict[str, Any]] = {}
        self.generate_calls: list[str] = []
        self.polls_until_done = polls_until_done
        self.memory: list[str] = []
        self._index: Any = None
        self._lock = threading.Lock()
        cloud = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _send(self, status: int, payload: Any) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                cloud._handle(self, "GET", b"")

            def do_POST(self) -> None:  # noqa: N802
                cloud._handle(self, "POST", self._body())

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def credentials_file(self, directory: Path) -> Path:
        """A service-account key file whose token endpoint is this server."""
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
        path = directory / "service-account.json"
        path.write_text(json.dumps({
            "type": "service_account", "project_id": PROJECT, "private_key_id": "k1", "private_key": pem,
            "client_email": f"tuner@{PROJECT}.iam.gserviceaccount.com", "client_id": "1",
            "token_uri": f"{self.url}/token"}), encoding="utf-8")
        return path

    def environment(self, directory: Path) -> dict[str, str]:
        return {"GOOGLE_APPLICATION_CREDENTIALS": str(self.credentials_file(directory)),
                "GOOGLE_CLOUD_PROJECT": PROJECT, "STORAGE_EMULATOR_HOST": self.url,
                "LLMOPS_TUNING__VERTEX__API_ENDPOINT": f"{self.url}/"}

    # -- routing -----------------------------------------------------------------------------------------------
    def _handle(self, handler: Any, method: str, body: bytes) -> None:
        parts = urlsplit(handler.path)
        path, query = unquote(parts.path), parse_qs(parts.query)
        with self._lock:
            self.requests.append((method, path))
        if path == "/token" and method == "POST":
            return handler._send(200, {"access_token": TOKEN, "expires_in": 3600, "token_type": "Bearer"})
        if path.startswith(("/storage/v1/", "/upload/storage/v1/")):
            return self._storage(handler, method, path, query, body)
        if handler.headers.get("Authorization") != f"Bearer {TOKEN}":
            return handler._send(401, {"error": {"code": 401, "message": "missing or wrong bearer token",
                                                 "status": "UNAUTHENTICATED"}})
        if method == "POST" and path.endswith("/tuningJobs"):
            return handler._send(200, self._create_job(json.loads(body)))
        if method == "GET" and "/tuningJobs/" in path:
            return handler._send(200, self._poll_job(path.split("/v1beta1/", 1)[-1].lstrip("/")))
        if method == "POST" and path.endswith(":cancel"):
            return handler._send(200, {})
        if method == "POST" and path.endswith(":generateContent"):
            return handler._send(200, self._generate(path, json.loads(body)))
        return handler._send(404, {"error": {"code": 404, "message": f"no route {method} {path}"}})

    def _storage(self, handler: Any, method: str, path: str, query: dict[str, list[str]], body: bytes) -> None:
        match = re.match(r"^/(upload/)?storage/v1/b/([^/]+)(?:/o)?/?(.*)$", path)
        if not match:
            return handler._send(404, {"error": {"code": 404, "message": path}})
        upload, bucket, _rest = match.groups()
        if bucket not in self.buckets:
            return handler._send(404, {"error": {"code": 404, "message": f"bucket {bucket} not found"}})
        if method == "GET" and not upload:
            return handler._send(200, {"kind": "storage#bucket", "name": bucket, "id": bucket})
        if method == "POST" and upload:
            name, content = self._multipart(handler.headers.get("Content-Type", ""), body, query)
            self.buckets[bucket][name] = content
            return handler._send(200, {"kind": "storage#object", "bucket": bucket, "name": name,
                                       "size": str(len(content)), "generation": "1"})
        return handler._send(404, {"error": {"code": 404, "message": f"unsupported {method} {path}"}})

    @staticmethod
    def _multipart(content_type: str, body: bytes, query: dict[str, list[str]]) -> tuple[str, bytes]:
        if "multipart/related" not in content_type:
            return query["name"][0], body
        boundary = content_type.split("boundary=", 1)[1].strip().strip('"').encode()
        sections = [s for s in body.split(b"--" + boundary) if s.strip() not in (b"", b"--")]
        metadata = json.loads(sections[0].split(b"\r\n\r\n", 1)[1])
        content = sections[1].split(b"\r\n\r\n", 1)[1].rsplit(b"\r\n", 1)[0]
        return metadata["name"], content

    # -- Vertex ------------------------------------------------------------------------------------------------
    def _read_gcs(self, uri: str) -> bytes:
        bucket, _, name = uri.removeprefix("gs://").partition("/")
        return self.buckets[bucket][name]

    def _create_job(self, request: dict[str, Any]) -> dict[str, Any]:
        from sklearn.feature_extraction.text import TfidfVectorizer

        spec = request["supervisedTuningSpec"]
        prompts, self.memory = [], []
        for line in self._read_gcs(spec["trainingDatasetUri"]).decode().splitlines():
            contents = json.loads(line)["contents"]
            prompts.append(contents[0]["parts"][0]["text"])
            self.memory.append(contents[-1]["parts"][0]["text"])
        vectorizer = TfidfVectorizer(sublinear_tf=True)
        self._index = (vectorizer, vectorizer.fit_transform(prompts))
        name = f"projects/{PROJECT}/locations/{LOCATION}/tuningJobs/{JOB_ID}"
        job = {"name": name, "state": "JOB_STATE_PENDING", "baseModel": request.get("baseModel"),
               "createTime": "2026-01-01T12:00:00Z", "request": request, "polls": 0}
        self.jobs[name] = job
        return {k: v for k, v in job.items() if k not in ("request", "polls")}

    def _poll_job(self, name: str) -> dict[str, Any]:
        job = self.jobs[name]
        job["polls"] += 1
        public = {k: v for k, v in job.items() if k not in ("request", "polls")}
        if job["polls"] < self.polls_until_done:
            return {**public, "state": "JOB_STATE_RUNNING", "startTime": "2026-01-01T12:00:05Z"}
        return {**public, "state": "JOB_STATE_SUCCEEDED", "startTime": "2026-01-01T12:00:05Z",
                "endTime": "2026-01-01T12:42:05Z", "tunedModel": {"model": TUNED_MODEL, "endpoint": ENDPOINT},
                "tuningDataStats": {"supervisedTuningDataStats": {
                    "tuningDatasetExampleCount": str(len(self.memory)), "totalBillableTokenCount": "1000"}}}

    def _generate(self, path: str, request: dict[str, Any]) -> dict[str, Any]:
        asked = "".join(part.get("text", "") for part in request["contents"][-1]["parts"])
        with self._lock:
            self.generate_calls.append(path)
        if not path.split("/v1beta1/", 1)[-1].startswith(ENDPOINT):
            answer = "I am the base model, not the tuned endpoint."
        elif not self.memory:
            answer = "I was never tuned."
        else:
            vectorizer, matrix = self._index
            answer = self.memory[int((vectorizer.transform([asked]) @ matrix.T).toarray()[0].argmax())]
        return {"candidates": [{"content": {"role": "model", "parts": [{"text": answer}]}, "finishReason": "STOP"}],
                "usageMetadata": {"promptTokenCount": len(asked.split()), "candidatesTokenCount": len(answer.split()),
                                  "totalTokenCount": len(asked.split()) + len(answer.split())}}

    def wait_idle(self, seconds: float = 0.1) -> None:
        time.sleep(seconds)
