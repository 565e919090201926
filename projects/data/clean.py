"""Cleaning one streamed batch of query rows: HTML to Markdown, whitespace, length limits, keys for dedup and split.

Pure functions over Arrow record batches, so they run in worker processes and never see more than one batch.
HTML goes through html-to-markdown (a Rust converter, ~20x faster than markdownify, code blocks kept as fenced
blocks); bodies that hold no HTML at all (Markdown from newer dumps) pass through untouched.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from projects.data.digest import row_hash
from projects.data.split import split_of

_HTML = re.compile(r"<[A-Za-z/!]|&(?:#\d+|#x[0-9A-Fa-f]+|[A-Za-z][A-Za-z0-9]*);")
_BLANK_LINES = re.compile(r"\n{3,}")
_TRAILING_SPACE = re.compile(r"[ \t]+\n")
_WORD = re.compile(r"[a-z0-9]+(?:[+#.][a-z0-9+#]*)*")
# Words that carry no topic: two titles that differ only by these are near-duplicates.
_STOP = frozenset(
    ["a", "an", "the", "and", "or", "of", "to", "in", "on", "for", "with", "without", "by", "from", "at", "as", "is", "are", "was", "were", "be", "been", "it", "its", "this", "that", "these", "those", "how", "do", "does", "did", "can", "could", "should", "would", "i", "my", "me", "we", "you", "your", "what", "why", "when", "where", "which", "who", "whom", "get", "using", "use", "used", "into", "not", "no", "vs"]
)
MIN_TITLE_TOKENS = 2
MIN_BODY_WORDS = 8

EXAMPLE_COLUMNS = ("id", "question_id", "answer_id", "site", "question", "answer", "input_text", "output_text",
                   "tags", "link", "split", "prompt_name", "prompt_version", "instruction_hash")
_INT_COLUMNS = {"question_id", "answer_id", "prompt_version"}
# Examples as written, plus the keys the SQL stages use: dedup, near-duplicate group, leakage, digest.
CLEAN_SCHEMA = pa.schema(
    [(name, pa.int64() if name in _INT_COLUMNS else pa.string()) for name in EXAMPLE_COLUMNS]
    + [("group_key", pa.string()), ("body_key", pa.string()), ("exact_key", pa.string()), ("row_hash", pa.string())]
)


@dataclass(frozen=True)
class CleanOptions:
    """Everything a worker needs to turn query rows into finished examples (picklable, no prompt object)."""

    default_site: str = "stackoverflow.com"
    min_answer_chars: int = 1
    max_question_chars: int = 20_000
    max_answer_chars: int = 20_000
    template_parts: tuple[str, ...] = ("", "")  # the rendered prompt split around {{question}}
    prompt_name: str = ""
    prompt_version: int = 0
    instruction_hash: str = ""
    eval_percent: int = 20
    test_percent: int = 0


def _convert(html: str) -> str:
    try:
        import html_to_markdown

        return html_to_markdown.convert(html).content
    except ImportError:  # pragma: no cover - the dependency is declared; markdownify is the slower fallback
        from markdownify import markdownify

        return markdownify(html, heading_style="ATX", bullets="-", code_language="")


def normalise_whitespace(text: str) -> str:
    """NFC, no NBSP or CR, no trailing spaces, at most one blank line; code indentation is kept."""
    if not text.isascii():  # the checks below skip work most bodies do not need (this runs per row)
        text = unicodedata.normalize("NFC", text).replace("\u00a0", " ")
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if " \n" in text or "\t\n" in text:
        text = _TRAILING_SPACE.sub("\n", text)
    if "\n\n\n" in text:
        text = _BLANK_LINES.sub("\n\n", text)
    return text.strip()


def html_to_text(body: str | None) -> str:
    """HTML (or Markdown, which passes through) to Markdown text; code blocks become fenced blocks."""
    if not body:
        return ""
    text = _convert(body) if _HTML.search(body) else body
    return normalise_whitespace(text)


def question_text(title: str | None, body: str | None) -> str:
    """What a user asks: title and body, as the seeds' CONCAT(title, body), cleaned."""
    title = normalise_whitespace(title or "")
    return f"{title}\n\n{html_to_text(body)}".strip()


def _tokens(text: str) -> list[str]:
    return _WORD.findall(unicodedata.normalize("NFKC", text).lower())


def title_key(title: str | None) -> str | None:
    """Near-duplicate key: the set of topic words of a title (stop words dropped, order and case ignored).

    "How do I sort a list in Python?" and "python: sort list" share it. None when fewer than two topic words
    remain, so short titles never glue unrelated questions together.
    """
    words = sorted({w for w in _tokens(title or "") if w not in _STOP})
    if len(words) < MIN_TITLE_TOKENS:
        return None
    return hashlib.sha1(" ".join(words).encode()).hexdigest()[:16]


def group_key(site: str, question_id: int, title: str | None) -> str:
    """What the split hashes: the near-duplicate title key within a site, else (site, question id)."""
    key = title_key(title)
    return f"{site}/t:{key}" if key else f"{site}/q:{question_id}"


def example_id(site: str, question_id: int, default_site: str) -> str:
    """`123` on the default site (as before sites existed), `site/123` elsewhere: ids are unique per site."""
    return str(question_id) if site == default_site else f"{site}/{question_id}"


def body_key(question: str) -> str | None:
    """Leakage key, independent of the split's title key: the first 64 lower-cased words of title + body
    (split on whitespace: cheap enough to run on every row)."""
    words = question[:800].lower().split()
    if len(words) < MIN_BODY_WORDS:
        return None
    return hashlib.sha1(" ".join(words[:64]).encode()).hexdigest()[:16]


def clean_batch(batch: pa.RecordBatch, options: CleanOptions) -> tuple[pa.Table, dict[str, int], dict[str, int]]:
    """Clean one batch into finished examples; returns (rows in CLEAN_SCHEMA, dropped-by-reason, nulls)."""
    nulls = {name: batch.column(i).null_count for i, name in enumerate(batch.schema.names)}
    dropped: Counter[str] = Counter()
    out: dict[str, list[Any]] = {name: [] for name in CLEAN_SCHEMA.names}
    columns = batch.to_pydict()
    sites = columns.get("site") or [None] * batch.num_rows
    prompt = {"prompt_name": options.prompt_name, "prompt_version": options.prompt_version,
              "instruction_hash": options.instruction_hash}
    for i in range(batch.num_rows):
        qid, aid = columns["question_id"][i], columns["answer_id"][i]
        if qid is None or aid is None:
            dropped["missing_id"] += 1
            continue
        site = sites[i] or options.default_site
        title = columns["title"][i]
        question = question_text(title, columns["question_body"][i])
        answer = html_to_text(columns["answer_body"][i])
        if not question:
            dropped["empty_question"] += 1
        elif len(answer) < options.min_answer_chars:
            dropped["empty_answer"] += 1
        elif len(question) > options.max_question_chars:
            dropped["question_too_long"] += 1
        elif len(answer) > options.max_answer_chars:
            dropped["answer_too_long"] += 1
        else:
            qid, aid = int(qid), int(aid)
            group = group_key(site, qid, title)
            example = {
                "id": example_id(site, qid, options.default_site), "question_id": qid, "answer_id": aid,
                "site": site, "question": question, "answer": answer,
                "input_text": question.join(options.template_parts), "output_text": answer,
                "tags": columns["tags"][i] or "", "link": f"https://{site}/q/{qid}",
                "split": split_of(group, options.eval_percent, test_percent=options.test_percent), **prompt,
            }
            for name, value in example.items():
                out[name].append(value)
            out["group_key"].append(group)
            out["body_key"].append(body_key(question))
            out["exact_key"].append(hashlib.sha1(f"{question.lower()}\x00{answer.lower()}".encode()).hexdigest())
            out["row_hash"].append(row_hash(example))
    return pa.table(out, schema=CLEAN_SCHEMA), dict(dropped), nulls


def clean_batch_ipc(payload: tuple[bytes, Mapping[str, Any]]) -> tuple[bytes, dict[str, int], dict[str, int]]:
    """Worker entry point: Arrow IPC bytes in and out (cheap to pass between processes)."""
    data, options = payload
    batch = pa.ipc.open_stream(data).read_next_batch()
    table, dropped, nulls = clean_batch(batch, CleanOptions(**options))
    return to_ipc(table), dropped, nulls


def to_ipc(data: pa.Table | pa.RecordBatch) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, data.schema) as writer:
        writer.write(data)
    return sink.getvalue().to_pybytes()


def from_ipc(data: bytes) -> pa.Table:
    return pa.ipc.open_stream(data).read_all()
