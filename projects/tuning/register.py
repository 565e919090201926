"""Register a tuned chain (hf, vertex) from its tune run: a models-from-code pyfunc, the bundle tags, alias `dev`.

The local backend goes through the pipeline's own register step; the generative backends carry their model
(adapter or remote endpoint) inside the tune run, so they register from there with the same version tags.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmops.settings import repo_root
from llmops.secrets import mask_urls
from projects.tuning.common import TuningData

CODE_PACKAGES = ("llmops", "backends", "prompts")
BASE_REQUIREMENTS = ["mlflow>=3.17,<4", "numpy", "pandas", "pydantic>=2.7,<3", "pydantic-settings>=2.3,<3",
                     "pyyaml>=6", "markdownify>=0.13"]


def bundle_tags(data: TuningData, tune_run_id: str, chain: str, eval_run_id: str | None = None) -> dict[str, str]:
    bundle = {
        "prompt_name": data.prompt_name, "prompt_version": str(data.prompt_version),
        "instruction_hash": data.instruction_hash, "dataset_digest": data.digest, "tune_run_id": tune_run_id,
        "chain": chain,
    }
    if eval_run_id:
        bundle["eval_run_id"] = eval_run_id
    return bundle


def pinned_prompt(data: TuningData):
    """The exact prompt version the dataset was built with, from the Prompt Registry."""
    from prompts.registry import load_pinned

    return load_pinned(f"prompts:/{data.prompt_name}/{data.prompt_version}")


def register_tuned_chain(*, model_name: str, chain_file: Path, data: TuningData, chain: str,
                         artifacts: dict[str, str], model_config: dict[str, Any], extra_requirements: list[str],
                         alias: str = "dev") -> str:
    """Log the chain into the active (tune) run, register a version, tag it, alias it; undo on any failure."""
    import mlflow
    import mlflow.pyfunc
    from mlflow.models import ModelSignature
    from mlflow.tracking import MlflowClient
    from mlflow.types import ColSpec, Schema

    from llmops.settings import load_settings
    from registry.ledger import point_new_version

    run_id = mlflow.active_run().info.run_id
    prompt = pinned_prompt(data)
    bundle = bundle_tags(data, run_id, chain)
    root = repo_root()
    info = mlflow.pyfunc.log_model(
        name="model",
        python_model=str(chain_file),
        artifacts=artifacts or None,
        model_config=mask_urls({**prompt.as_config(), **model_config, "registered_model_name": model_name,
                                "chain": chain}),
        code_paths=[str(root / pkg) for pkg in CODE_PACKAGES],
        pip_requirements=BASE_REQUIREMENTS + extra_requirements,
        signature=ModelSignature(inputs=Schema([ColSpec("string", "question")])),
        prompts=[prompt.uri],
        registered_model_name=model_name,
    )
    version = str(info.registered_model_version)
    client = MlflowClient()
    try:
        for key, value in bundle.items():
            client.set_model_version_tag(model_name, version, f"llmops.{key}", value)
        settings = load_settings()
        point_new_version(model_name, alias, version, settings.registry.ledger_uri, settings.registry.actor)
        mlflow.set_tags({"llmops.model_name": model_name, "llmops.model_version": version,
                         "llmops.model_uri": f"models:/{model_name}/{version}"})
    except BaseException:
        client.delete_model_version(model_name, version)
        raise
    return version
