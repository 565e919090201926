"""One SQLite MLflow store per test module (creating one costs seconds), and a tune run to register chains from."""

from __future__ import annotations

import json
import os
from pathlib import Path

import mlflow
import pytest
import yaml

TEMPLATES = Path(__file__).resolve().parents[2] / "prompts" / "templates"


@pytest.fixture(scope="module")
def module_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"


@pytest.fixture
def store(module_store: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> str:
    """The module's store, active in this process and in child processes; an experiment per test."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", module_store)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", module_store)
    mlflow.set_tracking_uri(module_store)
    mlflow.set_registry_uri(module_store)
    mlflow.set_experiment(request.node.name[:60])
    yield module_store
    while mlflow.active_run():
        mlflow.end_run()
    # mlflow keeps both URIs in globals (and writes them to os.environ): leave nothing behind for other tests
    mlflow.set_registry_uri(None)
    mlflow.set_tracking_uri(None)


def copy_template(directory: Path, source: str, name: str, **changes) -> Path:
    """A shipped template under a new name (prompt names are per store), with optional field changes."""
    data = yaml.safe_load((TEMPLATES / f"{source}.yaml").read_text())
    data.update(name=name, **changes)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


EXAMPLES = [
    ("How do I reverse a list in Python?", "Use slicing: `xs[::-1]` or `xs.reverse()` in place."),
    ("How do I sort a dictionary by value?", "Use `sorted(d.items(), key=lambda kv: kv[1])`."),
    ("How do I read a file line by line?", "Iterate over the file object: `for line in open(path): ...`."),
    ("How do I merge two dictionaries?", "Use `{**a, **b}` or `a | b` in Python 3.9+."),
    ("How do I check if a key exists in a dictionary?", "Use `key in d`."),
    ("How do I get the current time in Python?", "Use `datetime.datetime.now()`."),
    ("How do I remove duplicates from a list?", "Use `list(dict.fromkeys(xs))` to keep order."),
    ("How do I convert a string to an int?", "Use `int(s)`; it raises ValueError for bad input."),
]


def make_tune_run(prompt_name: str, prompt_version: int, instruction_hash: str, tmp_path: Path) -> tuple[str, str]:
    """A minimal finished tune run (params, train split, fitted retriever) and an eval run; returns their ids.

    Built here rather than by the tuning step so these tests exercise registration on its own."""
    from backends.retrieval import RetrievalAnswerer

    rows = [{"id": f"e{i}", "question_id": 1000 + i, "question": q, "answer": a,
             "link": f"https://stackoverflow.com/questions/{1000 + i}", "input_text": q, "output_text": a,
             "prompt_name": prompt_name, "prompt_version": prompt_version, "instruction_hash": instruction_hash}
            for i, (q, a) in enumerate(EXAMPLES)]
    work = tmp_path / f"tune-{prompt_name}-{prompt_version}"
    (work / "datasets").mkdir(parents=True)
    (work / "datasets" / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    answerer = RetrievalAnswerer.fit(rows)
    answerer.threshold = 0.2
    answerer.save(work / "retriever")
    with mlflow.start_run(run_name="tune") as run:
        mlflow.log_artifacts(str(work / "datasets"), "datasets")
        mlflow.log_artifacts(str(work / "retriever"), "retriever")
        run_id = run.info.run_id
        mlflow.log_params({"prompt_name": prompt_name, "prompt_version": prompt_version,
                           "instruction_hash": instruction_hash, "dataset_digest": "d" * 16,
                           "train_uri": f"runs:/{run_id}/datasets/train.jsonl"})
        mlflow.set_tags({"llmops.step": "tune", "llmops.retriever_uri": f"runs:/{run_id}/retriever"})
    with mlflow.start_run(run_name="evaluate") as evaluation:
        mlflow.log_metric("answer_token_f1", 0.5)
    return run_id, evaluation.info.run_id


@pytest.fixture
def env_without_llmops() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("LLMOPS_")}


@pytest.fixture
def template_copier():
    return copy_template


@pytest.fixture
def tune_run_factory(tmp_path: Path):
    return lambda name, version, instruction_hash: make_tune_run(name, version, instruction_hash, tmp_path)
