"""One tuning run, whatever the backend: check every input, then open the MLflow run and tune inside it.

Everything that can be wrong with the inputs (dataset URIs and format, base model, bucket, credentials,
hyperparameters via the settings) is checked before the run starts and before any job is created. Every run ends
by recording what it produced as a provider spec (`llmops.provider_spec`); nothing is registered here: the
release path (`llmops eval run --tune-run-id`, `llmops registry register`) takes the run from there.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from llmops.errors import ConfigError
from llmops.provider_spec import ProviderSpec
from llmops.settings import Settings
from projects.tuning.common import TuningData, load_tuning_data

BACKENDS = ("local", "hf", "vertex", "openai_compat")


def run_tuning(settings: Settings, train_uri: str, eval_uri: str, vertex_clients: tuple[Any, Any] | None = None,
               sleep: Callable[[float], None] = time.sleep, progress: Any = None) -> dict[str, Any]:
    """Returns the run id, the provider spec and what else came out (URIs, remote ids, metrics). `progress`
    (`llmops.cli_support.RowProgress`) follows the long backends: hf training steps, a Vertex job's epochs."""
    backend = settings.tuning.backend
    if backend not in BACKENDS:
        raise ConfigError(f"unknown tuning backend {backend!r} (available: {', '.join(BACKENDS)})")
    data = load_tuning_data(train_uri, eval_uri, settings.tuning.validation_percent)
    if backend == "vertex":
        return _run_vertex(settings, data, vertex_clients, sleep, progress)
    if backend == "hf":
        return _run_hf(settings, data, progress)
    return {"local": _run_local, "openai_compat": _run_openai_compat}[backend](settings, data)


def _prompt(data: TuningData) -> str:
    """`so-qa@v2`: the prompt version a tuning run trained with, in its name (runs are compared by it)."""
    return f"{data.prompt_name}@v{data.prompt_version}"


def _finish(run: Any, spec: ProviderSpec, out: dict[str, Any]) -> dict[str, Any]:
    return {"run_id": run.info.run_id, "provider_kind": spec.kind, **out}


def _run_local(settings: Settings, data: TuningData) -> dict[str, Any]:
    from projects.tuning.local import run_tune_step
    from projects.tuning.tracking import record_spec, tuning_run

    vectorizer = settings.backend.vectorizer
    with tuning_run(f"tune local retrieval-{vectorizer} {_prompt(data)}") as run:
        uri = run_tune_step(data, vectorizer, settings.backend.abstain_value)
        spec = ProviderSpec(kind="retrieval", model=f"retrieval-{vectorizer}", artifacts={"retriever": uri},
                            requirements=_embedding_requirements(vectorizer))
        record_spec(spec)
    return _finish(run, spec, {"retriever_uri": uri})


def _embedding_requirements(vectorizer: str) -> list[str]:
    from backends.providers import EMBEDDING_REQUIREMENTS

    return list(EMBEDDING_REQUIREMENTS) if vectorizer == "minilm" else []


def _run_hf(settings: Settings, data: TuningData, progress: Any = None) -> dict[str, Any]:
    from backends.hf import check_model_dir
    from projects.tuning.tracking import log_grounding, log_tuning_inputs, record_spec, tuning_run

    cfg = settings.tuning.hf
    base = check_model_dir(cfg.base_model_path)
    try:
        import peft  # noqa: F401
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"hf tuning needs the 'hf' extra (pip install 'llmops-mlflow[hf]'): {exc}") from exc
    from projects.tuning.hf import hyperparams, tune_hf

    with tuning_run(f"tune hf {base.name} {_prompt(data)}") as run:
        log_tuning_inputs("hf", str(base), hyperparams(cfg), data, seed=settings.tuning.seed)
        out = tune_hf(data, cfg, settings.tuning.seed, progress=progress)
        spec = ProviderSpec(kind="hf", model=f"{base.name}+lora", base_model=str(base),
                            artifacts={"adapter": out["adapter_uri"], "grounding": log_grounding(data)},
                            max_new_tokens=cfg.max_new_tokens)
        record_spec(spec)
    return _finish(run, spec, out)


def _run_openai_compat(settings: Settings, data: TuningData) -> dict[str, Any]:
    """No weights change: the run records which served model answers, with this dataset's prompt and grounding
    (a prompt-only release, judged by the same evaluation and gates as a tuned one)."""
    from projects.tuning.tracking import log_grounding, log_tuning_inputs, record_spec, tuning_run

    cfg = settings.chain.provider
    if not cfg.base_url or not cfg.model:
        raise ConfigError("tuning backend openai_compat needs chain.provider.base_url and chain.provider.model "
                          "(e.g. LLMOPS_CHAIN__PROVIDER__BASE_URL=http://127.0.0.1:8000/v1)")
    with tuning_run(f"tune openai_compat {cfg.model} {_prompt(data)}") as run:
        log_tuning_inputs("openai_compat", cfg.model, {"timeout_s": cfg.timeout_s, "max_retries": cfg.max_retries,
                                                       **{f"param.{k}": v for k, v in cfg.params.items()}}, data)
        spec = ProviderSpec(kind="openai_compat", model=cfg.model, base_url=cfg.base_url,
                            api_key_env=cfg.api_key_env, timeout_s=cfg.timeout_s, max_retries=cfg.max_retries,
                            params=dict(cfg.params), artifacts={"grounding": log_grounding(data)})
        record_spec(spec)
    return _finish(run, spec, {})


def _run_vertex(settings: Settings, data: TuningData, clients: tuple[Any, Any] | None,
                sleep: Callable[[float], None], progress: Any = None) -> dict[str, Any]:
    from projects.tuning.tracking import log_grounding, log_tuning_inputs, record_spec, tuning_run
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
    with tuning_run(f"tune vertex {base_model} {_prompt(data)}") as run:
        log_tuning_inputs("vertex", base_model, hyperparams(cfg), data)
        out = tune_vertex(data, cfg, genai_client, storage_client, sleep=sleep, progress=progress)
        spec = ProviderSpec(kind="vertex", model=out["endpoint"], base_model=base_model,
                            project=out.get("project") or cfg.project, location=cfg.location,
                            base_url=cfg.api_endpoint, timeout_s=settings.chain.provider.timeout_s,
                            max_retries=settings.chain.provider.max_retries,
                            artifacts={"grounding": log_grounding(data)})
        record_spec(spec)
    return _finish(run, spec, out)
