"""Real question pools for the monitoring tests: data/sample (446 questions) and ../shared/data (thousands), as the
data step writes them (title + cleaned body, `projects.data.clean.question_text`)."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "data" / "sample" / "posts_questions.jsonl"
SHARED = REPO.parent / "shared" / "data"


@lru_cache(maxsize=None)
def sample_questions() -> tuple[str, ...]:
    from projects.data.clean import question_text

    rows = [json.loads(line) for line in SAMPLE.read_text(encoding="utf-8").splitlines() if line.strip()]
    return tuple(question_text(r["title"], r["body"]) for r in rows)


@lru_cache(maxsize=None)
def sample_rows() -> tuple[dict, ...]:
    return tuple(json.loads(line) for line in SAMPLE.read_text(encoding="utf-8").splitlines() if line.strip())


@lru_cache(maxsize=None)
def shared_questions(site: str | None = "stackoverflow.com", root: Path = SHARED) -> tuple[str, ...]:
    """Questions of one site from both shared samples (the stackoverflow folder is all stackoverflow.com)."""
    import pyarrow.parquet as pq

    from projects.data.clean import question_text

    out = []
    for folder in ("stackoverflow", "stackexchange"):
        table = pq.read_table(root / folder / "posts_questions.parquet").to_pylist()
        for row in table:
            row_site = row.get("site") or "stackoverflow.com"
            if site is None or row_site == site:
                text = question_text(row.get("title"), row.get("body"))
                if text:
                    out.append(text)
    return tuple(out)
