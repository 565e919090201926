"""Load `models:/NAME@ALIAS` and predict; batch input/output as JSONL, written atomically.

A fresh process pays for Python, `import mlflow` (~1 s), the registry store's ORM set-up and the chain's
libraries (scikit-learn for the TF-IDF index); it no longer pays for the tracking store (MlflowClient), an
experiment lookup, MLflow's scan of every installed distribution, or a trace written to the store and flushed at
exit (docs/serving.md has the measured breakdown).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llmops.errors import BackendError, InputError, NotFoundError
from llmops.fsutil import atomic_path
from llmops.jsonl import json_records


def load_model(model_uri: str):
    """`models:/` URIs by the fast path (serving/loader.py: a LoadedVersion, its chain called directly); any other
    URI (runs:/, a folder) through MLflow (a pyfunc)."""
    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException

    if model_uri.startswith("models:/"):
        from serving.loader import RefusedVersion, load_version, parse_model_uri, resolve_version

        ref = parse_model_uri(model_uri)
        try:
            return load_version(ref.name, resolve_version(ref), ref.alias)
        except RefusedVersion as exc:
            raise NotFoundError(str(exc)) from exc
    try:
        return mlflow.pyfunc.load_model(model_uri)
    except MlflowException as exc:
        raise NotFoundError(f"cannot load {model_uri}: {exc.message.splitlines()[0]}") from exc
    except OSError as exc:
        raise NotFoundError(f"cannot load {model_uri}: {exc}") from exc


def predict(model: Any, questions: list[str]) -> list[dict[str, Any]]:
    import pandas as pd
    from mlflow.exceptions import MlflowException

    if not questions:
        raise InputError("no questions given")
    if hasattr(model, "chain"):  # the same answers as the pyfunc's, without LangChain (docs/serving.md)
        from serving.loader import answer_questions

        return answer_questions(model.chain, questions)
    try:
        return model.predict(pd.DataFrame({"question": questions}))
    except MlflowException as exc:
        message = exc.message.splitlines()[0] if exc.message else str(exc)
        if exc.error_code == "INVALID_PARAMETER_VALUE":  # the model refused the input
            raise InputError(message) from exc
        raise BackendError(f"the model failed to answer: {message}") from exc


def read_questions(path: Path) -> list[str]:
    """Each JSONL line is {"question": "..."}; a bad line is named by number."""
    questions = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as exc:
        raise NotFoundError(f"input file not found: {path}") from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"input file {path} is not UTF-8") from exc
    for number, record in json_records(lines, str(path), InputError):
        if not isinstance(record.get("question"), str):
            raise InputError(f"{path} line {number} needs a string field 'question'")
        questions.append(record["question"])
    return questions


def write_answers(path: Path, answers: list[dict[str, Any]]) -> None:
    with atomic_path(Path(path)) as tmp:
        with tmp.open("w", encoding="utf-8") as handle:
            for answer in answers:
                handle.write(json.dumps(answer, ensure_ascii=False) + "\n")
