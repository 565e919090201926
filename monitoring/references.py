"""What a window is compared with: the eval split its model version was gated on (skew), the version's training
inputs, an earlier window (drift), or a file of questions. Versions are resolved with MLflow's client and their
references through the lineage tags the register step writes (`llmops.eval_run_id`, `llmops.tune_run_id`,
`llmops.dataset_digest`)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmops.errors import ConfigError, DataError, NotFoundError


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: str
    tags: dict[str, str] = field(default_factory=dict)
    alias: str | None = None

    @property
    def label(self) -> str:
        return f"{self.name} v{self.version}" + (f" (@{self.alias})" if self.alias else "")


@dataclass(frozen=True)
class Reference:
    kind: str                     # eval | train | file | window
    uri: str
    digest: str
    questions: tuple[str, ...]
    model: ModelVersion | None = None

    @property
    def label(self) -> str:
        return f"{self.kind} {self.uri}"


def parse_model_uri(uri: str) -> tuple[str, str | None, str | None]:
    """`models:/NAME@alias` -> (NAME, None, alias); `models:/NAME/3` -> (NAME, "3", None)."""
    if not uri.startswith("models:/"):
        raise ConfigError(f"--model needs models:/NAME@alias or models:/NAME/VERSION, got {uri!r}")
    rest = uri.removeprefix("models:/")
    if "@" in rest:
        name, alias = rest.split("@", 1)
        if name and alias:
            return name, None, alias
    elif rest.count("/") == 1:
        name, version = rest.split("/")
        if name and version.isdigit():
            return name, version, None
    raise ConfigError(f"--model needs models:/NAME@alias or models:/NAME/VERSION, got {uri!r}")


def resolve_model(uri: str) -> ModelVersion:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    name, version, alias = parse_model_uri(uri)
    client = MlflowClient()
    try:
        found = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)
    except MlflowException as exc:
        raise NotFoundError(f"model {uri} not found: {exc.message.splitlines()[0]}") from exc
    return ModelVersion(found.name, str(found.version), dict(found.tags or {}), alias)


def lookup_version(name: str, version: str) -> ModelVersion | None:
    """The registered version behind a log's (name, version), or None when the registry does not know it."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        found = MlflowClient().get_model_version(name, version)
    except MlflowException:
        return None
    return ModelVersion(found.name, str(found.version), dict(found.tags or {}))


def _run_param(run_id: str, param: str, what: str, model: ModelVersion) -> str:
    from llmops.tracking import get_run

    run = get_run(run_id)
    value = run.data.params.get(param)
    if not value:
        raise NotFoundError(f"{what} run {run_id} of {model.label} has no {param!r} param")
    return value


def _tag(model: ModelVersion, key: str) -> str:
    value = model.tags.get(key)
    if not value:
        raise NotFoundError(f"{model.label} has no {key} tag: its eval split and training inputs cannot be found "
                            "(use --skew-reference FILE or none)")
    return value


def eval_reference(model: ModelVersion) -> Reference:
    """The eval split this version was gated on: tag llmops.eval_run_id -> the eval run's `eval_uri` param."""
    from llmops.dataset import read_examples

    uri = _run_param(_tag(model, "llmops.eval_run_id"), "eval_uri", "eval", model)
    rows = read_examples(uri)
    digest = model.tags.get("llmops.dataset_digest") or questions_digest([r["question"] for r in rows])
    return Reference("eval", uri, digest, tuple(str(r["question"]) for r in rows), model)


def train_reference(model: ModelVersion) -> Reference:
    """The training inputs: tag llmops.tune_run_id -> the tune run's `train_uri` param."""
    from llmops.dataset import read_examples

    uri = _run_param(_tag(model, "llmops.tune_run_id"), "train_uri", "tune", model)
    rows = read_examples(uri)
    digest = model.tags.get("llmops.dataset_digest") or questions_digest([r["question"] for r in rows])
    return Reference("train", uri, digest, tuple(str(r["question"]) for r in rows), model)


def questions_digest(questions: list[str]) -> str:
    h = hashlib.sha256()
    for q in questions:
        h.update(q.encode("utf-8"))
        h.update(b"\x1e")
    return h.hexdigest()[:16]


def read_questions(path: str | Path) -> list[str]:
    """Questions of a JSONL file (a `question` field per line) or a Parquet file (a `question` column)."""
    from llmops.jsonl import json_records

    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"question file not found: {path}")
    if path.suffix.lower() in (".parquet", ".pq"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except (OSError, pa.ArrowInvalid) as exc:
            raise DataError(f"{path} is not a readable Parquet file: {exc}") from exc
        if "question" not in table.column_names:
            raise DataError(f"{path} has no 'question' column (columns: {', '.join(table.column_names)})")
        values = table.column("question").to_pylist()
        bad = next((i for i, v in enumerate(values) if v is not None and not isinstance(v, str)), None)
        if bad is not None:
            raise DataError(f"{path} row {bad}: 'question' is not a string")
        questions = [v for v in values if v]
    else:
        questions = []
        try:
            with path.open(encoding="utf-8") as handle:
                for number, row in json_records(handle, str(path), DataError):
                    value: Any = row.get("question")
                    if not isinstance(value, str):
                        raise DataError(f"{path} line {number} has no 'question' string")
                    if value:
                        questions.append(value)
        except UnicodeDecodeError as exc:
            raise DataError(f"{path} is not UTF-8 text") from exc
    if not questions:
        raise DataError(f"{path} holds no questions")
    return questions


def file_reference(path: str | Path) -> Reference:
    questions = read_questions(path)
    return Reference("file", str(path), questions_digest(questions), tuple(questions))


def check_same_version(reference: Reference, name: str, version: str, served_digests: set[str]) -> None:
    """A reference drawn for another model version (or another dataset version) is refused, never used silently."""
    if reference.model is not None and (reference.model.name, reference.model.version) != (name, version):
        raise DataError(f"the {reference.kind} reference belongs to {reference.model.label}, but the windows are "
                        f"{name} v{version}: compare a version with its own eval split (or pass a file)")
    if reference.kind in ("eval", "train") and served_digests and reference.digest not in served_digests:
        raise DataError(f"the {reference.kind} reference of {name} v{version} is dataset {reference.digest}, but "
                        f"the log's records of that version were served with dataset(s) "
                        f"{', '.join(sorted(served_digests))}")


def describe_reference(reference: Reference) -> dict[str, Any]:
    return {"kind": reference.kind, "uri": reference.uri, "digest": reference.digest,
            "rows": len(reference.questions)}
