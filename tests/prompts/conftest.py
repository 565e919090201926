"""One SQLite MLflow store per test module (creating one costs seconds), and template copies under new names."""

from __future__ import annotations

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


@pytest.fixture
def env_without_llmops() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("LLMOPS_")}


@pytest.fixture
def template_copier():
    return copy_template

