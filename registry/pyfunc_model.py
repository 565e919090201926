"""The pyfunc wrapper every registered version is: the chain its config describes, questions in, answers out.

`registry/model_code.py` (the one models-from-code file) instantiates it; MLflow calls `load_context` with the
logged config and artifacts, then `predict`. Input errors become MlflowException INVALID_PARAMETER_VALUE (HTTP 400
from a scoring server); a provider that fails becomes TEMPORARILY_UNAVAILABLE (503), so callers can tell "your
request is wrong" from "the model's backend is down".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow.pyfunc

from llmops.errors import BackendError, InputError


def questions_from_input(model_input: Any) -> list[Any]:
    """Accept a DataFrame with a `question` column, a list of dicts/strings, a dict or a string."""
    import pandas as pd

    if isinstance(model_input, pd.DataFrame):
        if "question" not in model_input.columns:
            raise InputError(f"input needs a 'question' column; got {list(model_input.columns)}")
        return model_input["question"].tolist()
    if isinstance(model_input, str):
        return [model_input]
    if isinstance(model_input, dict):
        model_input = [model_input]
    if isinstance(model_input, list):
        out = []
        for item in model_input:
            if isinstance(item, dict):
                if "question" not in item:
                    raise InputError("each input record needs a 'question' field")
                out.append(item["question"])
            else:
                out.append(item)
        return out
    raise InputError(f"unsupported input type {type(model_input).__name__}")


class QAChainModel(mlflow.pyfunc.PythonModel):
    """Config and the fitted indexes / adapters come from the logged model; nothing is looked up at predict."""

    # No type hints on `predict` (they would restrict requests to `{"inputs": ...}`; the signature is declared at
    # log time), so MLflow's subclass hook would wrap it only to warn "Add type hints" on every import.
    _skip_type_hint_validation = True

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        from prompts.chain import build_chain

        config = dict(context.model_config or {})
        artifacts = dict(context.artifacts or {})
        anchor = Path(next(iter(artifacts.values()))) if artifacts else None
        version = _own_version(config.get("registered_model_name"), anchor) if anchor else None
        self.chain = build_chain(config, artifacts, model_version=version)

    def predict(self, context, model_input, params=None):  # no type hints: the signature is declared at log time
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, TEMPORARILY_UNAVAILABLE

        try:
            return self.chain.answer_many(questions_from_input(model_input))
        except InputError as exc:
            raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from exc
        except BackendError as exc:
            raise MlflowException(str(exc), error_code=TEMPORARILY_UNAVAILABLE) from exc


def _own_version(name: str | None, artifact_dir: Path) -> str | None:
    """Which registered version this model is, from its logged-model id; None when offline or unknown."""
    if not name:
        return None
    try:
        from mlflow.models import Model

        from llmops.registry_client import registry_client

        model_dir = artifact_dir.parent.parent
        model_id = Model.load(str(model_dir / "MLmodel")).model_id
        if not model_id:
            return None
        # the registry alone: MlflowClient() would open the tracking store too (~1 s on SQLite, fresh process)
        for version in registry_client().search_model_versions(f"name='{name}'"):
            if getattr(version, "model_id", None) == model_id or version.source == f"models:/{model_id}":
                return str(version.version)
    except Exception:  # noqa: BLE001 - the version is informative; serving must not fail for it
        return None
    return None
