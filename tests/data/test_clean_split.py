"""Cleaning one batch (messy rows included) and the stable, near-duplicate-aware split."""

from __future__ import annotations

import pyarrow as pa

from projects.data.clean import (
    CleanOptions,
    clean_batch,
    group_key,
    html_to_text,
    normalise_whitespace,
    title_key,
)
from projects.data.split import split_of


def test_html_becomes_markdown_with_code_and_markdown_passes_through() -> None:
    text = html_to_text("<p>Use <code>a[::-1]</code> &amp; more</p><pre><code>if x &lt; 3:\n    print(x)\n</code></pre>")
    assert "`a[::-1]` & more" in text and "```\nif x < 3:\n    print(x)\n```" in text
    markdown = "Use `sorted()`:\n\n    xs = sorted(ys)\n\nand **done**"
    assert html_to_text(markdown) == markdown  # Markdown bodies (newer dumps) keep their indented code
    assert html_to_text(None) == "" and html_to_text("<p>  </p>") == ""


def test_whitespace_is_normalised_but_code_indentation_kept() -> None:
    raw = "caf\u0065\u0301\u00a0ok  \r\n\r\n\r\n\r\n    indented\t\nend  "
    assert normalise_whitespace(raw) == "caf\u00e9 ok\n\n    indented\nend"


def test_titles_with_the_same_topic_words_are_near_duplicates() -> None:
    assert title_key("How do I sort a list in Python?") == title_key("python: sort list")
    assert title_key("How to sort a list in Python") != title_key("How to sort a dict in Python")
    assert title_key("Why?") is None  # too few topic words to group on
    assert group_key("so", 7, "Why?") == "so/q:7"
    assert group_key("so", 7, "sort list python").startswith("so/t:")


def _batch(rows: list[dict]) -> pa.RecordBatch:
    names = ["site", "question_id", "title", "question_body", "tags", "answer_id", "answer_body"]
    return pa.RecordBatch.from_pylist([{n: r.get(n) for n in names} for r in rows], schema=pa.schema([
        ("site", pa.string()), ("question_id", pa.int64()), ("title", pa.string()), ("question_body", pa.string()),
        ("tags", pa.string()), ("answer_id", pa.int64()), ("answer_body", pa.string())]))


def test_messy_rows_are_dropped_and_counted_not_crashed_on() -> None:
    rows = [
        {"site": None, "question_id": 1, "title": "Sort a list", "question_body": "<p>How?</p>", "answer_id": 11,
         "answer_body": "<p>Use <code>sorted</code>.</p>", "tags": None},
        {"site": "ai.se", "question_id": 1, "title": "Other site, same id", "question_body": "Markdown *body*",
         "answer_id": 11, "answer_body": "fine"},
        {"question_id": 2, "title": None, "question_body": None, "answer_id": 12, "answer_body": "x"},
        {"question_id": 3, "title": "Empty answer", "question_body": "<p>q</p>", "answer_id": 13,
         "answer_body": "<p> </p>"},
        {"question_id": 4, "title": "Too long", "question_body": "x" * 500, "answer_id": 14, "answer_body": "ok"},
        {"question_id": 5, "title": "Long answer", "question_body": "q", "answer_id": 15, "answer_body": "y" * 300},
        {"question_id": None, "title": "No id", "question_body": "q", "answer_id": 16, "answer_body": "a"},
    ]
    table, dropped, nulls = clean_batch(_batch(rows), CleanOptions(max_question_chars=200, max_answer_chars=200))
    assert table.column("id").to_pylist() == ["1", "ai.se/1"]  # ids unique per site
    assert table.column("answer").to_pylist() == ["Use `sorted`.", "fine"]
    assert table.column("tags").to_pylist() == ["", ""]
    assert dropped == {"empty_question": 1, "empty_answer": 1, "question_too_long": 1, "answer_too_long": 1,
                       "missing_id": 1}
    assert nulls["title"] == 1 and nulls["question_body"] == 1 and nulls["site"] == 6


def test_split_is_stable_and_groups_stay_together() -> None:
    keys = [group_key("so", i, None) for i in range(5000)]
    first = [split_of(k, 20, test_percent=10) for k in keys]
    assert first == [split_of(k, 20, test_percent=10) for k in keys]
    assert 0.17 < first.count("eval") / 5000 < 0.23 and 0.07 < first.count("test") / 5000 < 0.13
    # turning the test split off never moves an eval example, and adding data never moves anything
    assert all(s == "eval" for s, t in zip([split_of(k, 20) for k in keys], first, strict=True) if t == "eval")
    # near-duplicate titles share a key, hence a split, whatever their question ids
    twins = [group_key("so", i, t) for i, t in ((1, "Sort a list in Python"), (99, "python sort list?"))]
    assert twins[0] == twins[1]
