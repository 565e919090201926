"""A registered chain served by a real `mlflow models serve` process: /ping, then /invocations returns the documented
response schema (docs/prompts.md), and bad input gets a 4xx naming the problem. The server is always killed."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from prompts.chain import ChainResponse


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def served_model(world):
    """One version registered in the serving tests' store (made by the real steps) and one `mlflow models serve`
    for the module (starting one costs tens of seconds)."""
    version = world.register("served-chain")
    tmp_path, tracking_uri = world.root / "mlflow-models-serve", world.tracking_uri
    tmp_path.mkdir(exist_ok=True)
    env_keep = {k: v for k, v in os.environ.items() if not k.startswith("LLMOPS_") and k != "MLFLOW_RUN_ID"}
    port = _free_port()
    env = {**env_keep, "MLFLOW_TRACKING_URI": tracking_uri,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m", "models:/served-chain@dev",
         "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 240
        while True:
            if server.poll() is not None:
                pytest.fail(f"mlflow models serve exited {server.returncode}: {(tmp_path / 'serve.log').read_text()[-3000:]}")
            try:
                if httpx.get(f"{base}/ping", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"server not healthy in time: {(tmp_path / 'serve.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield base, version
    finally:
        try:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=20)
        log.close()


def test_invocations_return_the_documented_schema(served_model):
    base, version = served_model
    response = httpx.post(f"{base}/invocations", timeout=60, json={"dataframe_records": [
        {"question": "How do I reverse a list in Python?"}, {"question": "qqq zzz unrelated"}]})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert len(predictions) == 2
    for item in predictions:
        ChainResponse.model_validate(item)
        assert set(item) == set(ChainResponse.model_fields)
        assert set(item["safety"]) == {"blocked", "categories", "source", "reason"}
    first, second = predictions
    assert first["citations"][0]["source_id"] == "1000" and not first["abstained"]
    assert first["safety"]["blocked"] is False and first["safety"]["source"] == "local-lexicon-v1"
    assert (first["model_name"], first["model_version"], first["prompt_name"]) == ("served-chain", version, "serve-qa")
    assert second["citations"][0]["similarity"] < first["citations"][0]["similarity"]

    split = httpx.post(f"{base}/invocations", timeout=60,
                       json={"dataframe_split": {"columns": ["question"], "data": [["How do I merge two dicts?"]]}})
    assert split.status_code == 200 and split.json()["predictions"][0]["citations"][0]["source_id"] == "1003"


def test_bad_input_is_a_client_error_naming_the_problem(served_model):
    base, _ = served_model
    empty = httpx.post(f"{base}/invocations", timeout=60, json={"dataframe_records": [{"question": "   "}]})
    assert empty.status_code == 400 and "question is empty" in empty.text
    wrong = httpx.post(f"{base}/invocations", timeout=60, json={"dataframe_records": [{"text": "hi"}]})
    assert 400 <= wrong.status_code < 500
