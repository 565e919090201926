"""One tuning run, whatever the backend: check every input, then open the MLflow run and tune inside it.

Everything that can be wrong with the inputs (dataset URIs and format, base model, bucket, credentials,
hyperparameters via the settings) is checked before the run starts and before any job is created.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from llmops.errors import ConfigError
from llmops.settings import Settings
from projects.tuning.common import load_tuning_data

BACKENDS = ("local", "vertex", "hf")


def run_tuning(settings: Settings, train_uri: str, eval_uri: str, register: bool = True,
               vertex_clients: tuple[Any, Any] | None = None,
               sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """Returns what came out: the retriever/adapter URI or remote ids, metrics, and the model version if any."""
    backend = settings.tuning.backend
    if backend not in BACKENDS:
        raise ConfigError(f"unknown tuning backend {backend!r} (available: {', '.join(BACKENDS)})")
    data = load_tuning_data(train_uri, eval_uri)
    model_name = settings.model.registered_name if register else None
    if backend == "hf":
        return _run_hf(settings, data, model_name)
    if backend == "vertex":
        return _run_vertex(settings, data, model_name, vertex_clients, sleep)
    return _run_local(settings, data)


def _run_local(settings: Settings, data) -> dict[str, Any]:
    from projects.tuning.local import run_tune_step
    from projects.tuning.tracking import tuning_run

    with tuning_run("tune") as run:
        uri = run_tune_step(data.train_uri, data.eval_uri, settings.backend.vectorizer,
                            settings.backend.abstain_value, data=data)
    # Registration of the local chain is the pipeline's register step (it needs the eval run).
    return {"run_id": run.info.run_id, "retriever_uri": uri}


def _run_hf(settings: Settings, data, model_name: str | None) -> dict[str, Any]:
    from backends.hf import check_model_dir
    from projects.tuning.tracking import log_tuning_inputs, tuning_run

    cfg = settings.tuning.hf
    base = check_model_dir(cfg.base_model_path)
    try:
        import peft  # noqa: F401
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"hf tuning needs the 'hf' extra (pip install 'llmops-mlflow[hf]'): {exc}") from exc
    from projects.tuning.hf import hyperparams, tune_hf

    with tuning_run("tune") as run:
        log_tuning_inputs("hf", str(base), hyperparams(cfg), data, seed=settings.tuning.seed)
        out = tune_hf(data, cfg, settings.tuning.seed, model_name)
    return {"run_id": run.info.run_id, **out}


def _run_vertex(settings: Settings, data, model_name: str | None, clients: tuple[Any, Any] | None,
                sleep: Callable[[float], None]) -> dict[str, Any]:
    from projects.tuning.tracking import log_tuning_inputs, tuning_run
    from projects.tuning.vertex import (
        check_base_model,
        check_bucket,
        hyperparams,
        make_clients,
        parse_gcs_uri,
        tune_vertex,
    )

    cfg = settings.tuning.vertex
    base_model = check_base_model(cfg.base_model, cfg.extra_base_models)
    parse_gcs_uri(cfg.gcs_uri)
    genai_client, storage_client = clients or make_clients(cfg)
    check_bucket(storage_client, cfg.gcs_uri)
    with tuning_run("tune") as run:
        log_tuning_inputs("vertex", base_model, hyperparams(cfg), data)
        out = tune_vertex(data, cfg, model_name, genai_client, storage_client, sleep=sleep)
    return {"run_id": run.info.run_id, **out}
