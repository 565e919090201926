"""A client of the model registry alone, importing nothing but MLflow: the logged model's own code uses it
(`registry/pyfunc_model.py` runs in environments built only from a version's requirements.txt, where the
project's settings and their dependencies are absent)."""

from __future__ import annotations

import mlflow
from mlflow.tracking import MlflowClient


def registry_client():
    """A client of the model registry alone. `MlflowClient()` also opens the tracking store, which resolving an
    alias or reading a version does not need: on SQLite that is ~1 s of ORM set-up in a fresh process (measured
    in docs/serving.md). Falls back to `MlflowClient` if MLflow moves the class."""
    try:
        from mlflow.tracking._model_registry.client import ModelRegistryClient

        return ModelRegistryClient(mlflow.get_registry_uri(), mlflow.get_tracking_uri())
    except (ImportError, AttributeError, TypeError):  # pragma: no cover - a future MLflow layout
        return MlflowClient()
