"""The eval dataset: JSONL rows with an id, a question and a reference answer, and their identity.

The prepared eval split (`projects.data`) qualifies as is; any JSONL with `question` and `answer` (or
`expected_response`) does too. A row without a reference is refused: every reference-based score needs one.
`digest` names the rows scored (`llmops.dataset.split_digest`); `identity` the dataset version the file belongs
to (its manifest's digest, scope and lineage; for a hand-made file, a digest of the file alone).
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmops.dataset import DatasetIdentity, identify, split_digest
from llmops.errors import DataError
from llmops.jsonl import json_records
from llmops.tracking import download


@dataclass(frozen=True)
class EvalRow:
    row_id: str
    question: str
    reference: str

    def record(self) -> dict[str, Any]:
        """One `mlflow.genai.evaluate` data record."""
        return {"inputs": {"question": self.question}, "expectations": {"expected_response": self.reference}}


@dataclass(frozen=True)
class EvalDataset:
    uri: str
    rows: list[EvalRow]
    raw: list[dict[str, Any]]
    identity: DatasetIdentity

    @property
    def digest(self) -> str:
        """The rows scored: two runs with equal digests scored the same rows."""
        return split_digest({**item, "id": row.row_id} for item, row in zip(self.raw, self.rows, strict=True))


def parse_rows(lines: list[str], uri: str) -> tuple[list[EvalRow], list[dict[str, Any]]]:
    rows, raw, seen = [], [], set()
    for number, item in json_records(lines, f"eval dataset {uri}", DataError):
        question = item.get("question")
        if not isinstance(question, str) or not question.strip():
            raise DataError(f"eval dataset {uri} line {number} has no question")
        reference = item.get("answer", item.get("expected_response"))
        if not isinstance(reference, str) or not reference.strip():
            raise DataError(f"eval dataset {uri} line {number} has no reference answer "
                            "('answer' or 'expected_response'); reference-based scores need one")
        row_id = str(item.get("id") or item.get("question_id") or
                     hashlib.sha256(question.encode()).hexdigest()[:12])
        if row_id in seen:
            raise DataError(f"eval dataset {uri} line {number} repeats row id {row_id}")
        seen.add(row_id)
        rows.append(EvalRow(row_id, question, reference))
        raw.append(item)
    if not rows:
        raise DataError(f"eval dataset {uri} holds no rows")
    return rows, raw


def load_eval_dataset(uri: str, limit: int | None = None) -> EvalDataset:
    """Load from a `runs:/`, `models:/` or local URI; `limit` keeps the first N rows (quick runs)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = download(uri, Path(tmp))
        if path.is_dir():
            raise DataError(f"eval dataset {uri} is a directory, expected a JSONL file")
        lines = path.read_text(encoding="utf-8").splitlines()
    rows, raw = parse_rows(lines, uri)
    identity = identify({"eval": (uri, [{**item, "id": row.row_id} for item, row in zip(raw, rows, strict=True)])})
    if limit is not None:
        rows, raw = rows[:limit], raw[:limit]
    return EvalDataset(uri, rows, raw, identity)


def managed_dataset(dataset: EvalDataset, experiment_id: str, warn: Any = None) -> Any:
    """The rows as an MLflow evaluation dataset (the UI's Datasets page; evaluation runs link to it), found by
    name or created once per eval digest. None when the rows cannot be one (questions that repeat: MLflow merges
    records by their inputs) or the store has no evaluation datasets; the evaluation then runs on the plain
    records."""
    from mlflow.exceptions import MlflowException

    if len({row.question for row in dataset.rows}) != len(dataset.rows):
        return None
    import mlflow.genai.datasets as datasets

    name = f"so-qa-eval@{dataset.digest}"
    try:
        found = datasets.search_datasets(experiment_ids=[experiment_id], filter_string=f"name = '{name}'",
                                         max_results=1)
        if found:
            return found[0]
        created = datasets.create_dataset(name=name, experiment_id=experiment_id, tags={
            "llmops.eval_digest": dataset.digest, "llmops.eval_uri": dataset.uri,
            **dataset.identity.as_tags()})
        created.merge_records([row.record() for row in dataset.rows])
        return created
    except (MlflowException, NotImplementedError) as exc:
        if warn is not None:
            warn(f"eval rows not registered as an MLflow evaluation dataset: {getattr(exc, 'message', exc)}")
        return None
