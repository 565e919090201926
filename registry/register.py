"""The register step: log the chain as a pyfunc from code, register a new version, tag its bundle, alias `dev`.

Which prompt and provider the chain uses come from the settings (`chain.*`), with the tune run's choices as the
default: the prompt version its training data was built with, and a tuned model it produced when it says so
(`llmops.provider_spec` JSON tag, or a Vertex tuning run's endpoint). Everything is checked before anything is
logged; if tagging fails after registration the version is deleted again, so nothing is registered half-way.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmops.errors import ConfigError, NotFoundError
from llmops.secrets import mask_urls
from llmops.settings import Settings, load_settings, repo_root
from llmops.tracking import download, get_run
from prompts.registry import PinnedPrompt, load_pinned

log = logging.getLogger(__name__)

CHAIN_FILE = Path("prompts") / "chains" / "qa_chain.py"
CODE_PACKAGES = ("llmops", "backends", "prompts")
BUNDLE_TAGS = ("prompt_name", "prompt_version", "instruction_hash", "dataset_digest", "eval_run_id", "tune_run_id",
               "chain", "provider", "model_id", "consistency")
PIP_REQUIREMENTS = ["mlflow>=3.17,<4", "scikit-learn>=1.4,<2", "joblib>=1.3", "numpy", "pandas", "pydantic>=2.7,<3",
                    "pydantic-settings>=2.3,<3", "pyyaml>=6", "markdownify>=0.13", "langchain-core>=0.3,<2",
                    "tenacity>=8.2", "httpx>=0.27"]
PROVIDER_SPEC_TAG = "llmops.provider_spec"


@dataclass(frozen=True)
class Consistency:
    """Training/serving check: does the served prompt carry the instruction the training data was built with?"""

    outcome: str  # match | mismatch-warned
    serving_hash: str
    training_hash: str

    def as_params(self) -> dict[str, str]:
        return {"consistency.outcome": self.outcome, "consistency.serving_instruction_hash": self.serving_hash,
                "consistency.training_instruction_hash": self.training_hash}


def check_consistency(prompt: PinnedPrompt, training_hash: str, mode: str) -> Consistency:
    """Raise (mode `error`) or warn (mode `warn`) when the instruction hashes differ."""
    if not training_hash:
        raise ConfigError("the tune run records no instruction_hash for its training data; cannot check consistency")
    if prompt.instruction_hash == training_hash:
        return Consistency("match", prompt.instruction_hash, training_hash)
    message = (f"prompt {prompt.uri} has instruction hash {prompt.instruction_hash} but the training data was built "
               f"with {training_hash}: serving would not match tuning")
    if mode == "error":
        raise ConfigError(message + " (set chain.consistency=warn to log anyway)")
    log.warning("%s; logging anyway (chain.consistency=warn)", message)
    return Consistency("mismatch-warned", prompt.instruction_hash, training_hash)


def resolve_provider(settings: Settings, tune_run: Any) -> dict[str, Any]:
    """Settings win when they name a non-default provider; else what the tune run produced; else retrieval."""
    from backends.factory import provider_spec

    configured = settings.chain.provider.model_dump()
    if configured["kind"] != "retrieval":
        return provider_spec(configured)
    tags = tune_run.data.tags
    if tags.get(PROVIDER_SPEC_TAG):
        try:
            return provider_spec({**configured, **json.loads(tags[PROVIDER_SPEC_TAG])})
        except json.JSONDecodeError as exc:
            raise ConfigError(f"tag {PROVIDER_SPEC_TAG} of the tune run is not JSON") from exc
    if tags.get("llmops.tuning_backend") == "vertex" and tags.get("llmops.vertex_endpoint"):
        return provider_spec({**configured, "kind": "vertex", "model": tags["llmops.vertex_endpoint"]})
    return provider_spec(configured)


def register_chain(model_name: str, tune_run_id: str, eval_run_id: str, alias: str = "dev",
                   settings: Settings | None = None) -> str:
    """Returns the new version. If anything after registration fails, the version is deleted again."""
    import mlflow
    import mlflow.pyfunc
    import pandas as pd
    from mlflow.models import ModelSignature
    from mlflow.tracking import MlflowClient
    from mlflow.types import ColSpec, Schema

    from backends.factory import model_id as model_id_of
    from prompts.chain import chain_name_for
    from registry.ledger import point_new_version

    settings = settings or load_settings()
    tune_run = get_run(tune_run_id)
    eval_run = get_run(eval_run_id)
    params = tune_run.data.params
    missing = [k for k in ("prompt_name", "prompt_version", "dataset_digest") if k not in params]
    if missing:
        raise NotFoundError(f"run {tune_run_id} is not a finished tune run (no param(s) {', '.join(missing)})")
    provider = resolve_provider(settings, tune_run)
    retriever_uri = tune_run.data.tags.get("llmops.retriever_uri")
    if provider["kind"] == "retrieval" and not retriever_uri:
        raise NotFoundError(f"run {tune_run_id} is not a finished tune run (no llmops.retriever_uri tag)")
    # The prompt by URI, resolved to a pinned version now (an alias may move later; the model must not).
    prompt_uri = settings.chain.prompt_uri or f"prompts:/{params['prompt_name']}/{params['prompt_version']}"
    prompt = load_pinned(prompt_uri)
    training_hash = params.get("instruction_hash") or load_pinned(
        f"prompts:/{params['prompt_name']}/{params['prompt_version']}").instruction_hash
    try:
        consistency = check_consistency(prompt, training_hash, settings.chain.consistency)
    except ConfigError:
        if mlflow.active_run():  # the refusal is an outcome too: leave it on the register run
            mlflow.set_tags({"llmops.consistency": "mismatch-refused", "llmops.step": "register"})
        raise
    chain = chain_name_for(provider["kind"])
    model_id = model_id_of(provider)
    bundle = {
        "prompt_name": prompt.name, "prompt_version": str(prompt.version),
        "instruction_hash": prompt.instruction_hash, "dataset_digest": params["dataset_digest"],
        "eval_run_id": eval_run.info.run_id, "tune_run_id": tune_run_id, "chain": chain,
        "provider": provider["kind"], "model_id": model_id, "consistency": consistency.outcome,
    }
    model_config = {
        **prompt.as_config(), "registered_model_name": model_name, "chain": chain, "model_id": model_id,
        "provider": provider, "grounding_k": settings.chain.grounding_k,
        "max_question_chars": settings.chain.max_question_chars,
        "safety": settings.chain.safety.model_dump(), "prompt_uri_requested": prompt_uri,
    }
    requirements = PIP_REQUIREMENTS + (["google-genai>=1.0,<4"] if provider["kind"] == "vertex" else [])
    root = repo_root()
    client = MlflowClient()
    with tempfile.TemporaryDirectory() as tmp:
        artifacts: dict[str, str] = {}
        if retriever_uri:
            artifacts["retriever"] = str(download(retriever_uri, Path(tmp) / "dl"))
        train_uri = params.get("train_uri")
        if settings.chain.grounding_k > 0 and train_uri and provider["kind"] != "retrieval":
            from llmops.dataset import read_examples
            from prompts.grounding import GroundingIndex

            artifacts["grounding"] = str(GroundingIndex.fit(read_examples(train_uri)).save(Path(tmp) / "grounding"))
        mlflow.log_params({f"bundle.{k}": v for k, v in bundle.items()})
        mlflow.log_params(mask_urls({**consistency.as_params(), "prompt_uri": prompt_uri}))
        mlflow.set_tag("llmops.consistency", consistency.outcome)
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(root / CHAIN_FILE),
            artifacts=artifacts,
            model_config=mask_urls(model_config),  # a provider URL's credentials never reach MLmodel
            code_paths=[str(root / pkg) for pkg in CODE_PACKAGES],
            pip_requirements=requirements,
            signature=ModelSignature(inputs=Schema([ColSpec("string", "question")])),
            input_example=pd.DataFrame({"question": ["How do I reverse a list in Python?"]})
            if provider["kind"] == "retrieval" else None,  # a remote model must not be called at log time
            prompts=[prompt.uri],
            registered_model_name=model_name,
        )
    version = str(info.registered_model_version)
    try:
        for key, value in bundle.items():
            client.set_model_version_tag(model_name, version, f"llmops.{key}", value)
        point_new_version(model_name, alias, version, settings.registry.ledger_uri, settings.registry.actor)
    except Exception:
        client.delete_model_version(model_name, version)
        raise
    mlflow.set_tags({"llmops.step": "register", "llmops.model_name": model_name, "llmops.model_version": version,
                     "llmops.model_uri": f"models:/{model_name}/{version}"})
    return version
