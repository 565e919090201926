"""Review batches: the answers people should look at and correct, built from the inference log and the store.

Queues (`llmops feedback review --queue ...`):
- `low-rated`: answers rated low (thumbs down, or <= feedback.low_rating_max) that nobody corrected yet, the most
  often rated low first;
- `abstained`: questions the model declined to answer (not blocked), the most often asked first;
- `sampled`: a seeded uniform sample of distinct answered questions, to find what nobody complained about;
- `drift`: the example questions of a monitoring run's alarms (`monitoring.examples.drift_examples_from_run`),
  matched to their newest log record.
A question already corrected is never queued again; each question appears once (its newest request). The batch is a
CSV/JSONL file with the context (question, answer, versions, why it is queued) and empty `rating`,
`corrected_answer`, `comment`, `user` columns; `llmops feedback import` takes it back (source `review`).
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from evaluation.review import write_rows
from llmops.errors import DataError
from projects.data.feedback import is_low, newest_per_user, question_key

Queue = Literal["low-rated", "abstained", "sampled", "drift"]
QUEUES: tuple[str, ...] = ("low-rated", "abstained", "sampled", "drift")
REVIEW_COLUMNS = ["request_id", "queue", "reason", "model_name", "model_version", "time", "question", "answer",
                  "rating", "corrected_answer", "comment", "user"]


def _served(rows: Sequence[dict[str, Any]], model_name: str | None, model_version: str | None) -> list[dict[str, Any]]:
    """Answers a client saw: successful, not a shadow copy, of the model (and version) asked for."""
    return [r for r in rows if (r.get("status") or 0) < 400 and r.get("role") != "shadow"
            and (model_name is None or r.get("model_name") == model_name)
            and (model_version is None or str(r.get("model_version")) == str(model_version))]


def _row(record: dict[str, Any], queue: str, reason: str) -> dict[str, Any]:
    when = record.get("time")
    return {"request_id": record["request_id"], "queue": queue, "reason": reason,
            "model_name": record.get("model_name"), "model_version": record.get("model_version"),
            "time": when.isoformat() if hasattr(when, "isoformat") else when, "question": record.get("question"),
            "answer": record.get("answer"), "rating": "", "corrected_answer": "", "comment": "", "user": ""}


def _newest_per_question(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    newest: dict[str, dict[str, Any]] = {}
    for row in sorted(rows, key=lambda r: (r["time"], r["request_id"])):
        newest[question_key(row.get("question") or "")] = row
    return newest


def build_batch(queue: str, log_rows: Sequence[dict[str, Any]], feedback_rows: Sequence[dict[str, Any]], *, n: int,
                seed: int = 0, low_rating_max: int = 2, model_name: str | None = None,
                model_version: str | None = None,
                drift: Sequence[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The batch rows of `queue` (pure: the log's and store's rows in, the file's rows out)."""
    if queue not in QUEUES:
        raise DataError(f"unknown review queue {queue!r} (known: {', '.join(QUEUES)})")
    if n < 1:
        raise DataError("a review batch needs at least one row (--n)")
    effective = newest_per_user(list(feedback_rows))
    corrected = {question_key(r.get("question") or "") for r in effective if r.get("corrected_answer")}
    served = [r for r in _served(log_rows, model_name, model_version)
              if question_key(r.get("question") or "") not in corrected]
    if queue == "low-rated":
        low = [r for r in effective if is_low(r, low_rating_max) and not r.get("corrected_answer")
               and (model_name is None or r.get("model_name") == model_name)
               and (model_version is None or str(r.get("model_version")) == str(model_version))
               and question_key(r.get("question") or "") not in corrected]
        by_question: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for record in low:
            by_question[question_key(record.get("question") or "")].append(record)
        ranked = sorted(by_question.values(), key=lambda group: (-len(group), -max(r["time"] for r in group)
                                                                 .timestamp()))
        out = []
        for group in ranked[:n]:
            newest = max(group, key=lambda r: r["time"])
            out.append(_row(newest, queue, f"rated low {len(group)} time(s)"))
        return out
    if queue == "abstained":
        abstained = [r for r in served if r.get("abstained") and not r.get("safety_blocked")]
        asked = Counter(question_key(r.get("question") or "") for r in abstained)
        newest = _newest_per_question(abstained)
        ranked = sorted(newest.items(), key=lambda kv: (-asked[kv[0]], -kv[1]["time"].timestamp()))
        return [_row(row, queue, f"abstained, asked {asked[key]} time(s)") for key, row in ranked[:n]]
    if queue == "sampled":
        answered = [r for r in served if not r.get("abstained") and not r.get("safety_blocked")]
        pool = sorted(_newest_per_question(answered).values(), key=lambda r: r["request_id"])
        picked = random.Random(seed).sample(pool, min(n, len(pool)))
        return [_row(row, queue, f"random sample (seed {seed})") for row in sorted(picked, key=lambda r: r["time"])]
    if not drift:
        raise DataError("the drift queue needs drift examples: pass --monitor-run RUN_ID (a `llmops monitor run` "
                        "that alarmed)")
    newest = _newest_per_question(served)
    out, seen = [], set()
    for example in drift:
        key = question_key(str(example.get("question") or ""))
        if key in newest and key not in seen:
            seen.add(key)
            feature = example.get("feature") or example.get("kind") or "drift"
            out.append(_row(newest[key], queue, f"drift example ({feature})"))
        if len(out) >= n:
            break
    return out


def write_batch(path: Path, rows: list[dict[str, Any]]) -> int:
    """The batch file (header only when the queue is empty: nothing to review is an answer, not an error)."""
    return write_rows(Path(path), REVIEW_COLUMNS, rows)
