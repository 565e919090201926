"""Reading JSONL records with errors that name the source and the line."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from llmops.errors import LlmopsError


def json_records(lines: Iterable[str], source: str, error: type[LlmopsError]) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line; a line that is not a JSON object raises `error` naming it."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise error(f"{source} line {number} is not JSON: {exc.msg}") from exc
        if not isinstance(item, dict):
            raise error(f"{source} line {number} is not a JSON object")
        yield number, item
