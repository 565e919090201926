"""Pure transforms of the data step: cleaning entry points, the split, the query result's columns."""

from __future__ import annotations

from collections.abc import Iterable

from llmops.errors import DataError
from projects.data.clean import html_to_text, question_text
from projects.data.split import split_of

__all__ = ["QUERY_COLUMNS", "check_columns", "html_to_text", "question_text", "split_of"]

QUERY_COLUMNS = ("question_id", "title", "question_body", "tags", "answer_id", "answer_body")


def check_columns(column_names: Iterable[str]) -> None:
    missing = [c for c in QUERY_COLUMNS if c not in set(column_names)]
    if missing:
        raise DataError(f"query result is missing column(s): {', '.join(missing)}")
