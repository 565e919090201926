"""Vertex AI tuning against fakes of the google-genai and Cloud Storage clients (real TuningJob objects)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import vertex_fakes as fakes

from llmops.errors import BackendError, ConfigError

REPO = Path(__file__).resolve().parents[2]
GCS = "gs://llmops-tuning/sft"


def _settings(store, model_name: str = "vertex-qa", **vertex):
    from llmops.settings import load_settings

    cfg = {"gcs_uri": GCS, "project": "demo-project", "epochs": 2, "learning_rate_multiplier": 0.5,
           "adapter_size": 8, "poll_initial_s": 10, "poll_max_s": 40, "usd_per_million_training_tokens": 3.0,
           **vertex}
    return load_settings({"mlflow": {"tracking_uri": store["uri"]}, "model": {"registered_name": model_name},
                          "tuning": {"backend": "vertex", "vertex": cfg}})


def _run(store, script, model_name="vertex-qa", storage=None, **vertex):
    from llmops.tracking import configure_mlflow
    from projects.tuning.run import run_tuning

    settings = _settings(store, model_name=model_name, **vertex)
    configure_mlflow(settings)
    storage = storage or fakes.FakeStorageClient()
    genai = fakes.FakeGenaiClient(script, storage=storage)
    sleeps: list[float] = []
    call = lambda: run_tuning(settings, store["train_uri"], store["eval_uri"],
                              vertex_clients=(genai, storage), sleep=sleeps.append)
    return call, genai, storage, sleeps


def _versions(name: str) -> list:
    from mlflow.tracking import MlflowClient

    return MlflowClient().search_model_versions(f"name='{name}'")


def _last_run():
    import mlflow

    return mlflow.search_runs(order_by=["attributes.start_time DESC"], max_results=1, output_format="list")[0]


def test_happy_path_uploads_tunes_polls_logs_then_releases_through_the_one_path(store) -> None:
    import mlflow
    from mlflow.models import Model
    from mlflow.tracking import MlflowClient

    from evaluation.run import run_evaluate_step
    from registry.release import register

    script = [fakes.job(fakes.S.JOB_STATE_PENDING), fakes.running(5, 0), fakes.running(12, 1), fakes.succeeded()]
    call, genai, storage, sleeps = _run(store, script, model_name="vertex-happy")
    out = call()

    # uploads: chat format, training rows (train minus validation) and the validation rows, under <prefix>/<digest>/
    objects = storage.buckets["llmops-tuning"].objects
    run = MlflowClient().get_run(out["run_id"])
    params = run.data.params
    digest = params["dataset_digest"]
    assert set(objects) == {f"sft/{digest}/train.jsonl", f"sft/{digest}/validation.jsonl"}
    first = json.loads(objects[f"sft/{digest}/train.jsonl"][0].splitlines()[0])
    assert [t["role"] for t in first["contents"]] == ["user", "model"]
    assert first["contents"][1]["parts"][0]["text"].endswith(" .")
    assert len(objects[f"sft/{digest}/train.jsonl"][0].splitlines()) == int(params["fit_examples"])
    assert len(objects[f"sft/{digest}/validation.jsonl"][0].splitlines()) == int(params["validation_examples"]) > 0
    from projects.tuning.common import load_tuning_data

    data = load_tuning_data(store["train_uri"], store["eval_uri"])  # the eval split (gated) is never uploaded
    uploaded = [json.loads(line)["contents"][0]["parts"][0]["text"]
                for line in objects[f"sft/{digest}/train.jsonl"][0].splitlines()]
    assert uploaded == [row["input_text"] for row in data.fit]

    # the job was created with our hyperparameters and the uploaded URIs
    (tune,) = genai.tunings.tune_calls
    assert tune["base_model"] == "gemini-2.5-flash"
    assert tune["training_dataset"].gcs_uri == f"{GCS}/{digest}/train.jsonl"
    config = tune["config"]
    assert (config.epoch_count, config.learning_rate_multiplier) == (2, 0.5)
    assert config.adapter_size.name == "ADAPTER_SIZE_EIGHT"
    assert config.validation_dataset.gcs_uri == f"{GCS}/{digest}/validation.jsonl"

    # backoff: doubling from poll_initial_s, capped at poll_max_s, until the terminal state
    assert sleeps == [10, 20, 40, 40]
    assert genai.tunings.get_calls == 4

    assert run.info.status == "FINISHED"
    tags, metrics = run.data.tags, run.data.metrics
    assert params["tuning.backend"] == "vertex" and params["tuning.base_model"] == "gemini-2.5-flash"
    assert params["hp.epochs"] == "2" and params["hp.adapter_size"] == "8"
    assert params["train_gcs_uri"].startswith(GCS) and params["prompt_version"] == str(store["prompt"].version)
    assert tags["llmops.vertex_job"] == fakes.JOB_NAME
    assert tags["llmops.vertex_endpoint"] == fakes.ENDPOINT and tags["llmops.vertex_tuned_model"] == fakes.TUNED_MODEL
    assert tags["llmops.vertex_job_state"] == "JOB_STATE_SUCCEEDED"
    assert metrics["total_billable_token_count"] == 120_000
    assert metrics["cost_usd"] == pytest.approx(120_000 * 2 * 3.0 / 1e6)
    assert metrics["job_duration_s"] == 42 * 60 and "duration_s" in metrics
    steps = [(m.step, m.value) for m in MlflowClient().get_metric_history(run.info.run_id, "completed_steps")]
    assert steps == [(2, 5.0), (3, 12.0), (4, 20.0)]
    assert {d.dataset.name for d in run.inputs.dataset_inputs} == {"so-qa-train", "so-qa-eval"}
    # what the run produced, as data: the tuned endpoint; tuning registers nothing
    spec = json.loads(tags["llmops.provider_spec"])
    assert (spec["kind"], spec["model"], spec["project"], spec["location"]) == \
        ("vertex", fakes.ENDPOINT, "demo-project", "us-central1")
    assert _versions("vertex-happy") == []

    # the release path: evaluate the endpoint (the SDK fake answers from what was uploaded), register, alias dev
    settings = _settings(store, model_name="vertex-happy")
    with mlflow.start_run(run_name="evaluate") as evaluation:
        outcome = run_evaluate_step(out["run_id"], store["eval_uri"], settings=settings, client=genai)
    assert len(genai.models.calls) == 4 and outcome.metrics["coverage"] == 1.0
    with mlflow.start_run(run_name="register"):
        version = register(settings, "vertex-happy", out["run_id"], evaluation.info.run_id)
    mv = MlflowClient().get_model_version("vertex-happy", version)
    assert str(MlflowClient().get_model_version_by_alias("vertex-happy", "dev").version) == version
    assert (mv.tags["llmops.tune_run_id"], mv.tags["llmops.chain"]) == (run.info.run_id, "so-qa-vertex")
    assert mv.tags["llmops.dataset_digest"] == digest and mv.tags["llmops.provider"] == "vertex"
    assert mv.tags["llmops.instruction_hash"] == store["prompt"].instruction_hash
    assert any(p.startswith("google-genai==") for p in mv.tags["llmops.requirements"].split(","))
    import mlflow.artifacts

    local = mlflow.artifacts.download_artifacts(f"models:/vertex-happy/{version}")
    model_config = Model.load(str(Path(local) / "MLmodel")).flavors["python_function"]["config"]
    assert model_config["provider"]["model"] == fakes.ENDPOINT and model_config["provider"]["project"] == "demo-project"
    # it loads by alias without credentials (the first question needs them), and bad input is the caller's error
    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException

    model = mlflow.pyfunc.load_model("models:/vertex-happy@dev")
    with pytest.raises(MlflowException, match="question") as info:
        model.predict([{"question": "   "}])
    assert info.value.error_code == "INVALID_PARAMETER_VALUE"


@pytest.mark.parametrize(("state", "message"), [(fakes.S.JOB_STATE_FAILED, "quota exceeded for tuning"),
                                                (fakes.S.JOB_STATE_CANCELLED, "cancelled by user")])
def test_failed_or_cancelled_job_fails_the_run_and_registers_nothing(store, state, message) -> None:
    name = f"vertex-{state.name.lower()}"
    call, _genai, _storage, _sleeps = _run(store, [fakes.running(3, 0), fakes.ended(state, message)],
                                           model_name=name)
    with pytest.raises(BackendError, match=message):
        call()
    run = _last_run()
    assert run.info.status == "FAILED"
    assert message in run.data.tags["llmops.failure_reason"]
    assert state.name in run.data.tags["llmops.failure_reason"]
    assert run.data.tags["llmops.vertex_job_state"] == state.name
    assert _versions(name) == []


def test_interrupt_while_polling_cancels_the_job_and_kills_the_run(store) -> None:
    call, genai, _storage, _sleeps = _run(store, [fakes.running(1, 0), KeyboardInterrupt()], model_name="vertex-int")
    with pytest.raises(KeyboardInterrupt):
        call()
    assert genai.tunings.cancelled == [fakes.JOB_NAME]
    run = _last_run()
    assert run.info.status == "KILLED" and run.data.tags["llmops.failure_reason"].startswith("interrupted")
    assert _versions("vertex-int") == []


def test_polling_gives_up_after_timeout_and_cancels(store, monkeypatch) -> None:
    from projects.tuning import vertex

    call, genai, _storage, _sleeps = _run(store, [fakes.running(1, 0)], model_name="vertex-slow", timeout_s=1,
                                          poll_initial_s=0)
    clock = iter(range(1000))  # one "second" passes per poll
    original = vertex.poll_job
    monkeypatch.setattr(vertex, "poll_job",
                        lambda *a, **k: original(*a, **{**k, "clock": lambda: float(next(clock))}))
    with pytest.raises(BackendError, match="still JOB_STATE_RUNNING"):
        call()
    assert genai.tunings.cancelled == [fakes.JOB_NAME]
    assert _versions("vertex-slow") == []


@pytest.mark.parametrize(("vertex", "message"), [
    ({"base_model": "gemini-9-ultra"}, "unknown Vertex AI base model 'gemini-9-ultra'"),
    ({"gcs_uri": None}, "no GCS location"),
    ({"gcs_uri": "s3://bucket/x"}, "is not a gs://bucket/prefix URI"),
    ({"gcs_uri": "gs://no-such-bucket/x"}, "GCS bucket 'no-such-bucket' does not exist"),
])
def test_bad_input_fails_before_any_job_or_run(store, vertex, message) -> None:
    import mlflow

    before = len(mlflow.search_runs(search_all_experiments=True, output_format="list"))
    call, genai, storage, _sleeps = _run(store, [fakes.succeeded()], model_name="vertex-bad", **vertex)
    with pytest.raises(ConfigError, match=message):
        call()
    assert genai.tunings.tune_calls == [] and all(not b.objects for b in storage.buckets.values())
    assert len(mlflow.search_runs(search_all_experiments=True, output_format="list")) == before
    assert _versions("vertex-bad") == []


def test_extra_base_models_allow_newer_ids() -> None:
    from projects.tuning.vertex import check_base_model

    assert check_base_model("publishers/google/models/gemini-2.5-pro") == "gemini-2.5-pro"
    assert check_base_model("gemini-3.5-flash", ["gemini-3.5-flash"]) == "gemini-3.5-flash"
    with pytest.raises(ConfigError):
        check_base_model("gemini-3.5-flash")


def test_missing_credentials_is_a_config_error(store, monkeypatch, tmp_path) -> None:
    from projects.tuning.vertex import make_clients

    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "absent.json"))
    with pytest.raises(ConfigError, match="no Google Cloud credentials"):
        make_clients(_settings(store).tuning.vertex)


def test_cli_reports_missing_credentials_in_one_line(store, monkeypatch, capsys) -> None:
    from llmops.cli import main

    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", "/nonexistent/adc.json")
    with pytest.raises(SystemExit) as exited:
        main(["tune", "--backend", "vertex", "--gcs-uri", GCS, "--train-uri", store["train_uri"],
              "--eval-uri", store["eval_uri"]])
    assert exited.value.code == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "no Google Cloud credentials" in lines[0]
    assert _versions("so-qa-assistant") == []


SIGNAL_SCRIPT = """
import sys, time
sys.path.insert(0, {tests!r})
import vertex_fakes as fakes
from pathlib import Path
from llmops.settings import load_settings
from llmops.tracking import configure_mlflow
from projects.tuning.run import run_tuning
settings = load_settings({{"mlflow": {{"tracking_uri": {uri!r}}}, "model": {{"registered_name": "vertex-sig"}},
    "tuning": {{"backend": "vertex", "vertex": {{"gcs_uri": "gs://llmops-tuning/x", "poll_initial_s": 0.2,
    "poll_max_s": 0.2}}}}}})
configure_mlflow(settings)
genai = fakes.FakeGenaiClient([fakes.running(1, 0)], cancel_marker=Path({marker!r}))
run_tuning(settings, {train!r}, {eval!r}, vertex_clients=(genai, fakes.FakeStorageClient()))
"""


def test_sigterm_in_a_real_process_kills_the_run_and_cancels_the_job(store, tmp_path) -> None:
    from mlflow.tracking import MlflowClient

    marker = tmp_path / "cancelled"
    script = SIGNAL_SCRIPT.format(tests=str(Path(__file__).parent), uri=store["uri"], marker=str(marker),
                                  train=store["train_uri"], eval=store["eval_uri"])
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stderr=subprocess.PIPE, text=True)
    run = _wait_for_polling(proc)
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    finished = MlflowClient().get_run(run.info.run_id)
    assert finished.info.status == "KILLED", err
    assert "SIGTERM" in finished.data.tags["llmops.failure_reason"]
    assert marker.read_text() == fakes.JOB_NAME
    assert _versions("vertex-sig") == []


def _wait_for_polling(proc: subprocess.Popen):
    """Wait (bounded) until the subprocess's run is polling the fake job; not a timing assertion."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        runs = [r for r in _all_runs() if r.info.status == "RUNNING"
                and r.data.tags.get("llmops.vertex_job_state") == "JOB_STATE_RUNNING"]
        if runs:
            return runs[0]
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("the tuning subprocess never started polling")


def _all_runs():
    import mlflow

    return mlflow.search_runs(search_all_experiments=True, output_format="list")


@pytest.mark.live
def test_live_vertex_checks_and_upload(tuning_store, monkeypatch) -> None:
    """Real credentials, bucket and upload (set VERTEX_TUNING_GCS_URI); VERTEX_TUNING_LIVE_JOB=1 also tunes."""
    gcs_uri = os.environ.get("VERTEX_TUNING_GCS_URI")
    if not gcs_uri:
        pytest.skip("set VERTEX_TUNING_GCS_URI (and Application Default Credentials) to run")
    try:
        import google.auth

        google.auth.default()
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"no Google credentials: {exc}")
    import mlflow

    from llmops.settings import load_settings
    from llmops.tracking import configure_mlflow
    from projects.tuning.common import load_tuning_data
    from projects.tuning.run import run_tuning
    from projects.tuning.vertex import check_bucket, make_clients, upload_splits

    monkeypatch.setenv("MLFLOW_TRACKING_URI", tuning_store["uri"])
    mlflow.set_tracking_uri(tuning_store["uri"])
    settings = load_settings({"mlflow": {"tracking_uri": tuning_store["uri"]},
                              "tuning": {"backend": "vertex", "vertex": {"gcs_uri": gcs_uri}}})
    genai, storage = make_clients(settings.tuning.vertex)
    check_bucket(storage, gcs_uri)
    data = load_tuning_data(tuning_store["train_uri"], tuning_store["eval_uri"])
    train, _eval = upload_splits(storage, gcs_uri, data)
    assert train.startswith(gcs_uri.rstrip("/"))
    list(genai.tunings.list(config={"page_size": 1}))
    if os.environ.get("VERTEX_TUNING_LIVE_JOB") == "1":
        configure_mlflow(settings)
        out = run_tuning(settings, tuning_store["train_uri"], tuning_store["eval_uri"])
        assert out["endpoint"].startswith("projects/")
