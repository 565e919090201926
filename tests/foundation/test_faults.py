"""Faults leave nothing behind: killed processes, a tracking server that is down, a store that cannot be
written, credentials inside URLs."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

LLMOPS = str(Path(sys.executable).parent / "llmops")


def _llmops(*args: str, env: dict[str, str] | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    """Run the CLI in a fresh process; `timeout` is a hard bound (the command must be done by then)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_HTTP_REQUEST")}
    return subprocess.run([LLMOPS, *args], capture_output=True, text=True, timeout=timeout,
                          env={**clean, **(env or {})}, check=False)


# -- a tracking server that is down ------------------------------------------------------------------------
def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_server_that_is_down_fails_within_30_s_in_one_line():
    """MLflow's own retries would take ~250 s; the probe answers at once (hard bound: 30 s)."""
    url = f"http://user:s3cret@127.0.0.1:{_closed_port()}"
    started = time.monotonic()
    proc = _llmops("registry", "history", "any", env={"MLFLOW_TRACKING_URI": url})
    assert time.monotonic() - started < 30
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "the server does not answer" in proc.stderr and "s3cret" not in proc.stderr


def test_a_server_that_accepts_but_never_answers_fails_within_30_s():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)  # connections complete in the backlog; nothing is ever read or written
    try:
        proc = _llmops("registry", "history", "any",
                       env={"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{listener.getsockname()[1]}"})
    finally:
        listener.close()
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "does not answer (timed out)" in proc.stderr


# -- a store that cannot be written --------------------------------------------------------------------------
def test_a_read_only_store_is_one_line(tracking_uri: str, tmp_path: Path):
    import mlflow

    mlflow.set_experiment("llmops")  # the store exists
    db = Path(tracking_uri.removeprefix("sqlite:///"))
    if os.geteuid() == 0:  # root ignores file modes: make the file immutable instead
        if subprocess.run(["chattr", "+i", str(db)], capture_output=True, check=False).returncode != 0:
            pytest.skip("cannot make a file read-only for root here (no chattr)")
    else:
        db.chmod(0o444)
    try:
        # MLflow retries a locked SQLite store for a while before giving up: a bound against hanging, not a speed
        proc = _llmops("registry", "history", "any", env={"MLFLOW_TRACKING_URI": tracking_uri}, timeout=120)
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(db)], check=False)
        else:
            db.chmod(0o644)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "read-only" in proc.stderr and "Traceback" not in proc.stderr


def test_a_locked_store_is_one_line(tracking_uri: str):
    import mlflow

    mlflow.set_experiment("llmops")
    db = tracking_uri.removeprefix("sqlite:///")
    holder = sqlite3.connect(db, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        # MLflow retries a locked SQLite store for a while before giving up: a bound against hanging, not a speed
        proc = _llmops("registry", "history", "any", env={"MLFLOW_TRACKING_URI": tracking_uri}, timeout=120)
    finally:
        holder.rollback()
        holder.close()
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "locked by another process" in proc.stderr


# -- killed processes ------------------------------------------------------------------------------------------
VICTIM = r"""
import sys, time
from pathlib import Path
import mlflow
from llmops.fsutil import atomic_path

mlflow.set_tracking_uri(sys.argv[1])
mlflow.set_experiment("llmops")
with mlflow.start_run(run_name="prepare_data") as run:
    mlflow.set_tag("llmops.step", "prepare_data")
    with atomic_path(Path(sys.argv[2]) / "20260105T000000Z-written") as done:  # renamed into place
        done.mkdir()
        (done / "train.jsonl").write_text("z" * 2000)
    mlflow.log_param("dataset_digest", "written")  # then killed before the tags that name the folder
    with atomic_path(Path(sys.argv[2]) / "20260101T000000Z-partial") as tmp:
        tmp.mkdir()
        (tmp / "train.jsonl").write_text("x" * 1000)
        print(run.info.run_id, flush=True)
        time.sleep(600)
"""


def test_gc_marks_runs_of_killed_processes_failed_and_removes_orphans(tracking_uri: str, tmp_path: Path):
    import mlflow
    from mlflow.tracking import MlflowClient

    from llmops.runowner import HOST_TAG, PID_TAG

    out = tmp_path / "datasets"
    out.mkdir()
    script = tmp_path / "victim.py"
    script.write_text(VICTIM, encoding="utf-8")
    victim = subprocess.Popen([sys.executable, str(script), tracking_uri, str(out)], stdout=subprocess.PIPE,
                              text=True)
    killed_run = victim.stdout.readline().strip()
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=30)
    # what a kill -9 leaves: a RUNNING run owned by a dead pid, a .tmp folder; plus an orphan dataset folder
    client = MlflowClient()
    run = client.get_run(killed_run)
    assert run.info.status == "RUNNING" and run.data.tags[PID_TAG] == str(victim.pid)
    assert run.data.tags[HOST_TAG] == socket.gethostname()
    tmp_left = [p for p in out.iterdir() if p.name.endswith(".tmp")]
    assert len(tmp_left) == 1 and f"-{victim.pid}." in tmp_left[0].name
    orphan, kept = out / "20260105T000000Z-written", out / "20260103T000000Z-kept"
    foreign = out / "20260106T000000Z-foreign"  # no run of this store wrote it: another store's, kept
    for folder in (kept, foreign):
        folder.mkdir()
        (folder / "train.jsonl").write_text("y" * 4096)
    mlflow.set_experiment("llmops")
    with mlflow.start_run(run_name="prepare_data") as finished:
        mlflow.set_tags({"llmops.step": "prepare_data", "llmops.dataset_dir": kept.name})
    with mlflow.start_run(run_name="alive") as alive:  # owned by this (live) process
        pass
    client.set_terminated(alive.info.run_id, "RUNNING")

    env = {"MLFLOW_TRACKING_URI": tracking_uri, "LLMOPS_DATA__OUTPUT_DIR": str(out)}
    dry = _llmops("gc", "--dry-run", env=env, timeout=120)
    assert dry.returncode == 0, dry.stderr
    assert f"would mark FAILED: run {killed_run} (owner pid {victim.pid}" in dry.stdout
    assert f"would remove {orphan}" in dry.stdout and str(tmp_left[0]) in dry.stdout
    assert orphan.exists() and client.get_run(killed_run).info.status == "RUNNING"

    done = _llmops("gc", env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"marked FAILED: run {killed_run}" in done.stdout and "2 folder(s) removed" in done.stdout
    failed = client.get_run(killed_run)
    assert failed.info.status == "FAILED" and "is gone" in failed.data.tags["llmops.gc.reason"]
    assert client.get_run(alive.info.run_id).info.status == "RUNNING"
    assert not orphan.exists() and not tmp_left[0].exists() and kept.exists() and foreign.exists()
    assert f"kept {foreign}: no run of this tracking store wrote it" in done.stdout
    assert client.get_run(finished.info.run_id).info.status == "FINISHED"
    again = _llmops("gc", env=env, timeout=120)
    assert "gc: 0 run(s) marked FAILED, 0 folder(s) removed" in again.stdout


def test_a_step_attached_to_a_run_claims_it(tracking_uri: str, monkeypatch: pytest.MonkeyPatch):
    from mlflow.tracking import MlflowClient

    from llmops.runowner import PID_TAG
    from llmops.settings import load_settings
    from llmops.tracking import configure_mlflow

    client = MlflowClient()
    run = client.create_run(client.create_experiment("attached"), tags={PID_TAG: "1"})  # someone else's
    monkeypatch.setenv("MLFLOW_RUN_ID", run.info.run_id)
    configure_mlflow(load_settings())
    assert client.get_run(run.info.run_id).data.tags[PID_TAG] == str(os.getpid())


def test_a_folder_a_running_data_step_may_still_tag_is_kept(tracking_uri: str, tmp_path: Path):
    import mlflow

    from llmops.gc import collect

    out = tmp_path / "datasets"
    (out / "20260104T000000Z-writing").mkdir(parents=True)
    mlflow.set_experiment("llmops")
    with mlflow.start_run(run_name="prepare_data"):
        mlflow.log_param("dataset_digest", "writing")
        report = collect(out, skip_run_ids=[])
    assert report.removed == [] and "still running" in report.kept[0][1]


# -- credentials in URLs ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("url, masked", [
    ("https://user:pass@host/v1", "https://user:***@host/v1"),
    ("https://token@host:8443/v1?x=1", "https://***@host:8443/v1?x=1"),
    ("http://host/v1?api_key=abc&model=m", "http://host/v1?api_key=***&model=m"),
    ("s3://bucket/key?X-Amz-Signature=zz&X-Amz-Credential=cc", "s3://bucket/key?X-Amz-Signature=***&X-Amz-Credential=***"),
    ("http://127.0.0.1:8000/v1", "http://127.0.0.1:8000/v1"),
    ("runs:/abc/model", "runs:/abc/model"),
    ("not a url", "not a url"),
])
def test_mask_url(url, masked):
    from llmops.secrets import mask_url

    assert mask_url(url) == masked


def test_masked_everywhere_settings_reach_mlflow(tracking_uri: str):
    """What the steps log (params, tags, model_config) goes through `mask_urls`; a real run shows none."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from llmops.secrets import mask_urls

    config = {"provider": {"kind": "openai_compat", "base_url": "https://alice:hunter2@llm.internal/v1",
                           "api_key_env": "LLM_KEY"}, "notes": ["see https://bob:pw@wiki/page"], "k": 3}
    masked = mask_urls(config)
    assert masked["provider"]["base_url"] == "https://alice:***@llm.internal/v1" and masked["k"] == 3
    assert masked["notes"] == ["see https://bob:***@wiki/page"] and config["provider"]["base_url"].startswith("https://alice")
    mlflow.set_experiment("llmops")
    with mlflow.start_run() as run:
        mlflow.log_params(mask_urls({"base_url": config["provider"]["base_url"]}))
        mlflow.set_tags(mask_urls({"llmops.train_uri": "https://u:p@data/train.jsonl"}))
    logged = MlflowClient().get_run(run.info.run_id).data
    assert "hunter2" not in str(logged.params) and ":p@" not in str(logged.tags)


def test_notifications_do_not_print_credentials():
    from registry.notify import notify

    lines = notify({"alias": "staging"}, None, f"http://user:pw@127.0.0.1:{_closed_port()}/hook", 2)
    assert lines and "FAILED" in lines[0] and "user:pw" not in lines[0]
