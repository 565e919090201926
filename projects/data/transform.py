"""Pure transforms from warehouse rows to instruction examples: clean, template, split, digest."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from markdownify import markdownify

from llmops.errors import DataError

_BLANK_LINES = re.compile(r"\n{3,}")
_TRAILING_SPACE = re.compile(r"[ \t]+\n")

QUERY_COLUMNS = ("question_id", "title", "question_body", "answer_id", "answer_body")


def html_to_text(html: str | None) -> str:
    """HTML (or Markdown, which passes through) to Markdown text; code blocks become fenced blocks."""
    if not html:
        return ""
    text = markdownify(html, heading_style="ATX", bullets="-", code_language="")
    text = _TRAILING_SPACE.sub("\n", text.replace("\r\n", "\n"))
    return _BLANK_LINES.sub("\n\n", text).strip()


def question_text(title: str | None, body_html: str | None) -> str:
    """What a user asks: title and body, as the seeds' CONCAT(title, body), cleaned."""
    title = (title or "").strip()
    body = html_to_text(body_html)
    return f"{title}\n\n{body}".strip()


def split_of(question_id: int | str, eval_percent: int, namespace: str = "") -> str:
    """Stable train/eval assignment: a hash of the id, so adding data never moves an existing example."""
    key = f"{namespace}/{question_id}".encode()
    bucket = int(hashlib.sha256(key).hexdigest()[:8], 16) % 100
    return "eval" if bucket < eval_percent else "train"


def build_examples(
    rows: Iterable[Mapping[str, Any]], prompt: Any, link_base: str = "https://stackoverflow.com/q/"
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Apply the instruction template to question/answer rows; returns (examples, dropped-by-reason)."""
    examples: list[dict[str, Any]] = []
    dropped = {"empty_question": 0, "empty_answer": 0}
    for row in rows:
        question = question_text(row.get("title"), row.get("question_body"))
        answer = html_to_text(row.get("answer_body"))
        if not question:
            dropped["empty_question"] += 1
            continue
        if not answer:
            dropped["empty_answer"] += 1
            continue
        qid = int(row["question_id"])
        examples.append(
            {
                "id": str(qid),
                "question_id": qid,
                "answer_id": int(row["answer_id"]),
                "question": question,
                "answer": answer,
                "input_text": prompt.format(question=question),
                "output_text": answer,
                "tags": row.get("tags") or "",
                "link": f"{link_base}{qid}",
                "prompt_name": prompt.name,
                "prompt_version": prompt.version,
                "instruction_hash": prompt.instruction_hash,
            }
        )
    return examples, dropped


def check_columns(column_names: Iterable[str]) -> None:
    missing = [c for c in QUERY_COLUMNS if c not in set(column_names)]
    if missing:
        raise DataError(f"query result is missing column(s): {', '.join(missing)}")


def dataset_digest(examples: Iterable[Mapping[str, Any]]) -> str:
    """Content digest of examples in id order: the same inputs always give the same version."""
    hasher = hashlib.sha256()
    for example in sorted(examples, key=lambda e: e["id"]):
        hasher.update(json.dumps(example, sort_keys=True, ensure_ascii=False).encode("utf-8"))
        hasher.update(b"\n")
    return hasher.hexdigest()[:16]
