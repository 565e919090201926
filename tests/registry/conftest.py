"""Fixtures for release management: one SQLite store per module and a factory of tiny registered versions.

A tiny models-from-code pyfunc stands in for the chain (the checks read tags, eval runs and the ledger, not
the chain itself); its eval runs carry whatever metrics a test wants, so gates can pass or fail on purpose.
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
GOOD = {"answered_token_f1": 0.30, "answered_rouge_l": 0.20, "cited/mean": 1.0, "coverage": 0.5}
DIGEST = "digest-current"


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

    def make(digest: str = DIGEST) -> str:
        with mlflow.start_run(run_name="prepare_data") as run:
            mlflow.set_tags({"llmops.step": "prepare_data", "llmops.dataset_digest": digest})
        return run.info.run_id

    return make


@pytest.fixture
def make_version(store: str, tiny_model_file: Path) -> Callable[..., str]:
    """make_version(name, metrics=GOOD, digest=DIGEST, drop=()) -> version, with bundle tags and alias dev."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from registry.register import BUNDLE_TAGS

    def make(name: str, metrics: dict[str, float] | None = None, digest: str = DIGEST,
             drop: tuple[str, ...] = ()) -> str:
        with mlflow.start_run(run_name="evaluate") as eval_run:
            mlflow.log_metrics(metrics or GOOD)
            mlflow.set_tags({"llmops.step": "evaluate", "llmops.dataset_digest": digest})
        with mlflow.start_run(run_name="register"):
            info = mlflow.pyfunc.log_model(name="model", python_model=str(tiny_model_file),
                                           pip_requirements=["mlflow"], registered_model_name=name)
        version = str(info.registered_model_version)
        client = MlflowClient()
        bundle = {"prompt_name": "so-qa", "prompt_version": "1", "instruction_hash": "abc123",
                  "dataset_digest": digest, "eval_run_id": eval_run.info.run_id, "tune_run_id": "t" * 32,
                  "chain": "qa_chain"}
        for key in BUNDLE_TAGS:  # whatever the register step promises, so the bundle check is the real one
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
