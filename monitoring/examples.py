"""Drift examples for review batches (the feedback component): the questions that drive an alarm."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from llmops.errors import NotFoundError
from monitoring.compare import Comparison

ARTIFACT = "drift_examples.jsonl"


def drift_examples(comparison: Comparison, limit: int = 20) -> list[dict[str, Any]]:
    """`{feature, rank, question}` per example, the most telling first, for the alarms of one comparison."""
    return comparison.examples(limit)


def drift_examples_from_run(run_id: str, limit: int | None = None) -> list[dict[str, Any]]:
    """The examples a `llmops monitor run` logged (one line per example: model, window, kind, feature, question).

    Questions are PII-redacted (they come from the inference log and are redacted again before logging)."""
    from llmops.tracking import download

    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = download(f"runs:/{run_id}/{ARTIFACT}", Path(tmp))
        except NotFoundError as exc:
            raise NotFoundError(f"run {run_id} has no {ARTIFACT}: not a monitor run ({exc})") from exc
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return rows if limit is None else rows[:limit]
