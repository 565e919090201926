"""Cleaning on the real Stack Overflow / Stack Exchange samples in ../shared/data: every body is routed as the
format its source wrote (HTML from BigQuery, SEDE and data dumps; Markdown from the Stack Exchange API and the
Neo4j importer, per `provenance.csv`), Markdown passes through with indented code and literal `<...>` intact, and
the code of HTML bodies survives the conversion line for line."""

from __future__ import annotations

import functools
import re
import unicodedata
from collections import Counter
from pathlib import Path

import pytest

from projects.data.clean import body_format, html_to_text, normalise_whitespace

MARKDOWN_SOURCES = {"neo4j-graph-examples", "seapi-pake97-ugr"}  # see ../shared/data/stackoverflow/README.md
_CONTAINER_PREFIX = re.compile(r"[ >]*")  # list indentation and blockquote markers around a fenced block


def _bodies(shared: Path) -> list[tuple[str, str, str]]:
    """(body, 'html' | 'markdown' as its source wrote it, source) for every non-empty body of both samples."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    provenance = {(row["table"], row["id"]): row["source"]
                  for row in pacsv.read_csv(shared / "stackoverflow" / "provenance.csv").to_pylist()}
    rows = []
    for table in ("posts_questions", "posts_answers"):
        for row in pq.read_table(shared / "stackoverflow" / f"{table}.parquet", columns=["id", "body"]).to_pylist():
            source = provenance[(table, row["id"])]
            if row["body"]:
                rows.append((row["body"], "markdown" if source in MARKDOWN_SOURCES else "html", source))
        path = shared / "stackexchange" / f"{table}.parquet"
        for row in pq.read_table(path, columns=["body", "source"]).to_pylist():
            if row["body"]:  # data dumps and SEDE exports: rendered HTML
                rows.append((row["body"], "html", row["source"]))
    return rows


@pytest.fixture
def real_bodies(shared_data: Path) -> list[tuple[str, str, str]]:
    return _cached_bodies(shared_data)


@functools.lru_cache(maxsize=1)
def _cached_bodies(shared: Path) -> list[tuple[str, str, str]]:
    return _bodies(shared)


def test_every_real_body_is_routed_as_its_source_wrote_it(real_bodies: list[tuple[str, str, str]]) -> None:
    wrong = Counter((source, truth) for body, truth, source in real_bodies if body_format(body) != truth)
    counts = Counter(truth for _, truth, _ in real_bodies)
    assert counts["html"] > 6000 and counts["markdown"] > 3000
    assert not wrong, wrong


def test_markdown_passes_through_with_literal_tags_and_indented_code(
        real_bodies: list[tuple[str, str, str]]) -> None:
    markdown = [body for body, truth, _ in real_bodies if truth == "markdown"]
    with_tags = [body for body in markdown if re.search(r"<[A-Za-z/!]", body)]
    assert len(with_tags) > 300  # the bodies the old `<` regex sent through the HTML converter
    for body in markdown:
        cleaned = html_to_text(body)
        assert cleaned == normalise_whitespace(body)
        for token in re.findall(r"<[^<>\n]{1,40}>", body):
            assert token in cleaned
    indented = next(body for body in with_tags if "\n    <dependency>" in body)
    assert "\n    <dependency>" in html_to_text(indented)


def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text).replace("\u00a0", " ")


def test_code_of_real_html_bodies_survives_line_for_line(real_bodies: list[tuple[str, str, str]]) -> None:
    """Each line of every <pre> block (as lxml reads it, entities decoded) is a line of the Markdown, indentation
    kept, behind at most a list indent or blockquote marker; inline <code> text is kept too."""
    import lxml.html

    blocks = spans = 0
    for body, truth, source in real_bodies:
        if truth != "html":
            continue
        cleaned = html_to_text(body)
        lines = cleaned.split("\n")
        flat = " ".join(" ".join(_CONTAINER_PREFIX.sub("", line, count=1) for line in lines).split())
        root = lxml.html.fragment_fromstring(body, create_parent="div")
        for pre in root.iter("pre"):
            blocks += 1
            for line in _nfc(pre.text_content()).split("\n"):
                code = line.rstrip()
                assert not code.strip() or any(
                    out.endswith(code) and not _CONTAINER_PREFIX.sub("", out[:len(out) - len(code)]) for out in lines
                ), (source, code, cleaned)
        for span in root.iter("code"):
            if any(a.tag in ("pre", "blockquote") for a in span.iterancestors()) or span.find(".//a") is not None \
                    or "`" in span.text_content():
                continue  # no link inside a Markdown code span; a backtick changes its delimiters; a span that
                # crosses lines inside a quote gets the quote's markers
            spans += 1
            text = " ".join(_nfc(span.text_content()).split())
            assert text in flat, (source, text)
    assert blocks > 1500 and spans > 3000


@pytest.mark.parametrize(("body", "cleaned"), [
    ("Returns `{score: <int>}` when a < b", "Returns `{score: <int>}` when a < b"),
    ("The model answers {score: <int>}:\n\n    def f(x):\n        return x < 3\n",
     "The model answers {score: <int>}:\n\n    def f(x):\n        return x < 3"),
    ("    <dependency>\n      <x>1</x>\n    </dependency>\n", "    <dependency>\n      <x>1</x>\n    </dependency>"),
    ("<p>Use <code>{score: &lt;int&gt;}</code> when a &lt; b</p>", "Use `{score: <int>}` when a < b"),
    ("<pre><code>def f():\n    return a &lt; b\n\n\n\nf()\n</code></pre>",
     "```\ndef f():\n    return a < b\n\n\n\nf()\n```"),
    ("<p>first</p>\n\n\n\n<p>second</p>", "first\n\nsecond"),
])
def test_both_routes_keep_code_and_literal_text(body: str, cleaned: str) -> None:
    assert html_to_text(body) == cleaned
