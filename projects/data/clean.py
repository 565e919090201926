"""Cleaning one streamed batch of query rows into finished examples: HTML to Markdown, whitespace, length limits,
and the keys later SQL stages use (exact-duplicate key, near-duplicate group and split, leakage key, row hash).

Pure functions over Arrow record batches that never see more than one batch, run by a pool of threads or
processes (`prepare.cleaned_batches`). HTML goes through html-to-markdown (a Rust converter, ~20x faster than
markdownify, code blocks kept as fenced blocks; it and hashlib release the GIL). Bodies that hold no HTML at all
(Markdown from newer dumps) pass through untouched. Keys are computed here rather than in SQL: measured on 1 KB bodies, Python's hashlib and
`str.split` cost a fraction of DuckDB's sha256 and regex-split per row.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from llmops.dataset import EXAMPLE_COLUMNS, INT_COLUMNS
from projects.data.split import split_of

_HTML = re.compile(r"<[A-Za-z/!]|&(?:#\d+|#x[0-9A-Fa-f]+|[A-Za-z][A-Za-z0-9]*);")
_BLANK_LINES = re.compile(r"\n{3,}")
_TRAILING_SPACE = re.compile(r"[ \t]+\n")
_WORD = re.compile(r"[a-z0-9]+(?:[+#.][a-z0-9+#]*)*")
# Words that carry no topic: two titles that differ only by these are near-duplicates.
STOP_WORDS = frozenset(
    ["a", "an", "the", "and", "or", "of", "to", "in", "on", "for", "with", "without", "by", "from", "at", "as", "is", "are", "was", "were", "be", "been", "it", "its", "this", "that", "these", "those", "how", "do", "does", "did", "can", "could", "should", "would", "i", "my", "me", "we", "you", "your", "what", "why", "when", "where", "which", "who", "whom", "get", "using", "use", "used", "into", "not", "no", "vs"]
)
MIN_TITLE_TOKENS = 2

MIN_BODY_WORDS = 8

# Examples as written, plus the keys the SQL stages use: dedup, near-duplicate group, leakage, digest.
CLEAN_SCHEMA = pa.schema(
    [(name, pa.int64() if name in INT_COLUMNS else pa.string()) for name in EXAMPLE_COLUMNS]
    + [("group_key", pa.string()), ("body_key", pa.string()), ("exact_key", pa.string()), ("row_hash", pa.string())]
)


@dataclass(frozen=True)
class CleanOptions:
    """Everything a cleaning thread needs to turn query rows into finished examples."""

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
    words = sorted({w for w in _tokens(title or "") if w not in STOP_WORDS})
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


def _row_hash(id_: str, qid: int, aid: int, site: str, question: str, answer: str, input_text: str, tags: str,
              link: str, split: str, options: CleanOptions) -> str:
    """`llmops.dataset.row_hash` of the example, spelled out in key order (the generic one costs 3x per row)."""
    canonical = (
        f"answer\x1f{answer}\x1eanswer_id\x1f{aid}\x1eid\x1f{id_}\x1einput_text\x1f{input_text}"
        f"\x1einstruction_hash\x1f{options.instruction_hash}\x1elink\x1f{link}\x1eoutput_text\x1f{answer}"
        f"\x1eprompt_name\x1f{options.prompt_name}\x1eprompt_version\x1f{options.prompt_version}"
        f"\x1equestion\x1f{question}\x1equestion_id\x1f{qid}\x1esite\x1f{site}\x1esplit\x1f{split}\x1etags\x1f{tags}"
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def clean_batch(batch: pa.RecordBatch, options: CleanOptions) -> tuple[pa.Table, dict[str, int], dict[str, int]]:
    """Clean one batch into finished examples; returns (rows in CLEAN_SCHEMA, dropped-by-reason, nulls)."""
    nulls = {name: batch.column(i).null_count for i, name in enumerate(batch.schema.names)}
    dropped: Counter[str] = Counter()
    columns = {name: batch.column(name).to_pylist()
               for name in ("question_id", "answer_id", "title", "question_body", "answer_body", "tags")}
    sites = batch.column("site").to_pylist() if "site" in batch.schema.names else [None] * batch.num_rows
    out: dict[str, list] = {name: [] for name in ("id", "question_id", "answer_id", "site", "question", "answer",
                                                  "input_text", "tags", "link", "split", "group_key", "body_key",
                                                  "exact_key", "row_hash")}
    (ids, qids, aids, out_sites, questions, answers, inputs, out_tags, links, splits, groups, body_keys,
     exact_keys, row_hashes) = out.values()
    default_site, join_template = options.default_site, options.template_parts
    for i, (qid, aid) in enumerate(zip(columns["question_id"], columns["answer_id"])):
        if qid is None or aid is None:
            dropped["missing_id"] += 1
            continue
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
            site = sites[i] or default_site
            qid, aid = int(qid), int(aid)
            id_ = str(qid) if site == default_site else f"{site}/{qid}"
            group = group_key(site, qid, title)
            split = split_of(group, options.eval_percent, test_percent=options.test_percent)
            input_text = question.join(join_template)
            tags = columns["tags"][i] or ""
            link = f"https://{site}/q/{qid}"
            ids.append(id_)
            qids.append(qid)
            aids.append(aid)
            out_sites.append(site)
            questions.append(question)
            answers.append(answer)
            inputs.append(input_text)
            out_tags.append(tags)
            links.append(link)
            splits.append(split)
            groups.append(group)
            body_keys.append(body_key(question))
            exact_keys.append(hashlib.sha1(f"{question.lower()}\x00{answer.lower()}".encode()).hexdigest())
            row_hashes.append(_row_hash(id_, qid, aid, site, question, answer, input_text, tags, link, split, options))
    n = len(ids)
    out.update(output_text=answers, prompt_name=[options.prompt_name] * n,
               prompt_version=[options.prompt_version] * n, instruction_hash=[options.instruction_hash] * n)
    return pa.table({name: out[name] for name in CLEAN_SCHEMA.names}, schema=CLEAN_SCHEMA), dict(dropped), nulls


def clean_to_parquet(batch: pa.RecordBatch, options: CleanOptions, path: str) -> tuple[int, dict[str, int],
                                                                                      dict[str, int]]:
    """Clean one batch and write its examples to `path` (nothing when none survive); returns the counts only,
    so a worker hands back a few numbers, never the rows."""
    table, dropped, nulls = clean_batch(batch, options)
    if table.num_rows:
        pq.write_table(table, path, compression="lz4")
    return table.num_rows, dropped, nulls


def clean_ipc_to_parquet(task: tuple[bytes, dict[str, Any], str]) -> tuple[int, dict[str, int], dict[str, int]]:
    """Process-pool entry point: the batch as Arrow IPC bytes and the options as a dict (cheap to pickle)."""
    data, options, path = task
    return clean_to_parquet(pa.ipc.open_stream(data).read_next_batch(), CleanOptions(**options), path)


def to_ipc(batch: pa.RecordBatch) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return sink.getvalue().to_pybytes()
