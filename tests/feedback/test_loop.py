"""The loop, end to end, offline, on real steps and a real SQLite store: release v1 with `llmops pipeline run`, serve
it with the real model server (`llmops serve start --model models:/NAME@staging` on 127.0.0.1, its default log
rotation, nothing configured for feedback but the store), send questions, post corrections for the answers it got
wrong through the server's POST /feedback (resolved through the server's own log the moment the answer is given),
prepare the next dataset version with the feedback through the MLproject's `prepare_data -P include_feedback=true`,
tune, evaluate, register, and show
(a) the version's bundle names the feedback set (and the version it extends),
(b) the same running server follows @staging to the new version once `llmops registry promote` notifies it, and
    answers the corrected questions with the corrections,
(c) the gates still decide the promotion (a stricter gate file refuses it, naming the gate, and the server keeps
    serving v1; the default one lets it into @staging)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from evaluation.metrics import token_f1
from llmops.dataset import read_manifest
from tests.serving.serving_helpers import ServerProcess, log_records, wait_for

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
MODEL = "so-qa-assistant"
# Questions the sample's training data does not cover, with the answers a reviewer would give.
CORRECTIONS = {
    "How do I generate a random hexadecimal token for a password reset link?":
        "Use the secrets module: `secrets.token_hex(16)` gives 32 random hex characters; `secrets.token_urlsafe()` "
        "gives a URL-safe text token. Never use `random` for security tokens.",
    "How can I convert a hex colour string like #ff8800 into an RGB tuple?":
        "Strip the `#` and parse each pair of hex digits: `tuple(int(s[i:i + 2], 16) for i in (1, 3, 5))` gives "
        "`(255, 136, 0)`.",
    "How do I compute the SHA-256 checksum of a downloaded file?":
        "Feed the file to `hashlib.sha256()` in chunks: `h = hashlib.sha256(); for block in iter(lambda: "
        "f.read(65536), b''): h.update(block)`, then `h.hexdigest()`; Python 3.11 has `hashlib.file_digest(f, "
        "'sha256')`.",
    "How do I send an email with an attachment using smtplib?":
        "Build an `email.message.EmailMessage`, call `msg.add_attachment(data, maintype='application', "
        "subtype='pdf', filename='report.pdf')`, then `smtplib.SMTP(host).send_message(msg)`.",
    "How can I make my own class work in a with statement?":
        "Give it `__enter__` (return the resource) and `__exit__(self, exc_type, exc, tb)` (release it), or write "
        "a generator decorated with `contextlib.contextmanager`.",
}
STRICT_GATES = """mode: enforced
targets:
  staging:
    - {metric: answered_token_f1, min: 0.99}
"""

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1500)]


def _env(workdir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLMOPS_", "MLFLOW_"))}
    env.update(MLFLOW_TRACKING_URI=f"sqlite:///{workdir / 'mlflow.db'}",
               LLMOPS_DATA__OUTPUT_DIR=str(workdir / "datasets"),
               LLMOPS_FEEDBACK__STORE_URI=str(workdir / "feedback"),
               MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false", MLFLOW_MODEL_CATALOG_URI="", PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", **extra)
    return env


def _run(workdir: Path, *args: str, env: dict[str, str] | None = None, ok: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(args), cwd=workdir, env=env or _env(workdir), capture_output=True, text=True,
                          timeout=900, check=False)
    if ok:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _llmops(workdir: Path, *args: str, **kwargs) -> subprocess.CompletedProcess:
    return _run(workdir, str(BIN / "llmops"), *args, **kwargs)


def _value(out: str, key: str) -> str:
    return next(line.split(": ", 1)[1].strip() for line in out.splitlines() if line.startswith(f"{key}: "))


def _ask(url: str, question: str) -> tuple[str, dict]:
    response = httpx.post(url + "/invocations", json={"dataframe_records": [{"question": question}]}, timeout=60)
    assert response.status_code == 200, response.text
    (answer,) = response.json()["predictions"]
    assert answer["model_version"] == response.headers["X-Model-Version"]
    return response.headers["X-Request-ID"], answer


def test_from_thumbs_down_to_a_released_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow
    from mlflow.tracking import MlflowClient

    env = _env(tmp_path)
    for key, value in env.items():
        if key.startswith(("LLMOPS_", "MLFLOW_")):
            monkeypatch.setenv(key, value)
    out = _llmops(tmp_path, "pipeline", "run").stdout
    assert f"models:/{MODEL}@staging (version 1)" in out
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    client = MlflowClient()
    v1 = client.get_model_version_by_alias(MODEL, "staging")
    v1_digest = v1.tags["llmops.dataset_digest"]
    assert v1.tags["llmops.dataset_feedback"] == "none"
    (prep1,) = client.search_runs([client.get_experiment_by_name("llmops").experiment_id],
                                  filter_string="tags.`llmops.step` = 'prepare_data'")
    v1_eval = [json.loads(line) for line in
               Path(mlflow.artifacts.download_artifacts(prep1.data.tags["llmops.eval_uri"])).read_text().splitlines()]
    eval_title = v1_eval[0]["question"].split("\n", 1)[0]
    eval_fix = "A reviewer's better answer to an eval question: it may improve the reference, never train."

    # serve @staging (v1) with the real server, ask, and correct what it got wrong; the server keeps running and
    # follows the alias. Parts every 30 s (the default) and polls every 10 min: feedback resolves at once only
    # because the server's own log is flushed on a miss, and only the promotion's notification moves it.
    server = ServerProcess(tmp_path / "server", env["MLFLOW_TRACKING_URI"], f"models:/{MODEL}@staging",
                           settings={"LLMOPS_FEEDBACK__STORE_URI": env["LLMOPS_FEEDBACK__STORE_URI"],
                                     "LLMOPS_SERVING__PART_MAX_SECONDS": "30",
                                     "LLMOPS_SERVING__POLL_INTERVAL_S": "600"})
    with server:
        url = server.url
        corrected: dict[str, str] = {}
        asked: list[str] = []
        for question, right in CORRECTIONS.items():
            request_id, answer = _ask(url, question)
            asked.append(request_id)
            assert answer["model_version"] == "1"
            if answer["abstained"] or token_f1(answer["answer"], right) < 0.3:  # it got this one wrong
                response = httpx.post(url + "/feedback", json={"request_id": request_id, "rating": "down",
                                                               "corrected_answer": right, "user": "tester"})
                assert response.status_code == 201, response.text
                assert response.json()["provenance"]["model_version"] == "1"
                assert response.json()["provenance"]["dataset_digest"] == v1_digest
                corrected[question] = right
        request_id, _ = _ask(url, eval_title)
        asked.append(request_id)
        assert httpx.post(url + "/feedback", json={"request_id": request_id, "rating": 0,
                                                   "corrected_answer": eval_fix}).status_code == 201
        assert len(corrected) >= 3, "the sample model should get most of these out-of-domain questions wrong"
        assert {r["request_id"] for r in log_records(server.log_dir)} == set(asked)  # written on the misses

        # the next dataset version: the MLproject step with the parameter, then tune, evaluate, register
        _run(tmp_path, str(BIN / "mlflow"), "run", str(REPO), "-e", "prepare_data", "-P", "include_feedback=true",
             "--env-manager", "local", "--experiment-name", "llmops")
        prep2 = client.search_runs([client.get_experiment_by_name("llmops").experiment_id],
                                   filter_string="tags.`llmops.step` = 'prepare_data'",
                                   order_by=["attributes.start_time DESC"])[0]
        assert prep2.info.run_id != prep1.info.run_id
        train_uri, eval_uri = prep2.data.tags["llmops.train_uri"], prep2.data.tags["llmops.eval_uri"]
        manifest = read_manifest(train_uri)
        assert manifest.previous_digest == v1_digest and manifest.lineage_key == v1.tags["llmops.dataset_lineage"]
        feedback_digest = manifest.lineage.feedback["digest"]
        train = [json.loads(line) for line in Path(mlflow.artifacts.download_artifacts(train_uri)).read_text()
                 .splitlines()]
        evals = [json.loads(line) for line in Path(mlflow.artifacts.download_artifacts(eval_uri)).read_text()
                 .splitlines()]
        assert {r["question"]: r["answer"] for r in train if r["question"] in corrected} == corrected
        assert eval_fix not in {r["answer"] for r in train} and eval_fix in {r["answer"] for r in evals}

        tune_run = _value(_llmops(tmp_path, "tune", "--train-uri", train_uri, "--eval-uri", eval_uri).stdout,
                          "run_id")
        eval_run = _value(_llmops(tmp_path, "eval", "run", "--tune-run-id", tune_run, "--eval-uri", eval_uri).stdout,
                          "run")
        _llmops(tmp_path, "registry", "register", "--tune-run-id", tune_run, "--eval-run-id", eval_run)
        v2 = client.get_model_version(MODEL, "2")
        # (a) the bundle names the feedback set and the version it extends
        shown = _llmops(tmp_path, "registry", "show", MODEL, "2").stdout
        assert "bundle: PASS" in shown
        assert f"  dataset_feedback: {feedback_digest}" in shown and f"  dataset_previous: {v1_digest}" in shown
        assert v2.tags["llmops.dataset_digest"] == manifest.digest != v1_digest

        # (c) the gates decide: a stricter gate file refuses v2 (naming the gate), the default gates let it in
        notify = {"LLMOPS_REGISTRY__NOTIFY_URL": f"{url}/admin/refresh"}  # promote tells the server at once
        strict = tmp_path / "strict_gates.yaml"
        strict.write_text(STRICT_GATES, encoding="utf-8")
        refused = _llmops(tmp_path, "registry", "promote", MODEL, "2", "--to", "staging",
                          env=_env(tmp_path, LLMOPS_EVALUATION__GATES_FILE=str(strict), **notify), ok=False)
        assert refused.returncode == 5, refused.stdout + refused.stderr
        assert "FAIL  gate answered_token_f1" in refused.stdout + refused.stderr
        assert str(client.get_model_version_by_alias(MODEL, "staging").version) == "1"
        assert server.version()["model_version"] == "1"
        promoted = _llmops(tmp_path, "registry", "promote", MODEL, "2", "--to", "staging",
                           env=_env(tmp_path, **notify)).stdout
        assert "PASS  eval dataset is current" in promoted and "moved (v1 -> v2" in promoted

        # (b) the same server follows @staging to v2 and answers the corrected questions with the corrections
        wait_for(lambda: server.version()["model_version"] == "2", 60, "the server to swap to v2")
        info = server.version()
        assert info["dataset_digest"] == manifest.digest and info["champion"]["watch"]["previous"] == "1"
        for question, right in corrected.items():
            _, answer = _ask(url, question)
            assert answer["model_version"] == "2" and answer["answer"] == right and not answer["abstained"]
