"""One release path for every backend, through the real steps (`llmops pipeline run` driving the MLproject entry
points as child runs) on real SQLite stores: prepare -> tune -> evaluate -> register -> promote.

- local, with a test split and an unrelated dataset prepared beside it: the digest every step records is the
  data step's, and "eval dataset is current" compares within the lineage;
- hf, a tiny random GPT-2 built here: the default gates refuse it (it cannot beat a random training answer),
  structural gates let it through dev -> staging -> production, and a fresh process answers by alias;
- vertex, the real SDKs against a fake Google Cloud on 127.0.0.1 (vertex_rest.py): to staging with the default
  gates (the "tuned" endpoint learned the uploaded training file);
- real Stack Exchange data where a random answer scores nearly as well as the model: refused, naming the baseline.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tuning"))
from vertex_rest import ENDPOINT, FakeGoogleCloud  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
MODEL = "so-qa-assistant"
TOY_GATES = """# Structural gates for a tiny random model that cannot answer: the release machinery, not quality.
mode: enforced
targets:
  staging:
    - {metric: n_rows, min: 30}
    - {metric: n_train, min: 50}
    - {metric: cited/mean, min: 1.0}
  production:
    - {metric: n_rows, min: 30}
    - {metric: answered_token_f1, beats: champion, margin: -1.0}
"""

pytestmark = pytest.mark.e2e


def _env(workdir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLMOPS_", "MLFLOW_", "GOOGLE_"))
           and k != "STORAGE_EMULATOR_HOST"}
    env.update(MLFLOW_TRACKING_URI=f"sqlite:///{workdir / 'mlflow.db'}",
               LLMOPS_DATA__OUTPUT_DIR=str(workdir / "datasets"), MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false",
               PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", **extra)
    return env


def _llmops(workdir: Path, *args: str, env: dict[str, str] | None = None,
            timeout: int = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "llmops"), *args], cwd=workdir, env=env or _env(workdir), capture_output=True,
                          text=True, timeout=timeout, check=False)


def _ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def _client(workdir: Path):
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    return MlflowClient(uri, uri)


def _steps(client) -> dict[str, list]:
    experiment = client.get_experiment_by_name("llmops")
    out: dict[str, list] = {}
    for run in client.search_runs([experiment.experiment_id], max_results=500):
        out.setdefault(run.data.tags.get("llmops.step", run.info.run_name), []).append(run)
    return out


def _answer_in_fresh_process(workdir: Path, env: dict[str, str], alias: str = "staging") -> dict:
    script = ("import json, mlflow.pyfunc; m = mlflow.pyfunc.load_model('models:/so-qa-assistant@" + alias + "'); "
              "print('RESULT' + json.dumps(m.predict([{'question': 'How do I reverse a list in Python?'}])[0]))")
    proc = subprocess.run([sys.executable, "-c", script], cwd=workdir, env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")).removeprefix("RESULT"))


def _bundle_shown(workdir: Path, version: str, env: dict[str, str] | None = None) -> dict[str, str]:
    from registry.release import BUNDLE_KEYS

    out = _ok(_llmops(workdir, "registry", "show", MODEL, version, env=env))
    assert "bundle: PASS" in out and "MISSING" not in out
    shown = dict(line.strip().split(": ", 1) for line in out.splitlines() if line.startswith("  ") and ": " in line)
    assert set(BUNDLE_KEYS) <= set(shown)
    return shown


def test_local_pipeline_with_a_test_split_and_an_unrelated_dataset_beside_it(tmp_path: Path) -> None:
    out = _ok(_llmops(tmp_path, "pipeline", "run", "--test-percent", "10"))
    assert f"models:/{MODEL}@staging (version 1)" in out
    client = _client(tmp_path)
    steps = _steps(client)
    (prep,) = steps["prepare_data"]
    (tune,) = steps["tune"]
    (evaluation,) = steps["evaluate"]
    version = client.get_model_version_by_alias(MODEL, "staging")
    digest = prep.data.tags["llmops.dataset_digest"]
    # one digest, computed once (by the data step, over train+eval+test) and recorded alike by every step
    assert prep.data.params["dataset_scope"] == tune.data.params["dataset_scope"] == "train+eval+test"
    assert tune.data.params["dataset_digest"] == evaluation.data.params["dataset_digest"] == digest
    assert version.tags["llmops.dataset_digest"] == digest and version.tags["llmops.dataset_scope"] == "train+eval+test"
    lineage = prep.data.tags["llmops.dataset_lineage"]
    assert tune.data.params["dataset_lineage"] == evaluation.data.params["dataset_lineage"] == lineage
    assert version.tags["llmops.dataset_lineage"] == lineage
    # the threshold was chosen on validation rows carved from train, and the eval split was scored beside baselines
    assert int(tune.data.params["validation_examples"]) > 0
    metrics = evaluation.data.metrics
    assert metrics["vs/random_answer/answered_token_f1/ci_low"] >= 0.05 and metrics["n_rows"] >= 30

    # another dataset prepared later in the same experiment (another lineage) leaves this one current
    _ok(_llmops(tmp_path, "data", "prepare", "--tag-pattern", "pandas|numpy", "--eval-percent", "30"))
    assert len(_steps(client)["prepare_data"]) == 2
    _ok(_llmops(tmp_path, "registry", "approve", MODEL, str(version.version), "--by", "rita"))
    promoted = _ok(_llmops(tmp_path, "registry", "promote", MODEL, str(version.version), "--to", "production",
                           "--reason", "ship"))
    assert "PASS  eval dataset is current" in promoted and f"lineage {lineage}" in promoted
    assert str(client.get_model_version_by_alias(MODEL, "production").version) == str(version.version)


@pytest.fixture(scope="module")
def sample_vocab_model(tmp_path_factory, tiny_lm_factory) -> Path:
    """A tiny random GPT-2 whose word-level vocabulary covers data/sample and the prompt template."""
    texts = []
    for name in ("posts_questions.jsonl", "posts_answers.jsonl"):
        for line in (REPO / "data" / "sample" / name).read_text().splitlines():
            row = json.loads(line)
            texts += [row.get("title") or "", row.get("body") or ""]
    texts.append((REPO / "prompts" / "templates" / "so-qa.yaml").read_text())
    return tiny_lm_factory(tmp_path_factory.mktemp("tiny") / "tiny-gpt2", texts)


def test_hf_pipeline_releases_a_tiny_model_only_through_the_gates(tmp_path: Path, sample_vocab_model: Path) -> None:
    env = _env(tmp_path, LLMOPS_TUNING__HF__MAX_NEW_TOKENS="12", LLMOPS_TUNING__HF__BATCH_SIZE="8",
               LLMOPS_TUNING__HF__MAX_LENGTH="128")
    args = ("pipeline", "run", "--backend", "hf", "--base-model", str(sample_vocab_model), "--epochs", "1",
            "--limit", "200")
    refused = _llmops(tmp_path, *args, env=env)
    assert refused.returncode == 8, refused.stdout[-2000:] + refused.stderr[-2000:]
    assert "FAIL  gate answered_token_f1 vs random_answer" in refused.stderr
    client = _client(tmp_path)
    version = client.get_model_version(MODEL, "1")
    assert version.aliases == ["dev"]  # registered through the one path, never promoted past the gates

    gates = tmp_path / "toy-gates.yaml"
    gates.write_text(TOY_GATES)
    env["LLMOPS_EVALUATION__GATES_FILE"] = str(gates)
    out = _ok(_llmops(tmp_path, *args, env=env))
    assert "[tune] reusing run" in out and f"models:/{MODEL}@staging" in out
    staging = client.get_model_version_by_alias(MODEL, "staging")
    shown = _bundle_shown(tmp_path, str(staging.version), env)
    assert (shown["provider"], shown["chain"], shown["tuning_backend"]) == ("hf", "so-qa-hf-lora", "hf")
    assert json.loads(shown["provider_spec"])["base_model"] == str(sample_vocab_model.resolve())
    answer = _answer_in_fresh_process(tmp_path, env)
    assert answer["provider"] == "hf" and answer["chain"] == "so-qa-hf-lora"
    assert answer["model_version"] == str(staging.version) and answer["citations"]

    _ok(_llmops(tmp_path, "registry", "approve", MODEL, str(staging.version), "--by", "rita", env=env))
    _ok(_llmops(tmp_path, "registry", "promote", MODEL, str(staging.version), "--to", "production", "--reason",
                "tiny", env=env))
    assert str(client.get_model_version_by_alias(MODEL, "production").version) == str(staging.version)


def test_vertex_pipeline_through_the_real_sdks_to_staging(tmp_path: Path) -> None:
    cloud = FakeGoogleCloud()
    try:
        env = _env(tmp_path, **cloud.environment(tmp_path), LLMOPS_TUNING__VERTEX__GCS_URI="gs://llmops-tuning/sft",
                   LLMOPS_TUNING__VERTEX__POLL_INITIAL_S="0", LLMOPS_CHAIN__PROVIDER__MAX_RETRIES="0")
        out = _ok(_llmops(tmp_path, "pipeline", "run", "--backend", "vertex", env=env))
        assert f"models:/{MODEL}@staging (version 1)" in out
        client = _client(tmp_path)
        (tune,) = _steps(client)["tune"]
        assert tune.data.tags["llmops.vertex_endpoint"] == ENDPOINT
        uploads = cloud.buckets["llmops-tuning"]
        digest = tune.data.params["dataset_digest"]
        assert set(uploads) == {f"sft/{digest}/train.jsonl", f"sft/{digest}/validation.jsonl"}
        evaluated = len(cloud.generate_calls)  # the eval rows, and the staging smoke questions
        assert evaluated >= int(_steps(client)["evaluate"][0].data.metrics["n_rows"])
        assert all(call.endswith(f"{ENDPOINT}:generateContent") for call in cloud.generate_calls)
        shown = _bundle_shown(tmp_path, "1", env)
        assert (shown["provider"], shown["model_id"], shown["chain"]) == ("vertex", ENDPOINT, "so-qa-vertex")
        answer = _answer_in_fresh_process(tmp_path, env)
        assert len(cloud.generate_calls) == evaluated + 1 and cloud.generate_calls[-1].endswith(
            f"{ENDPOINT}:generateContent")
        assert answer["provider"] == "vertex" and answer["model_id"] == ENDPOINT and answer["answer"]
        # and on to production with the default gates (no champion yet), after an approval
        _ok(_llmops(tmp_path, "registry", "approve", MODEL, "1", "--by", "rita", env=env))
        promoted = _ok(_llmops(tmp_path, "registry", "promote", MODEL, "1", "--to", "production", "--reason",
                               "tuned gemini", env=env))
        assert "PASS  gate answered_token_f1 vs champion" in promoted
        assert str(client.get_model_version_by_alias(MODEL, "production").version) == "1"
    finally:
        cloud.stop()


def test_a_dataset_too_small_to_gate_is_refused_by_a_gate_not_a_crash(tmp_path: Path) -> None:
    refused = _llmops(tmp_path, "pipeline", "run", "--limit", "40")
    assert refused.returncode == 8, refused.stdout[-2000:] + refused.stderr[-2000:]
    assert "Traceback" not in refused.stderr
    assert any(line.startswith("FAIL  gate n_rows: ") and "(needs >= 30.0)" in line
               for line in refused.stderr.splitlines())
    client = _client(tmp_path)
    assert client.get_model_version(MODEL, "1").aliases == ["dev"]


def test_real_data_where_a_random_answer_does_as_well_is_refused_naming_the_baseline(tmp_path: Path,
                                                                                   shared_data: Path) -> None:
    folder = shared_data / "stackexchange"
    tables = {"bigquery-public-data.stackoverflow.posts_questions": str(folder / "posts_questions.parquet"),
              "bigquery-public-data.stackoverflow.posts_answers": str(folder / "posts_answers.parquet")}
    env = _env(tmp_path, LLMOPS_WAREHOUSE__TABLES=json.dumps(tables))
    refused = _llmops(tmp_path, "pipeline", "run", "--tag-pattern", ".*", "--answer-date-cutoff", "1970-01-01",
                      env=env)
    assert refused.returncode == 8, refused.stdout[-2000:] + refused.stderr[-2000:]
    lines = refused.stderr.splitlines()
    # the absolute floor alone would have let it through; the lead over a random training answer does not
    assert any(line.startswith("PASS  gate answered_token_f1: ") for line in lines)
    (lead,) = [line for line in lines if line.startswith("FAIL  gate answered_token_f1 vs random_answer")]
    assert "model - random_answer = +0.0" in lead and "needs lower bound >= +0.050" in lead
    client = _client(tmp_path)
    assert client.get_model_version(MODEL, "1").aliases == ["dev"]
