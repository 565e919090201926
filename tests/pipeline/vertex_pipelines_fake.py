"""A fake Vertex AI Pipelines (and the bits of Google Cloud its SDK touches) on 127.0.0.1, for the real
`google.cloud.aiplatform` client over its REST transport: OAuth token refresh, the Cloud Storage bucket lookup the
SDK does before a job, `pipelineJobs` create/get and `schedules` create.

Requests are parsed with the SDK's own types (`aiplatform_v1.PipelineJob`, `Schedule`, strict: an unknown field is
a 400), recorded as `CreatePipelineJobRequest` / `CreateScheduleRequest`, and answered with `PipelineJob` /
`Schedule` JSON; a call without the bearer token is refused (401), a service account that is not one is refused
(400), a pipeline spec without our stamp is refused (400). A job moves PENDING -> RUNNING -> the final state one poll
at a time, with task details.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

TOKEN = "fake-vertex-token"
PROJECT = "demo-project"
PROJECT_NUMBER = "123456789012"
REGION = "europe-west4"
BUCKET = "llmops-pipelines"


class FakeVertexPipelines:
    def __init__(self, final_state: str = "PIPELINE_STATE_SUCCEEDED") -> None:
        from google.cloud import aiplatform_v1

        self.types = aiplatform_v1
        self.final_state = final_state
        self.requests: list[tuple[str, str]] = []
        self.created: list[Any] = []  # CreatePipelineJobRequest
        self.schedules: list[Any] = []  # CreateScheduleRequest
        self.jobs: dict[str, dict[str, Any]] = {}
        self.public_pem: bytes = b""
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self, method: str) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, payload = fake.handle(method, self.path, dict(self.headers), body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                self._handle("GET")

            def do_POST(self) -> None:  # noqa: N802
                self._handle("POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def credentials_file(self, directory: Path) -> Path:
        """Application Default Credentials: a service-account key (a real RSA key made here) whose token endpoint
        is this fake (google-auth signs a JWT and trades it there for the bearer token)."""
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
        self.public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                                        serialization.PublicFormat.SubjectPublicKeyInfo)
        path = directory / "service-account.json"
        path.write_text(json.dumps({
            "type": "service_account", "project_id": PROJECT, "private_key_id": "k1", "private_key": pem,
            "client_email": f"submitter@{PROJECT}.iam.gserviceaccount.com", "client_id": "1",
            "token_uri": f"{self.url}/token"}), encoding="utf-8")
        return path

    def reset(self, final_state: str = "PIPELINE_STATE_SUCCEEDED") -> None:
        with self._lock:
            self.final_state = final_state
            self.requests.clear()
            self.created.clear()
            self.schedules.clear()
            self.jobs.clear()

    def vertex_posts(self) -> list[str]:
        return [path for method, path in self.requests if method == "POST" and "/v1/projects/" in path]

    # --- routes ----------------------------------------------------------------------------------------------------

    def handle(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        parts = urlsplit(raw_path)
        path, query = parts.path, parse_qs(parts.query)
        with self._lock:
            self.requests.append((method, path))
        if path == "/token" and method == "POST":
            return 200, {"access_token": TOKEN, "expires_in": 3600, "token_type": "Bearer"}
        if path.startswith("/storage/v1/b/"):
            bucket = path.split("/")[4]
            if bucket != BUCKET:
                return 404, {"error": {"code": 404, "message": f"bucket {bucket} not found"}}
            return 200, {"kind": "storage#bucket", "name": BUCKET, "projectNumber": PROJECT_NUMBER,
                         "location": REGION.upper()}
        if not self._authorized(headers):
            return 401, {"error": {"code": 401, "message": "missing or wrong bearer token", "status": "UNAUTHENTICATED"}}
        parent = f"/v1/projects/{PROJECT}/locations/{REGION}"
        try:
            if method == "POST" and path == f"{parent}/pipelineJobs":
                return self._create_job(parent, query, body)
            if method == "GET" and path.startswith(f"{parent}/pipelineJobs/"):
                return self._get_job(path.removeprefix("/v1/"))
            if method == "POST" and path == f"{parent}/schedules":
                return self._create_schedule(parent, body)
        except ValueError as exc:  # the SDK's types refused the request
            return 400, {"error": {"code": 400, "message": str(exc).splitlines()[0], "status": "INVALID_ARGUMENT"}}
        return 404, {"error": {"code": 404, "message": f"no route {method} {path}", "status": "NOT_FOUND"}}

    def _authorized(self, headers: dict[str, str]) -> bool:
        """The token from /token, or a JWT the service account signed itself (GAPIC clients' self-signed JWT
        access), checked against its public key."""
        from google.auth import jwt

        value = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
        if not value.startswith("Bearer "):
            return False
        token = value.removeprefix("Bearer ")
        if token == TOKEN:
            return True
        try:
            claims = jwt.decode(token, certs=self.public_pem, verify=True)
        except Exception:  # noqa: BLE001 - any undecodable or badly signed token is a 401
            return False
        return claims.get("iss") == f"submitter@{PROJECT}.iam.gserviceaccount.com"

    def _check_job(self, job: Any) -> None:
        spec = type(job).to_dict(job)["pipeline_spec"]
        if not re.search(r"definition [0-9a-f]{16}, code [0-9a-f]{16}", spec.get("pipelineInfo", {})
                         .get("description", "")):
            raise ValueError("pipelineSpec carries no llmops definition stamp")
        if job.service_account and not job.service_account.endswith(".iam.gserviceaccount.com"):
            raise ValueError(f"service account {job.service_account} does not exist")
        if not job.runtime_config.gcs_output_directory.startswith(f"gs://{BUCKET}/"):
            raise ValueError("runtimeConfig.gcsOutputDirectory must be in the project's bucket")

    def _create_job(self, parent: str, query: dict[str, list[str]], body: bytes) -> tuple[int, Any]:
        types = self.types
        job = types.PipelineJob.from_json(body.decode(), ignore_unknown_fields=False)
        self._check_job(job)
        job_id = query.get("pipelineJobId", ["generated"])[0]
        request = types.CreatePipelineJobRequest(parent=parent.removeprefix("/v1/"), pipeline_job=job,
                                                 pipeline_job_id=job_id)
        name = f"{request.parent}/pipelineJobs/{job_id}"
        with self._lock:
            self.created.append(request)
            self.jobs[name] = {"job": job, "polls": 0}
        job.name = name
        job.state = types.PipelineState.PIPELINE_STATE_PENDING
        return 200, json.loads(types.PipelineJob.to_json(job))

    def _get_job(self, name: str) -> tuple[int, Any]:
        types = self.types
        with self._lock:
            entry = self.jobs.get(name)
            if entry is None:
                return 404, {"error": {"code": 404, "message": f"{name} not found", "status": "NOT_FOUND"}}
            entry["polls"] += 1
            polls = entry["polls"]
        job = types.PipelineJob(entry["job"])
        job.name = name
        if polls <= 1:
            job.state = types.PipelineState.PIPELINE_STATE_PENDING
        elif polls <= 3:
            job.state = types.PipelineState.PIPELINE_STATE_RUNNING
            job.job_detail = types.PipelineJobDetail(task_details=[
                types.PipelineTaskDetail(task_name="prepare-data", state="SUCCEEDED"),
                types.PipelineTaskDetail(task_name="tune", state="RUNNING")])
        else:
            job.state = types.PipelineState[self.final_state]
            if self.final_state != "PIPELINE_STATE_SUCCEEDED":
                job.error = {"code": 9, "message": "The DAG failed because some tasks failed: tune"}
        return 200, json.loads(types.PipelineJob.to_json(job))

    def _create_schedule(self, parent: str, body: bytes) -> tuple[int, Any]:
        types = self.types
        schedule = types.Schedule.from_json(body.decode(), ignore_unknown_fields=False)
        self._check_job(schedule.create_pipeline_job_request.pipeline_job)
        request = types.CreateScheduleRequest(parent=parent.removeprefix("/v1/"), schedule=schedule)
        with self._lock:
            self.schedules.append(request)
        schedule.name = f"{request.parent}/schedules/{len(self.schedules)}"
        schedule.state = types.Schedule.State.ACTIVE
        return 200, json.loads(types.Schedule.to_json(schedule))
