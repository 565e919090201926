"""`llmops pipeline submit --target vertex`: the real `google.cloud.aiplatform.PipelineJob` (REST transport) against
a fake Vertex AI Pipelines on 127.0.0.1 that parses what it receives with the SDK's own request types, and a real
`mlflow server` on 127.0.0.1 as the steps' tracking server. Bad input sends nothing and creates no run. A `live`
test submits to the real service when credentials and a project are configured."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline_helpers import cli  # noqa: E402
from vertex_pipelines_fake import BUCKET, PROJECT, PROJECT_NUMBER, REGION, FakeVertexPipelines  # noqa: E402

BIN = Path(sys.executable).parent
ROOT = f"gs://{BUCKET}/runs"
SA = "pipelines@demo-project.iam.gserviceaccount.com"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory):
    """A real MLflow tracking server (SQLite behind it): what the steps on Vertex would report to."""
    import urllib.request

    folder = tmp_path_factory.mktemp("server")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLMOPS_", "MLFLOW_"))}
    proc = subprocess.Popen([str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{folder / 'm.db'}",
                             "--default-artifact-root", str(folder / "artifacts"), "--host", "127.0.0.1",
                             "--port", str(port), "--workers", "1"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("mlflow server did not start")
    yield url
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    """One fake cloud for the module: the SDK keeps the credentials it loaded first for the whole process."""
    fake = FakeVertexPipelines()
    key = fake.credentials_file(tmp_path_factory.mktemp("adc"))
    yield fake, key
    fake.stop()


TEMPLATE_EXPERIMENT = "submit-compiled"


@pytest.fixture(scope="module")
def compiled(tracking_server: str, tmp_path_factory) -> str:
    """The pipeline compiled once for the tracking server (through the CLI, in a clean environment); each test gets
    a copy naming its own experiment."""
    import contextlib
    import io

    folder = tmp_path_factory.mktemp("compiled")
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        for key in [k for k in os.environ if k.startswith(("LLMOPS_", "MLFLOW_"))]:
            mp.delenv(key)
        mp.setenv("LLMOPS_MLFLOW__EXPERIMENT_NAME", TEMPLATE_EXPERIMENT)
        mp.chdir(folder)
        from llmops.cli import main

        with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as done:
            main(["pipeline", "compile", "--output", "pipeline.yaml", "--image", "llmops:test",
                  "--pipeline-tracking-uri", tracking_server])
    assert not done.value.code, out.getvalue()
    return (folder / "pipeline.yaml").read_text()


@pytest.fixture
def vertex(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tracking_server: str, cloud, compiled: str):
    """The fake cloud (its records cleared), ADC pointing at it, the pipeline settings, and the YAML compiled for the
    tracking server, reporting to this test's experiment."""
    from google.cloud.aiplatform.utils import resource_manager_utils

    fake, key = cloud
    fake.reset()
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key))
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", fake.url)
    for name in ("GOOGLE_CLOUD_PROJECT", "CLOUDSDK_CORE_PROJECT"):
        monkeypatch.delenv(name, raising=False)
    # The SDK checks that the bucket belongs to the project by asking Resource Manager over gRPC at its fixed
    # googleapis.com host, the one call that cannot be pointed at 127.0.0.1: answer it with the fake's number.
    monkeypatch.setattr(resource_manager_utils, "get_project_number", lambda project, credentials=None:
                        PROJECT_NUMBER if project == PROJECT else "0")
    settings = {"PROJECT": PROJECT, "REGION": REGION, "PIPELINE_ROOT": ROOT, "SERVICE_ACCOUNT": SA,
                "API_ENDPOINT": fake.url, "API_TRANSPORT": "rest", "POLL_S": "0.01"}
    for name, value in settings.items():
        monkeypatch.setenv(f"LLMOPS_PIPELINE__VERTEX__{name}", value)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_server)
    experiment = f"submit-{tmp_path.name}"  # one per test, one server
    monkeypatch.setenv("LLMOPS_MLFLOW__EXPERIMENT_NAME", experiment)
    assert compiled.count(TEMPLATE_EXPERIMENT) > 1
    (tmp_path / "pipeline.yaml").write_text(compiled.replace(TEMPLATE_EXPERIMENT, experiment))
    return fake


def _client(url: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(url, url)


def _runs(url: str) -> list:
    client = _client(url)
    experiment = client.get_experiment_by_name(os.environ["LLMOPS_MLFLOW__EXPERIMENT_NAME"])
    return client.search_runs([experiment.experiment_id]) if experiment else []


def test_submit_sends_the_compiled_spec_and_records_the_job(tmp_path: Path, vertex, tracking_server, capsys) -> None:
    code, out, err = cli(capsys, "pipeline", "submit", "--target", "vertex", "--template", "pipeline.yaml",
                         "-P", "limit=40", "-P", "backend=local", "--json")
    assert code == 0, err
    result = json.loads(out)
    (request,) = vertex.created
    job = request.pipeline_job
    assert request.parent == f"projects/{PROJECT}/locations/{REGION}" and request.pipeline_job_id.startswith("llmops-")
    compiled = yaml.safe_load((tmp_path / "pipeline.yaml").read_text())
    assert type(job).to_dict(job)["pipeline_spec"] == json.loads(json.dumps(compiled))  # the file, unchanged
    assert job.runtime_config.gcs_output_directory == ROOT and job.service_account == SA
    values = {k: v for k, v in job.runtime_config.parameter_values.items()}
    assert values == {"limit": "40", "backend": "local", "parent_run_id": result["run_id"]}
    assert job.labels["llmops-mlflow-run"] == result["run_id"]
    assert result["name"] == f"projects/{PROJECT}/locations/{REGION}/pipelineJobs/{request.pipeline_job_id}"
    (run,) = _runs(tracking_server)
    assert run.info.run_id == result["run_id"] and run.info.status == "RUNNING"  # the job's last task ends it
    assert run.data.tags["llmops.vertex.pipeline_job"] == result["name"]
    assert run.data.tags["llmops.vertex.console_url"].startswith("https://console.cloud.google.com/vertex-ai/")
    assert not any(k.startswith("llmops.owner.") for k in run.data.tags)  # `llmops gc` leaves it alone
    assert "state" not in result  # without --wait it returns at once


def test_wait_prints_a_progress_line_per_poll_and_ends_with_the_job(vertex, tracking_server, capsys) -> None:
    code, out, err = cli(capsys, "pipeline", "submit", "--wait")
    assert code == 0, err
    lines = out.splitlines()
    assert any("PIPELINE_STATE_RUNNING (prepare-data SUCCEEDED, tune RUNNING)" in line for line in lines)
    assert "state: PIPELINE_STATE_SUCCEEDED" in out
    (run,) = _runs(tracking_server)
    assert run.data.tags["llmops.vertex.state"] == "PIPELINE_STATE_SUCCEEDED"


def test_a_failed_job_fails_the_command_and_the_run(vertex, tracking_server, capsys) -> None:
    vertex.final_state = "PIPELINE_STATE_FAILED"
    code, out, err = cli(capsys, "pipeline", "submit", "--wait")
    assert code == 6 and "ended PIPELINE_STATE_FAILED: The DAG failed because some tasks failed: tune" in err
    (run,) = _runs(tracking_server)
    assert run.info.status == "FAILED"


def test_a_refused_job_is_one_line_and_a_failed_run(vertex, tracking_server, capsys, monkeypatch) -> None:
    monkeypatch.setenv("LLMOPS_PIPELINE__VERTEX__SERVICE_ACCOUNT", "nobody")
    code, out, err = cli(capsys, "pipeline", "submit")
    assert code == 6 and "Vertex AI Pipelines refused the job" in err and "nobody does not exist" in err, err
    assert len(err.strip().splitlines()) == 1
    (run,) = _runs(tracking_server)
    assert run.info.status == "FAILED" and "nobody" in run.data.tags["llmops.error"]


def test_schedule_creates_a_schedule_whose_jobs_open_their_own_runs(vertex, tracking_server, capsys) -> None:
    code, out, err = cli(capsys, "pipeline", "submit", "--schedule", "0 3 * * 1", "-P", "limit=40")
    assert code == 0, err
    assert not vertex.created
    (request,) = vertex.schedules
    schedule = request.schedule
    assert schedule.cron == "0 3 * * 1" and schedule.max_concurrent_run_count == 1
    job = schedule.create_pipeline_job_request.pipeline_job
    assert dict(job.runtime_config.parameter_values) == {"limit": "40"}  # no parent_run_id: one per job
    assert job.service_account == SA
    (run,) = _runs(tracking_server)
    assert run.info.status == "FINISHED" and run.data.tags["llmops.vertex.schedule"] == schedule.name or \
        run.data.tags["llmops.vertex.schedule"].startswith(f"projects/{PROJECT}/locations/{REGION}/schedules/")


def _stale(path: Path) -> None:
    text = path.read_text()
    import re

    path.write_text(re.sub(r"definition [0-9a-f]{16}", "definition 0000000000000000", text))


@pytest.mark.parametrize(("env", "args", "prepare", "message"), [
    ({"LLMOPS_PIPELINE__VERTEX__PROJECT": ""}, (), None, "no Google Cloud project"),
    ({"LLMOPS_PIPELINE__VERTEX__PIPELINE_ROOT": ""}, (), None, "pipeline.vertex.pipeline_root is not set"),
    ({"LLMOPS_PIPELINE__VERTEX__PIPELINE_ROOT": "s3://bucket/x"}, (), None, "must be a gs://bucket/prefix"),
    ({}, ("-P", "limitt=3"), None, "limitt is not a parameter of the pipeline"),
    ({}, ("--schedule", "daily"), None, "is not a cron expression"),
    ({}, ("--template", "nope.yaml"), None, "does not exist"),
    ({}, (), _stale, "compiled from another version of the pipeline definition"),
    ({}, ("--template", "local.yaml"), "local", "which steps on Vertex AI cannot reach"),
])
def test_bad_input_submits_nothing(tmp_path: Path, vertex, tracking_server, capsys, monkeypatch, env, args, prepare,
                                   message) -> None:
    for key, value in env.items():
        if value:
            monkeypatch.setenv(key, value)
        else:
            monkeypatch.delenv(key, raising=False)
    if prepare == "local":
        assert cli(capsys, "pipeline", "compile", "--output", "local.yaml", "--image", "x",
                   "--pipeline-tracking-uri", f"sqlite:///{tmp_path / 'm.db'}")[0] == 0
    elif prepare:
        prepare(tmp_path / "pipeline.yaml")
    code, out, err = cli(capsys, "pipeline", "submit", *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert vertex.vertex_posts() == [] and _runs(tracking_server) == []


@pytest.mark.live
def test_live_submit_to_vertex_ai_pipelines(tmp_path: Path, capsys) -> None:
    """Submits a real job (without waiting). Needs ADC, GOOGLE_CLOUD_PROJECT (or LLMOPS_PIPELINE__VERTEX__PROJECT),
    LLMOPS_PIPELINE__VERTEX__PIPELINE_ROOT, LLMOPS_PIPELINE__IMAGE (built from this commit) and
    LLMOPS_PIPELINE__TRACKING_URI (a tracking server the steps can reach)."""
    needed = ["LLMOPS_PIPELINE__VERTEX__PIPELINE_ROOT", "LLMOPS_PIPELINE__IMAGE", "LLMOPS_PIPELINE__TRACKING_URI"]
    live = {k: os.environ.get(f"LIVE_{k}") or os.environ.get(k) for k in needed}  # the autouse fixture drops LLMOPS_*
    project = os.environ.get("GOOGLE_CLOUD_PROJECT")
    try:
        import google.auth

        google.auth.default()
    except Exception:
        pytest.skip("no Application Default Credentials")
    if not project or not all(live.values()):
        pytest.skip(f"set GOOGLE_CLOUD_PROJECT and LIVE_{', LIVE_'.join(needed)} to submit to Vertex AI")
    os.environ.update({k: v for k, v in live.items() if v})
    assert cli(capsys, "pipeline", "compile", "--output", "pipeline.yaml")[0] == 0
    code, out, err = cli(capsys, "pipeline", "submit", "--json")
    assert code == 0, err
    assert json.loads(out)["name"].startswith(f"projects/{project}/locations/")
