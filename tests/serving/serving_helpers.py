"""Test helpers for the model server: a real `llmops serve start` subprocess on 127.0.0.1, alias moves through the
ledger, a concurrent client, and waiting for the inference log (a module of its own name: tests/monitoring has a
`helpers` too)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

VENV_BIN = Path(sys.executable).parent
SKIP_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID",
            "MLFLOW_EXPERIMENT_NAME")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition: Callable[[], Any], timeout_s: float, what: str, every_s: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(every_s)


class ServerProcess:
    """`llmops serve start` in its own process group, settings through LLMOPS_* variables like any deployment."""

    def __init__(self, workdir: Path, tracking_uri: str, model: str, *, args: tuple[str, ...] = (),
                 settings: dict[str, str] | None = None, name: str = "server") -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_dir = workdir / f"{name}-log"
        self.output = workdir / f"{name}.out"
        self.command = [str(VENV_BIN / "llmops"), "serve", "start", "--model", model, "--host", "127.0.0.1",
                        "--port", str(self.port), "--log", str(self.log_dir), *args]
        env = {k: v for k, v in os.environ.items() if not k.startswith("LLMOPS_") and k not in SKIP_ENV}
        env.update({"MLFLOW_TRACKING_URI": tracking_uri, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}",
                    "LLMOPS_SERVING__POLL_INTERVAL_S": "1", "LLMOPS_SERVING__PART_MAX_SECONDS": "0.5",
                    **(settings or {})})
        self.env = env
        self.process: subprocess.Popen | None = None

    def start(self, ready: bool = True, timeout_s: float = 180, attempts: int = 3) -> ServerProcess:
        """Start and wait for /ready (or /health). A free port can be taken by another test process between the
        probe and the bind (tests run in parallel): then the server exits saying so and gets another port."""
        for attempt in range(attempts):
            try:
                return self._start(ready, timeout_s)
            except AssertionError:
                if "address already in use" not in self.text() or attempt == attempts - 1:
                    raise
                self.port = free_port()
                self.url = f"http://127.0.0.1:{self.port}"
                self.command[self.command.index("--port") + 1] = str(self.port)
        raise AssertionError("unreachable")

    def _start(self, ready: bool, timeout_s: float) -> ServerProcess:
        handle = self.output.open("w")
        self.process = subprocess.Popen(self.command, env=self.env, cwd=self.workdir, stdout=handle,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        handle.close()
        path = "/ready" if ready else "/health"

        def up() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited {self.process.returncode}: {self.text()[-3000:]}")
            try:
                return httpx.get(self.url + path, timeout=2).status_code == 200 and self._answered_by_us()
            except httpx.TransportError:
                return False

        try:
            wait_for(up, timeout_s, f"{path} of {self.command}", every_s=0.3)
        except AssertionError as exc:
            self.stop()
            raise AssertionError(f"{exc}\n{self.text()[-3000:]}") from None
        return self

    def _answered_by_us(self) -> bool:
        """The port answers from this process (or one of its workers), not another test's server that took it."""
        import psutil

        replica = httpx.get(self.url + "/version", timeout=5).json().get("replica", "")
        pid = int(replica.rsplit(":", 1)[-1]) if replica.rsplit(":", 1)[-1].isdigit() else -1
        ours = {self.process.pid, *(p.pid for p in psutil.Process(self.process.pid).children(recursive=True))}
        return pid in ours

    def text(self) -> str:
        return self.output.read_text(encoding="utf-8", errors="replace") if self.output.exists() else ""

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.get(self.url + path, timeout=30, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.post(self.url + path, timeout=60, **kwargs)

    def ask(self, question: str, **kwargs: Any) -> httpx.Response:
        return self.post("/invocations", json={"dataframe_records": [{"question": question}]}, **kwargs)

    def version(self) -> dict:
        return self.get("/version").json()

    def metric(self, name: str, **labels: str) -> float:
        """The sum of a metric's samples whose labels include `labels` (0 when absent)."""
        from prometheus_client.parser import text_string_to_metric_families

        total = 0.0
        for family in text_string_to_metric_families(self.get("/metrics").text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    total += sample.value
        return total

    def stop(self) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            return self.process.wait(timeout=40)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.process.pid, signal.SIGKILL)
            return self.process.wait(timeout=20)

    def __enter__(self) -> ServerProcess:
        return self.start() if self.process is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Hammer:
    """Client threads sending questions until stopped; every response kept as (status, version, request id)."""

    def __init__(self, server: ServerProcess, threads: int = 4, question: str = "How do I reverse a list?",
                 path: str = "/invocations") -> None:
        self.server = server
        self.question = question
        self.path = path
        self.results: list[tuple[int, str | None, str | None, int]] = []  # status, version, request id, thread
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def _run(self, index: int) -> None:
        with httpx.Client(timeout=60) as client:
            while not self._stop.is_set():
                try:
                    response = client.post(self.server.url + self.path,
                                           json={"dataframe_records": [{"question": self.question}]})
                except httpx.HTTPError as exc:  # a connection failure is a failed request too
                    with self._lock:
                        self.errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                with self._lock:
                    self.results.append((response.status_code, response.headers.get("x-model-version"),
                                         response.headers.get("x-request-id"), index))

    def __enter__(self) -> Hammer:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def count(self) -> int:
        with self._lock:
            return len(self.results)

    def versions_seen(self) -> set[str | None]:
        with self._lock:
            return {version for _, version, _, _ in self.results}


def raw_request(url: str, data: bytes, timeout_s: float = 30, half_close: bool = False) -> tuple[int, bytes]:
    """Send bytes as they are (clients refuse to send a bad Content-Length or a `..` path): (status, body).
    `half_close`: then close the sending side, as a client that gives up mid-body does."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout_s) as sock:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            chunks.append(chunk)
            head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
            length = [line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")]
            if length and len(body) >= int(length[0].split(b":")[1]):
                break
    response = b"".join(chunks)
    if not response:
        return 0, b""
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


def move_alias(name: str, alias: str, version: str, reason: str = "test move") -> None:
    """An alias move as a release manager makes it: through the ledger (a row per move)."""
    from mlflow.tracking import MlflowClient

    from registry.ledger import open_ledger

    open_ledger(None, MlflowClient()).move(name, alias, str(version), action="promote", actor="test-release-manager",
                                           reason=reason)


def ledger_moves(name: str, alias: str) -> list[Any]:
    from mlflow.tracking import MlflowClient

    from registry.ledger import open_ledger

    return open_ledger(None, MlflowClient()).moves(name, alias)


def log_records(location: Path) -> list[dict]:
    from llmops.records import read_inference_log

    return read_inference_log(str(location)).to_pylist() if location.exists() else []


def break_artifacts(name: str, version: str) -> Path:
    """Damage a registered version the way a half-deleted artifact store does: its retriever is gone."""
    from mlflow.tracking import MlflowClient

    from urllib.parse import unquote, urlsplit

    uri = MlflowClient().get_model_version_download_uri(name, version)
    local = Path(unquote(urlsplit(uri).path) if uri.startswith("file:") else uri)
    target = local / "artifacts" / "retriever"
    assert target.exists(), list(local.iterdir())
    shutil.rmtree(target)
    return target
