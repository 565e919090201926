"""LoRA tuning of a tiny random GPT-2 built in the test: loss falls, the logged model reloads and generates,
the same seed gives the same adapter, bad inputs stop before training, Ctrl-C leaves a KILLED run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("peft")
pytest.importorskip("transformers")

from llmops.errors import ConfigError, DataError, NotFoundError

HF = {"epochs": 8, "learning_rate": 0.03, "batch_size": 4, "lora_r": 16, "lora_alpha": 16,
      "target_modules": ["c_attn", "c_proj", "c_fc"], "max_new_tokens": 8}


def _settings(store, model_dir, model_name="hf-qa", seed=0, **hf):
    from llmops.settings import load_settings

    return load_settings({"mlflow": {"tracking_uri": store["uri"]}, "model": {"registered_name": model_name},
                          "tuning": {"backend": "hf", "seed": seed,
                                     "hf": {**HF, "base_model_path": str(model_dir), **hf}}})


def _tune(store, settings, **kwargs):  # noqa: D103
    from llmops.tracking import configure_mlflow
    from projects.tuning.run import run_tuning

    configure_mlflow(settings)
    return run_tuning(settings, kwargs.pop("train_uri", store["train_uri"]),
                      kwargs.pop("eval_uri", store["eval_uri"]), **kwargs)


def _versions(name: str) -> list:
    from mlflow.tracking import MlflowClient

    return MlflowClient().search_model_versions(f"name='{name}'")


def _runs() -> list:
    import mlflow

    return mlflow.search_runs(search_all_experiments=True, output_format="list")


def test_loss_falls_curves_logged_and_the_released_model_reloads_in_a_fresh_process(store, tiny_model,
                                                                                   tmp_path) -> None:
    import mlflow.artifacts
    from mlflow.tracking import MlflowClient

    from backends.hf import HFBackend
    from evaluation.run import run_evaluate_step
    from registry.release import register

    class Progress:  # what the command's progress bar is told (the bar itself draws only on a terminal)
        def __init__(self) -> None:
            self.total, self.completed = None, []

        def start(self, total):
            self.total = total

        def set(self, completed=None, description=None):
            self.completed.append(completed)

    settings = _settings(store, tiny_model, model_name="hf-happy")
    progress = Progress()
    out = _tune(store, settings, progress=progress)
    client = MlflowClient()
    run = client.get_run(out["run_id"])
    assert run.info.status == "FINISHED"
    assert run.info.run_name == f"tune hf {tiny_model.name} {store['prompt'].name}@v{store['prompt'].version}"
    params = run.data.params
    assert params["tuning.backend"] == "hf" and params["tuning.base_model"] == str(tiny_model.resolve())
    assert params["hp.lora_r"] == "16" and params["tuning.seed"] == "0" and params["dataset_digest"]
    fit, validation = int(params["fit_examples"]), int(params["validation_examples"])
    assert fit + validation == 12 and validation > 0

    train = [m.value for m in sorted(client.get_metric_history(run.info.run_id, "train_loss"), key=lambda m: m.step)]
    valid = [m.value for m in sorted(client.get_metric_history(run.info.run_id, "validation_loss"),
                                     key=lambda m: m.step)]
    steps = -(-fit // 4)  # per epoch: fit rows / batch 4
    assert len(train) == 8 * steps and len(valid) == 8 + 1
    assert progress.total == 8 * steps and progress.completed == list(range(1, 8 * steps + 1))
    assert valid[-1] < 0.95 * valid[0]  # loss on the held-out validation rows falls
    assert sum(train[-steps:]) < sum(train[:steps])
    spec = json.loads(run.data.tags["llmops.provider_spec"])
    assert spec["kind"] == "hf" and spec["base_model"] == str(tiny_model.resolve())
    assert spec["artifacts"]["adapter"] == out["adapter_uri"] and spec["artifacts"]["grounding"]
    assert _versions("hf-happy") == []  # tuning registers nothing: the release path does

    adapter = Path(mlflow.artifacts.download_artifacts(out["adapter_uri"], dst_path=str(tmp_path / "adapter")))
    assert (adapter / "adapter_config.json").is_file() and (adapter / "adapter_model.safetensors").is_file()

    with mlflow.start_run(run_name="evaluate") as evaluation:
        run_evaluate_step(out["run_id"], store["eval_uri"], settings=settings)
    with mlflow.start_run(run_name="register"):
        version = register(settings, "hf-happy", out["run_id"], evaluation.info.run_id)
    assert str(client.get_model_version_by_alias("hf-happy", "dev").version) == version
    tags = client.get_model_version("hf-happy", version).tags
    assert tags["llmops.tune_run_id"] == run.info.run_id and tags["llmops.chain"] == "so-qa-hf-lora"
    assert tags["llmops.prompt_version"] == str(store["prompt"].version)
    pins = tags["llmops.requirements"].split(",")
    assert any(p.startswith("torch==") for p in pins) and any(p.startswith("peft==") for p in pins)

    question = "who created python ?"
    expected = HFBackend.load(tiny_model, adapter, max_new_tokens=8).generate(
        question, store["prompt"].format(question=question)).text
    script = ("import json, mlflow; m = mlflow.pyfunc.load_model('models:/hf-happy@dev'); "
              f"print('RESULT' + json.dumps(m.predict([{{'question': {question!r}}}])))")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, check=False,
                          env={**os.environ, "MLFLOW_TRACKING_URI": store["uri"]})
    assert proc.returncode == 0, proc.stderr[-3000:]
    (line,) = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")]
    (answer,) = json.loads(line.removeprefix("RESULT"))
    assert answer["answer"] == expected and answer["chain"] == "so-qa-hf-lora" and answer["provider"] == "hf"
    assert answer["prompt_version"] == store["prompt"].version


def test_same_inputs_and_seed_give_the_same_adapter(store, tiny_model, tmp_path) -> None:
    import torch
    from safetensors.torch import load_file

    from projects.tuning.common import load_tuning_data
    from projects.tuning.hf import train_lora

    data = load_tuning_data(store["train_uri"], store["eval_uri"])
    cfg = _settings(store, tiny_model, epochs=1).tuning.hf
    results = {name: train_lora(tiny_model, data, cfg, seed, tmp_path / name)
               for name, seed in (("a", 7), ("b", 7), ("c", 8))}
    weights = {name: load_file(str(tmp_path / name / "adapter_model.safetensors")) for name in results}
    assert results["a"].train_loss == results["b"].train_loss
    assert all(torch.equal(weights["a"][k], weights["b"][k]) for k in weights["a"])
    assert results["a"].train_loss != results["c"].train_loss
    assert not all(torch.equal(weights["a"][k], weights["c"][k]) for k in weights["a"])


def test_bad_inputs_fail_before_training_and_register_nothing(store, tiny_model, tmp_path) -> None:
    no_weights = tmp_path / "no-weights"
    shutil.copytree(tiny_model, no_weights)
    (no_weights / "model.safetensors").unlink()
    not_jsonl = tmp_path / "eval.txt"
    not_jsonl.write_text("this is not json\n")
    empty_answer = tmp_path / "bad.jsonl"
    row = json.loads(Path(store["train_uri"]).read_text().splitlines()[0])
    empty_answer.write_text(json.dumps({**row, "output_text": "  "}) + "\n")
    before = len(_runs())
    cases = [
        ({"base_model_path": str(no_weights)}, {}, ConfigError, "has no weights"),
        ({"base_model_path": str(tmp_path / "absent")}, {}, ConfigError, "does not exist"),
        ({}, {"train_uri": str(tmp_path / "missing.jsonl")}, NotFoundError, "missing.jsonl"),
        ({}, {"eval_uri": str(not_jsonl)}, DataError, "line 1 is not JSON"),
        ({}, {"train_uri": str(empty_answer)}, DataError, "output_text is missing or empty"),
    ]
    for hf, uris, error, message in cases:
        with pytest.raises(error, match=message):
            _tune(store, _settings(store, tiny_model, model_name="hf-bad", **hf), **uris)
    assert len(_runs()) == before and _versions("hf-bad") == []


def test_ctrl_c_in_a_real_process_leaves_a_killed_run_and_no_version(store, tiny_model, tmp_path) -> None:
    from mlflow.tracking import MlflowClient

    cmd = [sys.executable, "-m", "llmops.cli", "tune", "--backend", "hf", "--base-model", str(tiny_model),
           "--epochs", "100", "--train-uri", store["train_uri"], "--eval-uri", store["eval_uri"]]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "MLFLOW_TRACKING_URI": store["uri"]})
    run_id = _wait_for_training(proc)
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]  # the CLI's exit code for an interrupted command
    run = MlflowClient().get_run(run_id)
    assert run.info.status == "KILLED"
    assert run.data.tags["llmops.failure_reason"].startswith("interrupted")
    assert "llmops.provider_spec" not in run.data.tags  # an interrupted run produced nothing to release


def _wait_for_training(proc: subprocess.Popen) -> str:
    """Bounded wait until the subprocess's run has logged its first epoch (not a timing assertion)."""
    from mlflow.tracking import MlflowClient

    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        for run in _runs():
            if run.info.status == "RUNNING" and run.data.params.get("tuning.backend") == "hf" and \
                    MlflowClient().get_metric_history(run.info.run_id, "train_loss"):
                return run.info.run_id
        time.sleep(0.3)
    proc.kill()
    raise AssertionError("the tuning subprocess never started training")
