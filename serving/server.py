"""Run the app under uvicorn: one process, or `--workers N` processes each following the alias on its own.

With several workers, uvicorn starts fresh interpreters that build the app from the environment: the command's
flags travel as `LLMOPS_*` variables (the ordinary settings source, so every worker loads the same settings), and
Prometheus runs in multiprocess mode over a private folder so /metrics sums every worker. Each worker writes its
own log parts (its `replica` is host:pid), exactly as separate replicas behind a load balancer would.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from typing import Any

from serving.metrics import MULTIPROC_ENV

log = logging.getLogger("serving")


def connect(settings: Any) -> None:
    """Point MLflow at the store without touching experiments (the server only reads the registry)."""
    import mlflow

    from llmops.tracking import HTTP_DEFAULTS, probe_store

    for key, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)
    uri = settings.mlflow.tracking_uri
    if uri.startswith(("http://", "https://")):
        probe_store(uri)
    mlflow.set_tracking_uri(uri)
    if settings.mlflow.registry_uri:
        mlflow.set_registry_uri(settings.mlflow.registry_uri)


def build_app(settings: Any, routers: tuple[Any, ...] = ()):
    from serving.app import create_app
    from serving.tracing import configure_tracing

    connect(settings)
    configure_tracing(settings.serving.trace_sample_rate, settings)
    logging.getLogger("serving").setLevel(logging.INFO)
    return create_app(settings, routers=routers)


def app_from_environment():
    """uvicorn's factory in each worker process: settings from the environment the parent prepared."""
    from llmops.settings import load_settings

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return build_app(load_settings())


def flags_to_environment(flags: dict[str, Any]) -> dict[str, str]:
    """{"serving.port": 8081} -> {"LLMOPS_SERVING__PORT": "8081"} (lists and booleans as JSON)."""
    env = {}
    for key, value in flags.items():
        if value is None:
            continue
        name = "LLMOPS_" + key.upper().replace(".", "__")
        env[name] = json.dumps(value) if isinstance(value, list | bool) else str(value)
    return env


def serve(settings: Any, flags: dict[str, Any]) -> None:
    import uvicorn

    cfg = settings.serving
    common = {"host": cfg.host, "port": cfg.port, "access_log": False, "log_level": "warning",
              "timeout_graceful_shutdown": 30, "backlog": 2048}
    log.warning("llmops serve: %s on http://%s:%d (%d worker(s)); inference log %s", cfg.model_uri, cfg.host,
                cfg.port, cfg.workers, cfg.log_uri)
    if cfg.workers == 1:
        uvicorn.run(build_app(settings), **common)
        return
    metrics_dir = tempfile.mkdtemp(prefix="llmops-metrics-")
    os.environ.update(flags_to_environment(flags))
    os.environ[MULTIPROC_ENV] = metrics_dir
    try:
        uvicorn.run("serving.server:app_from_environment", factory=True, workers=cfg.workers, **common)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
