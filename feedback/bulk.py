"""Bulk feedback: import a CSV/JSONL file (a review session's batch, or feedback gathered elsewhere) and export the
store, through the evaluation review code's file readers and writers (`evaluation.review.read_rows/write_rows`).

An import is all or nothing: every row is checked and resolved first (a bad row is named by its line number), then
the whole file becomes one part of the store. Rows with neither a rating nor a correction are skipped (a review
batch's unreviewed rows); a row with a correction and no rating is rated the lowest of the schema (the answer was
wrong enough to rewrite). A file with a `queue` column is a review batch (`llmops feedback review`): its records
have the source `review`, which outranks other corrections of the same question (docs/feedback.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from evaluation.review import read_rows, write_rows
from feedback.capture import FeedbackInput, FeedbackService, Taken, parse_input
from feedback.ratings import lowest
from llmops.errors import DataError, InputError
from llmops.records import FEEDBACK_SCHEMA, read_feedback

FEEDBACK_FIELDS = tuple(FeedbackInput.model_fields)
# The context columns of a review batch: written for the reviewer, ignored on import.
CONTEXT_COLUMNS = ("queue", "reason", "model_name", "model_version", "time", "question", "answer")


@dataclass(frozen=True)
class ImportOutcome:
    taken: list[Taken]
    skipped: int
    source: str

    def as_dict(self) -> dict[str, Any]:
        return {"imported": len(self.taken), "skipped": self.skipped, "source": self.source,
                "corrections": sum(1 for t in self.taken if t.record["corrected_answer"] is not None),
                "assessments": sum(1 for t in self.taken if t.assessments == "logged"),
                "feedback_ids": [t.record["feedback_id"] for t in self.taken]}


def _cell(value: Any) -> Any:
    """CSV cells are strings; an empty one means "not given"."""
    if isinstance(value, str) and not value.strip():
        return None
    return value


def parse_rows(path: Path, rating_kind: str) -> tuple[list[FeedbackInput], list[str], int, bool]:
    """(inputs, where each came from, rows skipped, is a review batch) - every row checked, none resolved yet."""
    rows = read_rows(path, "feedback file")
    if not rows:
        raise DataError(f"feedback file {path} holds no rows")
    known = set(FEEDBACK_FIELDS) | set(CONTEXT_COLUMNS)
    review = "queue" in rows[0][1]
    items, where, skipped = [], [], 0
    for number, row in rows:
        unknown = sorted(set(row) - known)
        if unknown:
            raise DataError(f"feedback file {path} line {number}: unknown column(s) {', '.join(map(str, unknown))} "
                            f"(known: {', '.join(FEEDBACK_FIELDS)}; context columns ignored: "
                            f"{', '.join(CONTEXT_COLUMNS)})")
        data = {key: _cell(row.get(key)) for key in FEEDBACK_FIELDS if _cell(row.get(key)) is not None}
        if "rating" not in data and "corrected_answer" not in data:
            skipped += 1
            continue
        if "corrected_answer" not in data and isinstance(row.get("corrected_answer"), str) \
                and row["corrected_answer"] and not row["corrected_answer"].strip():
            raise InputError(f"feedback file {path} line {number}: empty correction")
        if "rating" not in data:
            data["rating"] = lowest(rating_kind)
        items.append(parse_input(data, f"feedback file {path} line {number}"))
        where.append(f"feedback file {path} line {number}")
    return items, where, skipped, review


def import_file(service: FeedbackService, path: Path, user: str | None, now: datetime | None = None) -> ImportOutcome:
    """Check every row, resolve every request id, then store the file as one part."""
    items, where, skipped, review = parse_rows(Path(path), service.cfg.rating)
    if not items:
        raise DataError(f"feedback file {path}: no row has a rating or a correction ({skipped} row(s) left blank)")
    users = []
    for item, place in zip(items, where, strict=True):
        who = (item.user or user or "").strip()
        if not who:
            raise InputError(f"{place}: who gave this feedback? fill the user column or pass --user")
        users.append(who)
    source = "review" if review else "import"
    taken = service.take(items, source=source, where=where, users=users, now=now or datetime.now(UTC))
    return ImportOutcome(taken, skipped, source)


def export_store(store_uri: str, path: Path, model_name: str | None = None, model_version: str | None = None) -> int:
    """The store's records (optionally of one model / version) as CSV or JSONL, every schema field."""
    records = [r for r in read_feedback(store_uri).to_pylist()
               if (model_name is None or r["model_name"] == model_name)
               and (model_version is None or str(r["model_version"]) == str(model_version))]
    for record in records:
        record["time"] = record["time"].isoformat() if record.get("time") else None
    return write_rows(Path(path), list(FEEDBACK_SCHEMA.names), sorted(records, key=lambda r: r["time"] or ""))
