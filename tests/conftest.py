"""Shared fixtures: a real SQLite MLflow store per test, settings isolated from the developer's machine."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
VENV_BIN = Path(sys.executable).parent


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Every test runs in its own directory with no LLMOPS_* / MLflow variables leaking in."""
    for key in list(os.environ):
        if key.startswith("LLMOPS_") or key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_RUN_ID",
                                                 "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    monkeypatch.setenv("PATH", f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    _reset_mlflow_globals()


def _reset_mlflow_globals() -> None:
    """MLflow keeps the tracking/registry URI in module globals and mirrors them into os.environ: undo both."""
    import mlflow
    import mlflow.tracking._model_registry.utils as registry_utils

    while mlflow.active_run():
        mlflow.end_run()
    mlflow.set_tracking_uri(None)
    registry_utils._registry_uri = None
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID",
                "MLFLOW_EXPERIMENT_NAME"):
        os.environ.pop(key, None)


@pytest.fixture
def tracking_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh SQLite tracking + registry store for this test, active in this process and its children."""
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    yield uri


@pytest.fixture
def sample_dir() -> Path:
    return REPO / "data" / "sample"


@pytest.fixture
def shared_data() -> Path:
    """The real Stack Overflow / Stack Exchange samples beside the repo; skipped cleanly when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


@pytest.fixture
def copy_sample(tmp_path: Path, sample_dir: Path) -> Path:
    """A private copy of data/sample that a test may damage."""
    target = tmp_path / "sample"
    shutil.copytree(sample_dir, target)
    return target
