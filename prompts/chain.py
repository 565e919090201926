"""The question-answering chain: pre-process -> render the pinned prompt -> backend -> post-process.

The same class runs in evaluation (in-process) and in the registered pyfunc model (models-from-code),
so what is evaluated is what is served.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import mlflow.pyfunc
from pydantic import BaseModel, Field

from backends.base import Backend
from llmops.errors import InputError
from prompts.registry import PinnedPrompt

CHAIN_NAME = "so-qa-retrieval"
MAX_QUESTION_CHARS = 8000
_WS = re.compile(r"[ \t]+")


class CitationOut(BaseModel):
    source_id: str
    link: str
    similarity: float


class ChainResponse(BaseModel):
    """One answer as returned by `llmops serve predict`, the pyfunc and `/invocations`."""

    answer: str
    citations: list[CitationOut] = Field(default_factory=list)
    abstained: bool
    model_name: str | None = None
    model_version: str | None = None
    prompt_name: str
    prompt_version: int
    instruction_hash: str
    chain: str = CHAIN_NAME


def preprocess(question: Any) -> str:
    """Normalise whitespace and guard length; an empty question is the caller's error."""
    if not isinstance(question, str):
        raise InputError(f"question must be a string, got {type(question).__name__}")
    text = "\n".join(_WS.sub(" ", line).strip() for line in question.replace("\r\n", "\n").split("\n")).strip()
    if not text:
        raise InputError("question is empty")
    if len(text) > MAX_QUESTION_CHARS:
        raise InputError(f"question is {len(text)} characters long; the limit is {MAX_QUESTION_CHARS}")
    return text


class QAChain:
    """Composes the stages; stateless apart from the backend and the pinned prompt."""

    def __init__(self, backend: Backend, prompt: PinnedPrompt, model_name: str | None = None,
                 model_version: str | None = None) -> None:
        self.backend = backend
        self.prompt = prompt
        self.model_name = model_name
        self.model_version = model_version

    def answer_many(self, questions: list[Any]) -> list[dict[str, Any]]:
        cleaned = [preprocess(q) for q in questions]
        prompts = [self.prompt.format(question=q) for q in cleaned]
        if hasattr(self.backend, "generate_many"):
            generations = self.backend.generate_many(cleaned)
        else:
            generations = [self.backend.generate(q, p) for q, p in zip(cleaned, prompts, strict=True)]
        return [self._postprocess(g) for g in generations]

    def answer(self, question: Any) -> dict[str, Any]:
        return self.answer_many([question])[0]

    def _postprocess(self, generation: Any) -> dict[str, Any]:
        return ChainResponse(
            answer=generation.text,
            citations=[CitationOut(**vars(c)) for c in generation.citations],
            abstained=generation.abstained,
            model_name=self.model_name,
            model_version=self.model_version,
            prompt_name=self.prompt.name,
            prompt_version=self.prompt.version,
            instruction_hash=self.prompt.instruction_hash,
        ).model_dump()


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
    """The pyfunc wrapper logged from code: config and the fitted index come from the logged model."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        from backends.retrieval import RetrievalAnswerer

        config = context.model_config or {}
        prompt = PinnedPrompt(
            name=config["prompt_name"],
            version=int(config["prompt_version"]),
            template=config["prompt_template"],
            instruction_hash=config["instruction_hash"],
        )
        retriever_dir = Path(context.artifacts["retriever"])
        backend = RetrievalAnswerer.load(retriever_dir)
        name = config.get("registered_model_name")
        self.chain = QAChain(backend, prompt, model_name=name, model_version=_own_version(name, retriever_dir))

    def predict(self, context, model_input, params=None):  # no type hints: the signature is declared at log time
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        try:
            return self.chain.answer_many(questions_from_input(model_input))
        except InputError as exc:
            raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from exc


def _own_version(name: str | None, retriever_dir: Path) -> str | None:
    """Find which registered version this model is, from its logged-model id; None when offline or unknown."""
    if not name:
        return None
    try:
        from mlflow.models import Model
        from mlflow.tracking import MlflowClient

        model_dir = retriever_dir.parent.parent
        model_id = Model.load(str(model_dir / "MLmodel")).model_id
        if not model_id:
            return None
        for version in MlflowClient().search_model_versions(f"name='{name}'"):
            if getattr(version, "model_id", None) == model_id or version.source == f"models:/{model_id}":
                return str(version.version)
    except Exception:  # noqa: BLE001 - the version is informative; serving must not fail for it
        return None
    return None
