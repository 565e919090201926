"""The register step: log the chain as a pyfunc from code, register a new version, tag its bundle, alias `dev`."""

from __future__ import annotations

import tempfile
from pathlib import Path

from llmops.errors import NotFoundError
from llmops.settings import repo_root
from llmops.tracking import download, get_run
from prompts.chain import CHAIN_NAME
from prompts.registry import load_pinned

CHAIN_FILE = Path("prompts") / "chains" / "qa_chain.py"
CODE_PACKAGES = ("llmops", "backends", "prompts")
BUNDLE_TAGS = ("prompt_name", "prompt_version", "instruction_hash", "dataset_digest", "eval_run_id", "tune_run_id",
               "chain")
PIP_REQUIREMENTS = ["mlflow>=3.17,<4", "scikit-learn>=1.4,<2", "joblib>=1.3", "numpy", "pandas", "pydantic>=2.7,<3",
                    "pydantic-settings>=2.3,<3", "pyyaml>=6", "markdownify>=0.13"]


def register_chain(model_name: str, tune_run_id: str, eval_run_id: str, alias: str = "dev") -> str:
    """Returns the new version. If anything after registration fails, the version is deleted again."""
    import mlflow
    import mlflow.pyfunc
    import pandas as pd
    from mlflow.models import ModelSignature
    from mlflow.tracking import MlflowClient
    from mlflow.types import ColSpec, Schema

    tune_run = get_run(tune_run_id)
    eval_run = get_run(eval_run_id)
    retriever_uri = tune_run.data.tags.get("llmops.retriever_uri")
    if not retriever_uri:
        raise NotFoundError(f"run {tune_run_id} is not a finished tune run (no llmops.retriever_uri tag)")
    params = tune_run.data.params
    prompt = load_pinned(f"prompts:/{params['prompt_name']}/{params['prompt_version']}")
    bundle = {
        "prompt_name": prompt.name, "prompt_version": str(prompt.version),
        "instruction_hash": prompt.instruction_hash, "dataset_digest": params["dataset_digest"],
        "eval_run_id": eval_run.info.run_id, "tune_run_id": tune_run_id, "chain": CHAIN_NAME,
    }
    root = repo_root()
    client = MlflowClient()
    with tempfile.TemporaryDirectory() as tmp:
        retriever_dir = download(retriever_uri, Path(tmp))
        mlflow.log_params({f"bundle.{k}": v for k, v in bundle.items()})
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(root / CHAIN_FILE),
            artifacts={"retriever": str(retriever_dir)},
            model_config={**prompt.as_config(), "registered_model_name": model_name, "chain": CHAIN_NAME},
            code_paths=[str(root / pkg) for pkg in CODE_PACKAGES],
            pip_requirements=PIP_REQUIREMENTS,
            signature=ModelSignature(inputs=Schema([ColSpec("string", "question")])),
            input_example=pd.DataFrame({"question": ["How do I reverse a list in Python?"]}),
            prompts=[prompt.uri],
            registered_model_name=model_name,
        )
    version = str(info.registered_model_version)
    try:
        for key, value in bundle.items():
            client.set_model_version_tag(model_name, version, f"llmops.{key}", value)
        client.set_registered_model_alias(model_name, alias, version)
    except Exception:
        client.delete_model_version(model_name, version)
        raise
    mlflow.set_tags({"llmops.step": "register", "llmops.model_name": model_name, "llmops.model_version": version,
                     "llmops.model_uri": f"models:/{model_name}/{version}"})
    return version
