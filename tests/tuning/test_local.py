"""The local (retrieval) backend as a tuning run: same logging as the others, and reproducible."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest


def _tune(store, **backend):
    from llmops.settings import load_settings
    from llmops.tracking import configure_mlflow
    from projects.tuning.run import run_tuning

    settings = load_settings({"mlflow": {"tracking_uri": store["uri"]}, "backend": backend,
                              "tuning": {"backend": "local", "validation_percent": 30}})
    configure_mlflow(settings)
    return run_tuning(settings, store["train_uri"], store["eval_uri"])


def _files_digest(directory: Path) -> str:
    hasher = hashlib.sha256()
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            hasher.update(path.name.encode() + path.read_bytes())
    return hasher.hexdigest()


def test_local_run_logs_like_any_tuning_run_and_repeats_exactly(store, tmp_path) -> None:
    import mlflow.artifacts
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    first = _tune(store, abstain_value=0.3)
    run = client.get_run(first["run_id"])
    assert run.info.status == "FINISHED"
    params, metrics = run.data.params, run.data.metrics
    assert params["tuning.backend"] == "local" and params["tuning.base_model"] == "retrieval-tfidf"
    assert params["hp.abstain_value"] == "0.3" and params["prompt_version"] == str(store["prompt"].version)
    assert params["train_examples"] == "12" and params["eval_examples"] == "4"
    # the threshold is chosen on a validation share of train, never on the eval split that is gated
    validation, fit = int(params["validation_examples"]), int(params["fit_examples"])
    assert validation > 0 and validation + fit == 12 and params["tuning.validation_percent"] == "30"
    assert {"threshold", "validation_utility", "validation_coverage", "duration_s"} <= set(metrics)
    assert not any(name.startswith("eval_") for name in metrics)
    curve = client.get_metric_history(run.info.run_id, "validation_utility_at_threshold")
    assert sorted(m.step for m in curve) == list(range(21))
    # the chosen threshold's utility is the best on the curve (it maximises over all candidate thresholds)
    assert metrics["validation_utility"] >= max(m.value for m in curve) - 1e-9
    assert metrics["index_size"] == 12  # the final index holds every train row
    assert {d.dataset.name for d in run.inputs.dataset_inputs} == {"so-qa-train", "so-qa-eval"}
    assert run.data.tags["llmops.retriever_uri"] == first["retriever_uri"]
    spec = json.loads(run.data.tags["llmops.provider_spec"])
    assert (spec["kind"], spec["artifacts"]) == ("retrieval", {"retriever": first["retriever_uri"]})

    second = _tune(store, abstain_value=0.3)
    again = client.get_run(second["run_id"]).data
    assert {k: v for k, v in again.metrics.items() if k != "duration_s"} == \
        {k: v for k, v in metrics.items() if k != "duration_s"}
    a = Path(mlflow.artifacts.download_artifacts(first["retriever_uri"], dst_path=str(tmp_path / "a")))
    b = Path(mlflow.artifacts.download_artifacts(second["retriever_uri"], dst_path=str(tmp_path / "b")))
    assert _files_digest(a) == _files_digest(b)


def test_local_failure_marks_the_run_failed_with_the_reason(store, monkeypatch) -> None:
    import mlflow

    from llmops.errors import BackendError
    from projects.tuning import local

    def broken(*args, **kwargs):
        raise BackendError("cannot choose a threshold on an empty validation split")

    monkeypatch.setattr(local, "tune_retrieval", broken)
    with pytest.raises(BackendError):
        _tune(store)
    run = mlflow.search_runs(search_all_experiments=True, order_by=["attributes.start_time DESC"],
                             max_results=1, output_format="list")[0]
    assert run.info.status == "FAILED"
    assert run.data.tags["llmops.failure_reason"] == \
        "BackendError: cannot choose a threshold on an empty validation split"
