"""Fixtures of the monitoring tests: a registered model version whose eval split and training inputs come from the
real data step on data/sample (helpers, such as the log writer, live in helpers.py beside this file)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # helpers.py and pools.py


@pytest.fixture(scope="module")
def lineage(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The real data step on data/sample (every tag, 40% eval) in a module store, then an evaluate run (param
    eval_uri), a tune run (param train_uri) and a registered version tagged with their ids and the dataset digest,
    as the register step tags them. Returns the store URI, the model name/version and the splits' questions."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from llmops.cli import main
    from llmops.dataset import read_examples

    root = tmp_path_factory.mktemp("lineage")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.chdir(root)
        with pytest.raises(SystemExit) as info:
            main(["data", "prepare", "--output-dir", str(root / "datasets"), "--tag-pattern", ".",
                  "--answer-date-cutoff", "2000-01-01", "--eval-percent", "40"])
        assert not info.value.code
        mlflow.set_tracking_uri(uri)
        (prep,) = mlflow.search_runs(search_all_experiments=True, output_format="list")
        tags = prep.data.tags
        train_uri, eval_uri, digest = tags["llmops.train_uri"], tags["llmops.eval_uri"], tags["llmops.dataset_digest"]
        mlflow.set_experiment("llmops")
        with mlflow.start_run(run_name="tune") as tune:
            mlflow.log_params({"train_uri": train_uri, "eval_uri": eval_uri})
        with mlflow.start_run(run_name="evaluate") as evaluate:
            mlflow.log_params({"eval_uri": eval_uri})
        client = MlflowClient(uri, uri)
        client.create_registered_model("so-qa-assistant")
        lineage_tags = {"llmops.eval_run_id": evaluate.info.run_id, "llmops.tune_run_id": tune.info.run_id,
                        "llmops.dataset_digest": digest}
        versions = [client.create_model_version("so-qa-assistant", "file:///nonexistent", tags=lineage_tags)
                    for _ in range(2)]
        client.set_registered_model_alias("so-qa-assistant", "production", versions[0].version)
        train = [r["question"] for r in read_examples(train_uri)]
        evals = [r["question"] for r in read_examples(eval_uri)]
        mlflow.set_tracking_uri(None)
    return {"uri": uri, "root": root, "digest": digest, "train": train, "eval": evals, "eval_uri": eval_uri,
            "train_uri": train_uri, "versions": [v.version for v in versions]}


@pytest.fixture
def store(lineage: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> str:
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", lineage["uri"])
    mlflow.set_tracking_uri(lineage["uri"])
    mlflow.set_registry_uri(lineage["uri"])
    return lineage["uri"]


