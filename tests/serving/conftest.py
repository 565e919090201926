"""One SQLite store for the serving tests, with chains made by the real steps (tuning, evaluation) and versions
registered by the real release path; each module registers its own model names from them (registering costs a
few seconds, tuning and evaluating ten). An OpenAI-compatible stub server, in this process, answers for the
openai_compat chains: a test makes it slow or failing to get a version that misbehaves for real."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import pytest

from tests.support.mlflow_scope import mlflow_pointed_at
from tests.support.stub_server import Reply, StubChatServer

TEMPLATES = Path(__file__).resolve().parents[2] / "prompts" / "templates"
sys.path.insert(0, str(Path(__file__).resolve().parent))  # serving_helpers.py


@dataclass
class World:
    root: Path
    tracking_uri: str
    experiment_id: str
    retrieval: dict[str, Any]  # run_release_steps output: tune_run_id, eval_run_id, settings, ...
    stub: StubChatServer
    _remote: dict[str, Any] | None = None

    def register(self, name: str, runs: dict[str, Any] | None = None) -> str:
        """A new version of `name` through the real release path (it points `dev` at it through the ledger)."""
        from registry.release import register

        runs = runs or self.retrieval
        with self.active(), mlflow.start_run(run_name=f"register {name}", experiment_id=self.experiment_id):
            return register(runs["settings"], name, runs["tune_run_id"], runs["eval_run_id"])

    def active(self):
        """This store, whatever the process points at: module fixtures are set up before any test's isolation,
        right after the previous module's teardown (which may have left MLflow pointing at another server)."""
        return mlflow_pointed_at(self.tracking_uri)

    def remote(self, release_steps) -> dict[str, Any]:
        """An openai_compat chain (tuned and evaluated against the stub), made once."""
        if self._remote is None:
            overrides = {"tuning": {"backend": "openai_compat", "validation_percent": 40},
                         "mlflow": {"tracking_uri": self.tracking_uri},
                         "chain": {"provider": {"base_url": self.stub.base_url, "model": "stub-model",
                                                "timeout_s": 10, "max_retries": 0}}}
            with self.active():
                self._remote = release_steps(self.root, _prompt(self.root, "serve-remote"), backend="openai_compat",
                                             overrides=overrides, tag="r")
        return self._remote


def _prompt(root: Path, name: str):
    import yaml

    from prompts.registry import sync_prompt
    from prompts.template import load_template_file

    data = yaml.safe_load((TEMPLATES / "so-qa.yaml").read_text())
    data["name"] = name
    path = root / "templates" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return sync_prompt(load_template_file(path))[0]


@pytest.fixture(scope="session")
def world(tmp_path_factory, release_steps):
    from mlflow.tracking import MlflowClient

    root = tmp_path_factory.mktemp("serving-world")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    stub = StubChatServer(default=Reply(text="Slice it: xs[::-1]")).start()
    with pytest.MonkeyPatch.context() as patch:
        for key in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
            patch.delenv(key, raising=False)
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.setenv("MLFLOW_REGISTRY_URI", uri)
        patch.chdir(root)
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        experiment_id = MlflowClient().create_experiment("serving", artifact_location=(root / "mlartifacts").as_uri())
        mlflow.set_experiment(experiment_id=experiment_id)
        retrieval = release_steps(root, _prompt(root, "serve-qa"), overrides={"tuning": {"validation_percent": 40},
                                                                               "mlflow": {"tracking_uri": uri}})
        yield World(root, uri, experiment_id, retrieval, stub)
    stub.stop()


@pytest.fixture
def store(world, monkeypatch):
    """The session's store, active for this test (the autouse isolation resets MLflow after every test)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", world.tracking_uri)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", world.tracking_uri)
    mlflow.set_tracking_uri(world.tracking_uri)
    mlflow.set_registry_uri(world.tracking_uri)
    mlflow.set_experiment(experiment_id=world.experiment_id)
    yield world
    world.stub.default = Reply(text="Slice it: xs[::-1]")
    world.stub._queue.clear()
