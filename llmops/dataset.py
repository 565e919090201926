"""The dataset contract every step shares: the example schema, the reader, and (below) the one digest."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from llmops.errors import DataError
from llmops.jsonl import json_records
from llmops.tracking import download

REQUIRED_KEYS = ("id", "question_id", "question", "answer", "input_text", "output_text", "prompt_name",
                 "prompt_version", "instruction_hash")


def read_examples(uri: str) -> list[dict[str, Any]]:
    """Load a JSONL split from a `runs:/`, `models:/` or local URI; a bad line is named in the error."""
    with tempfile.TemporaryDirectory() as tmp:
        path = download(uri, Path(tmp))
        if path.is_dir():
            raise DataError(f"dataset {uri} is a directory, expected a JSONL file")
        rows = []
        with path.open(encoding="utf-8") as handle:
            for number, row in json_records(handle, f"dataset {uri}", DataError):
                missing = [k for k in REQUIRED_KEYS if k not in row]
                if missing:
                    raise DataError(f"dataset {uri} line {number} lacks key(s): {', '.join(missing)}")
                rows.append(row)
    if not rows:
        raise DataError(f"dataset {uri} holds no examples")
    return rows


def prompt_of(examples: list[dict[str, Any]]) -> tuple[str, int, str]:
    """(prompt name, version, instruction hash) the examples were built with; they must agree."""
    seen = {(e["prompt_name"], int(e["prompt_version"]), e["instruction_hash"]) for e in examples}
    if len(seen) != 1:
        raise DataError(f"dataset mixes {len(seen)} prompt versions: {sorted(seen)}")
    return seen.pop()
