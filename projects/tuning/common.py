"""Inputs every tuning backend shares: the two dataset splits, their identity (digest, scope, lineage) and prompt,
the validation split carved from train, and the chat format.

Reading and checking happen here, before any job starts, so a bad URI or a malformed file fails fast.
Every knob a tuner chooses (the retriever's abstention threshold, the loss curve a person reads) is chosen on the
validation split, a stable share of train; the eval split is only ever scored and gated.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmops.dataset import DatasetIdentity, identify, prompt_of, read_examples
from llmops.errors import DataError

USER_ROLE = "user"
MODEL_ROLE = "model"


@dataclass(frozen=True)
class TuningData:
    """The train/eval examples a tuning run consumes, with the identity MLflow records for them."""

    train: list[dict[str, Any]]
    eval: list[dict[str, Any]]
    train_uri: str
    eval_uri: str
    identity: DatasetIdentity
    prompt_name: str
    prompt_version: int
    instruction_hash: str
    validation_percent: int = 15

    @property
    def digest(self) -> str:
        return self.identity.digest

    @property
    def fit(self) -> list[dict[str, Any]]:
        """Train rows a tuner fits on: train minus the validation split."""
        return [row for row in self.train if not in_validation(row, self.validation_percent)]

    @property
    def validation(self) -> list[dict[str, Any]]:
        """A stable share of train (by a hash of the example id) on which tuners choose their knobs."""
        return [row for row in self.train if in_validation(row, self.validation_percent)]

    @property
    def fit_chats(self) -> list[dict[str, Any]]:
        return [to_chat(row) for row in self.fit]

    @property
    def validation_chats(self) -> list[dict[str, Any]]:
        return [to_chat(row) for row in self.validation]


def in_validation(row: dict[str, Any], percent: int) -> bool:
    from projects.data.split import bucket

    return percent > 0 and bucket(f"validation/{row['id']}") < percent


def load_tuning_data(train_uri: str, eval_uri: str, validation_percent: int = 15) -> TuningData:
    """Read and check both splits against their manifest; every row must convert to a user -> model chat turn."""
    train, evaluation = read_examples(train_uri), read_examples(eval_uri)
    for uri, rows in ((train_uri, train), (eval_uri, evaluation)):
        for number, row in enumerate(rows, start=1):
            try:
                to_chat(row)
            except DataError as exc:
                raise DataError(f"dataset {uri} example {number}: {exc}") from exc
    prompt_name, prompt_version, instruction_hash = prompt_of(train + evaluation)
    identity = identify({"train": (train_uri, train), "eval": (eval_uri, evaluation)})
    return TuningData(
        train=train, eval=evaluation, train_uri=train_uri, eval_uri=eval_uri, identity=identity,
        prompt_name=prompt_name, prompt_version=int(prompt_version), instruction_hash=instruction_hash,
        validation_percent=validation_percent,
    )


def to_chat(row: dict[str, Any]) -> dict[str, Any]:
    """One example in Vertex AI's supervised-tuning chat format: `{"contents": [user turn, model turn]}`.

    A row that already carries `contents` (the data step's chat files) is checked and passed through.
    """
    if "contents" in row:
        contents = row["contents"]
        _check_contents(contents)
        return {"contents": contents}
    user, model = row.get("input_text"), row.get("output_text")
    if not isinstance(user, str) or not user.strip():
        raise DataError("input_text is missing or empty")
    if not isinstance(model, str) or not model.strip():
        raise DataError("output_text is missing or empty")
    return {"contents": [
        {"role": USER_ROLE, "parts": [{"text": user}]},
        {"role": MODEL_ROLE, "parts": [{"text": model}]},
    ]}


def _check_contents(contents: Any) -> None:
    if not isinstance(contents, list) or len(contents) < 2:
        raise DataError("contents must be a list of at least a user and a model turn")
    for turn in contents:
        if not isinstance(turn, dict) or turn.get("role") not in (USER_ROLE, MODEL_ROLE):
            raise DataError(f"each turn needs role 'user' or 'model', got {turn!r:.80}")
        parts = turn.get("parts")
        if not isinstance(parts, list) or not parts or not all(isinstance(p, dict) and "text" in p for p in parts):
            raise DataError("each turn needs a non-empty parts list of {'text': ...}")
    if contents[-1]["role"] != MODEL_ROLE:
        raise DataError("the last turn must be the model's answer")


def chat_pair(chat: dict[str, Any]) -> tuple[str, str]:
    """(everything before the last model turn as one user text, the last model turn): what a causal LM learns."""
    contents = chat["contents"]
    text = lambda turn: "".join(part["text"] for part in turn["parts"])
    prompt = "\n\n".join(text(turn) for turn in contents[:-1])
    return prompt, text(contents[-1])


def chat_jsonl(chats: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(chat, ensure_ascii=False) + "\n" for chat in chats)


def write_chat_jsonl(chats: list[dict[str, Any]], path: Path) -> Path:
    path.write_text(chat_jsonl(chats), encoding="utf-8")
    return path
