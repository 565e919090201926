"""Fixtures for release management: one SQLite store per module and a factory of tiny registered versions.

A tiny models-from-code pyfunc stands in for the chain (the checks read tags, eval runs and the ledger, not
the chain itself). Its eval run is an evaluation's shape made by evaluation's own functions from per-row scores
a test chooses (every answered row scores `quality`, the random baseline 0.12), so gates - absolute, against the
baselines and against the champion on the same rows - pass or fail on purpose. The real steps are tested end to
end in tests/foundation and tests/registry/test_release.py.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TINY_MODEL = '''
import mlflow


class Echo(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return [{"answer": "echo: " + str(q)} for q in model_input["question"]]


mlflow.models.set_model(Echo())
'''
GOOD = 0.30  # answered token F1 of a good version
DIGEST = "digest-current"
LINEAGE = "lineage-1"
EVAL_ROWS = 40


@pytest.fixture(scope="module")
def module_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("store")


@pytest.fixture
def store(module_store: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """This module's SQLite store, active for this test and its child processes."""
    import mlflow

    uri = f"sqlite:///{module_store / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("LLMOPS_MLFLOW__EXPERIMENT_NAME", "llmops")
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    mlflow.set_experiment("llmops")
    yield uri
    while mlflow.active_run():
        mlflow.end_run()


@pytest.fixture(scope="module")
def tiny_model_file(module_store: Path) -> Path:
    path = module_store / "tiny_model.py"
    path.write_text(TINY_MODEL, encoding="utf-8")
    return path


@pytest.fixture
def prepare_run(store: str) -> Callable[..., str]:
    """prepare_run(digest) -> a finished prepare_data run: what 'the current eval dataset' means."""
    import mlflow

    def make(digest: str = DIGEST, lineage: str = LINEAGE) -> str:
        with mlflow.start_run(run_name="prepare_data") as run:
            mlflow.set_tags({"llmops.step": "prepare_data", "llmops.dataset_digest": digest,
                             "llmops.dataset_lineage": lineage})
        return run.info.run_id

    return make


def log_eval_run(quality: float, digest: str = DIGEST, lineage: str = LINEAGE, coverage: float = 0.5,
                 n_rows: int = EVAL_ROWS, n_train: int = 200) -> str:
    """A finished eval run: rows table, metrics computed by evaluation's functions, the dataset's identity."""
    import mlflow
    import numpy as np
    import pandas as pd

    from evaluation.baselines import BaselineRows, always_abstain, relative_metrics, utility_rows
    from evaluation.run import ROWS_ARTIFACT, answered_metrics

    abstained = np.arange(n_rows) >= round(coverage * n_rows)
    f1 = np.where(abstained, 0.0, quality)
    rows = pd.DataFrame({"row_id": [f"r{i}" for i in range(n_rows)], "token_f1": f1, "rouge_l": f1 * 2 / 3,
                         "cited": 1.0, "response_abstained": abstained})
    rows["utility"] = utility_rows(f1, abstained, 0.2)
    random = BaselineRows("random_answer", np.full(n_rows, 0.12), np.full(n_rows, 0.08),
                          np.zeros(n_rows, dtype=bool), utility_rows(np.full(n_rows, 0.12), np.zeros(n_rows, bool),
                                                                     0.2))
    metrics = {**answered_metrics(rows), "cited/mean": 1.0, "n_rows": float(n_rows), "n_train": float(n_train),
               **relative_metrics(rows, [random, always_abstain(n_rows, 0.2)], 0.2, samples=200, confidence=0.95,
                                  seed=0)}
    with mlflow.start_run(run_name="evaluate") as run:
        mlflow.log_params({"eval_digest": f"rows-{digest}", "dataset_digest": digest, "dataset_lineage": lineage})
        mlflow.log_metrics(metrics)
        mlflow.log_table(rows, artifact_file=ROWS_ARTIFACT)
        mlflow.set_tags({"llmops.step": "evaluate", "llmops.dataset_digest": digest})
    return run.info.run_id


@pytest.fixture
def make_version(store: str, tiny_model_file: Path) -> Callable[..., str]:
    """make_version(name, quality=GOOD, digest=DIGEST, drop=()) -> version, with bundle tags and alias dev."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from registry.release import BUNDLE_KEYS

    def make(name: str, quality: float = GOOD, digest: str = DIGEST, drop: tuple[str, ...] = (),
             lineage: str = LINEAGE, **eval_kwargs) -> str:
        eval_run_id = log_eval_run(quality, digest, lineage, **eval_kwargs)
        with mlflow.start_run(run_name="register"):
            info = mlflow.pyfunc.log_model(name="model", python_model=str(tiny_model_file),
                                           pip_requirements=["mlflow"], registered_model_name=name)
        version = str(info.registered_model_version)
        client = MlflowClient()
        bundle = {"prompt_name": "so-qa", "prompt_version": "1", "instruction_hash": "abc123",
                  "dataset_digest": digest, "dataset_lineage": lineage, "eval_run_id": eval_run_id,
                  "tune_run_id": "t" * 32, "chain": "qa_chain"}
        for key in BUNDLE_KEYS:  # whatever the register step promises, so the bundle check is the real one
            if key not in drop:
                client.set_model_version_tag(name, version, f"llmops.{key}", bundle.get(key, f"{key}-1"))
        client.set_registered_model_alias(name, "dev", version)
        return version

    return make


@pytest.fixture
def policy_file(tmp_path: Path) -> Callable[..., Path]:
    """Write a copy of registry/policy.yaml with some keys replaced (top-level and aliases.*)."""
    import yaml

    base = yaml.safe_load((REPO / "registry" / "policy.yaml").read_text(encoding="utf-8"))

    def write(aliases: dict | None = None, **top: object) -> Path:
        data = {**base, **top}
        if aliases:
            data["aliases"] = {**base["aliases"], **{k: {**base["aliases"].get(k, {}), **v}
                                                     for k, v in aliases.items()}}
        path = tmp_path / "policy.yaml"
        path.write_text(yaml.safe_dump(data), encoding="utf-8")
        return path

    return write


@pytest.fixture
def cli(capsys: pytest.CaptureFixture) -> Callable[..., tuple[int, str, str]]:
    """cli(*args) runs `llmops ARGS` in this process: (exit code, stdout, stderr)."""
    from llmops.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        out, err = capsys.readouterr()
        return code, out, err

    return run


LLMOPS = str(Path(sys.executable).parent / "llmops")


@pytest.fixture
def fast_policy(policy_file) -> Path:
    """The shipped policy without the (slow, separately tested) fresh-process validation."""
    return policy_file(aliases={"staging": {"infra_validation": False}})


@pytest.fixture
def alias_version(store: str) -> Callable[[str, str], str | None]:
    """The version an alias points at now, or None when the alias is not set."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    def version(name: str, alias: str) -> str | None:
        try:
            return str(MlflowClient().get_model_version_by_alias(name, alias).version)
        except MlflowException:
            return None

    return version
