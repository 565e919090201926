"""Fixtures of the monitoring tests: inference logs written through the core writer (`write_inference_records`, the
one the server uses), and a registered model version whose eval split and training inputs come from the real data
step on data/sample."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from llmops.records import INFERENCE_SCHEMA_VERSION, write_inference_records  # noqa: E402

T0 = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
OTHER_LANGUAGES = Path(__file__).resolve().parent / "data" / "other_languages.jsonl"


def other_language(language: str) -> list[str]:
    rows = [json.loads(line) for line in OTHER_LANGUAGES.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r["question"] for r in rows if r["language"] == language]


def inference_record(question: str, when: datetime, *, version: str = "1", name: str = "so-qa-assistant",
                     status: int = 200, latency_ms: float = 20.0, abstained: bool = False, blocked: bool = False,
                     similarity: float | None = 0.6, digest: str | None = None, answer: str | None = None,
                     role: str = "champion", schema_version: int = INFERENCE_SCHEMA_VERSION) -> dict[str, Any]:
    ok = status < 400
    return {
        "schema_version": schema_version, "request_id": uuid.uuid4().hex, "time": when,
        "latency_ms": latency_ms, "status": status, "error": None if ok else "refused", "endpoint": "invocations",
        "model_name": name, "model_version": version, "model_alias": "production", "role": role, "shadow_of": None,
        "prompt_name": "so-qa", "prompt_version": 1, "instruction_hash": "abc", "dataset_digest": digest,
        "question": question, "answer": (answer if answer is not None else f"See the docs for: {question[:40]}")
        if ok else None,
        "citations": [{"source_id": "1", "link": "https://stackoverflow.com/q/1", "similarity": similarity}]
        if ok and similarity is not None and not abstained else [],
        "abstained": abstained if ok else None, "safety_blocked": blocked if ok else None, "provider": "local",
        "model_id": "retrieval", "session_hash": "s" * 12, "redactions": 0, "replica": "host:1",
    }


def write_log(location: Path | str, questions: Sequence[str], start: datetime = T0, every: timedelta = timedelta(seconds=10),
              parts: int = 1, **fields: Any) -> list[dict[str, Any]]:
    """Write one record per question, `every` apart from `start`, into `parts` part files; returns the records."""
    records = [inference_record(q, start + i * every, **fields) for i, q in enumerate(questions)]
    for chunk in np.array_split(np.arange(len(records)), parts):
        if len(chunk):
            write_inference_records(str(location), [records[i] for i in chunk])
    return records


@pytest.fixture
def log_writer(tmp_path: Path) -> Callable[..., Path]:
    location = tmp_path / "inference-log"

    def write(questions: Sequence[str], **kwargs: Any) -> Path:
        write_log(location, questions, **kwargs)
        return location

    return write


def cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """`llmops ARGS` in-process: (exit code, stdout, the one `error:` line or '')."""
    from llmops.cli import main

    with pytest.raises(SystemExit) as info:
        main(args)
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(errors) <= 1, errors
    assert "Traceback" not in captured.err, captured.err
    return int(info.value.code or 0), captured.out, errors[0] if errors else ""


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


def monitor_runs() -> list:
    import mlflow

    return mlflow.search_runs(search_all_experiments=True, output_format="list",
                              filter_string="tags.`llmops.step` = 'monitor'", order_by=["start_time ASC"])
