"""MLflow pointed at one store or server for a block, then exactly as before: its URIs live both in os.environ
and in module globals, and a fixture that restores only one of them leaks into whatever is set up next (the
next module's fixtures are set up before any test's isolation)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator


@contextlib.contextmanager
def mlflow_pointed_at(uri: str, **env: str) -> Iterator[None]:
    """Tracking and registry URI `uri` (and the variables in `env`, e.g. credentials) inside the block."""
    import mlflow
    import mlflow.tracking._model_registry.utils as registry_utils
    import mlflow.tracking._tracking_service.utils as tracking_utils

    keys = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", *env)
    saved_env = {key: os.environ.get(key) for key in keys}
    saved_uris = (registry_utils._registry_uri, tracking_utils._tracking_uri)
    os.environ.update(MLFLOW_TRACKING_URI=uri, MLFLOW_REGISTRY_URI=uri, **env)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        registry_utils._registry_uri, tracking_utils._tracking_uri = saved_uris
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
