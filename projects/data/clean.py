"""Cleaning one streamed batch of query rows into finished examples: HTML to Markdown, whitespace, length limits,
and the keys later SQL stages use (exact-duplicate key, near-duplicate group and split, leakage key, row hash).

Pure functions over Arrow record batches that never see more than one batch, run by a pool of threads or
processes (`prepare.cleaned_batches`).

Each body is routed by what it is, not by a guess on `<`: libxml2's HTML parser (lxml) reads it, and it is HTML
when it starts with an element, every element is an HTML tag and at most half of its text lies outside elements;
otherwise it is Markdown (text at the top level, or tags HTML does not have, such as `<int>` or `<dependency>`)
and passes through untouched apart from whitespace, so indented code and literal `<...>` survive. On the real
samples in ../shared/data this routes all 10,068 bodies as their sources are (6,734 HTML, 3,334 Markdown); the
regex it replaces sent 339 Markdown bodies (10%) through the converter. HTML goes through html-to-markdown (a
Rust converter, ~20x faster than markdownify; code blocks become fenced blocks, entities decoded, nothing
escaped; it, lxml and hashlib release the GIL). Keys are computed here rather than in SQL: measured on 1 KB
bodies, Python's hashlib and `str.split` cost a fraction of DuckDB's sha256 and regex-split per row.
"""

from __future__ import annotations

import hashlib
import re
import threading
import unicodedata
from collections import Counter
from dataclasses import dataclass
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq

from llmops.dataset import EXAMPLE_COLUMNS, INT_COLUMNS
from projects.data.split import split_of

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


# Element names HTML has (lxml's list plus the HTML5 ones it lacks); anything else marks a body as not HTML.
_HTML5_EXTRA = ("main", "picture", "template", "data", "dialog", "bdi", "search", "slot", "frame", "noframes")
_SNIFF_CHARS = 4096
_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")
_local = threading.local()  # lxml parsers are not shared between threads


def _html_tags() -> frozenset[str]:
    from lxml.html import defs

    return frozenset(defs.tags) | frozenset(_HTML5_EXTRA)


def _parser() -> Any:
    parser = getattr(_local, "parser", None)
    if parser is None:
        from lxml import etree

        parser = _local.parser = etree.HTMLParser(recover=True, no_network=True, remove_comments=True,
                                                  remove_pis=True, default_doctype=False)
        _local.tags = _html_tags()
    return parser


def body_format(body: str) -> Literal["html", "markdown"]:
    """HTML or Markdown, decided by reading the body (its first 4 KB) as HTML (see the module doc).

    Without a `<` there is no element, so the body is Markdown (or plain text) without parsing."""
    if "<" not in body:
        return "markdown"
    text = body
    if len(text) > _SNIFF_CHARS:  # cut after a tag, never inside one
        cut = text.rfind(">", 0, _SNIFF_CHARS)
        text = text[:cut + 1] if cut > 0 else text[:_SNIFF_CHARS]
    parser = _parser()
    from lxml import etree

    try:
        document = etree.fromstring(f"<div>{text}</div>", parser)
    except etree.Error:
        return "markdown"
    root = document.find("body/div") if document is not None else None
    if root is None or (root.text and not root.text.isspace()):  # text before the first element: prose
        return "markdown"
    outside = 0
    for child in root:
        tail = child.tail
        if tail and not tail.isspace():
            outside += len(tail.strip())
    tags = _local.tags
    for element in root.iterdescendants():
        if element.tag not in tags:
            return "markdown"  # `<int>`, `<dependency>`: literal text that HTML would have escaped
    if outside and outside * 2 > len("".join(root.itertext()).strip()):
        return "markdown"  # mostly top-level text with a few inline tags (`<kbd>`, `<br>`)
    return "html"


def _convert(html: str) -> str:
    """html-to-markdown with its defaults, which escape nothing (literal `*`, `_`, `<` stay as written). Passing a
    ConversionOptions costs ~30 us per call in its Python binding (enum coercion), more than the conversion."""
    import html_to_markdown

    return html_to_markdown.convert(html).content


def _collapse_blank_lines(text: str) -> str:
    """At most one blank line between blocks, but code inside ``` / ~~~ fences is left exactly as it is."""
    if "```" not in text and "~~~" not in text:
        return _BLANK_LINES.sub("\n\n", text)
    out: list[str] = []
    fence: str | None = None
    blank = 0
    for line in text.split("\n"):
        match = _FENCE.match(line)
        if fence is None:
            if not line:
                blank += 1
                if blank > 1:
                    continue
            else:
                blank = 0
            if match:
                fence = match.group(1)
        elif match and match.group(1)[0] == fence[0] and len(match.group(1)) >= len(fence) \
                and not line.strip().strip(fence[0]):
            fence, blank = None, 0
        out.append(line)
    return "\n".join(out)


def normalise_whitespace(text: str) -> str:
    """NFC, no NBSP or CR, no trailing spaces, at most one blank line outside code fences; indentation kept."""
    if not text.isascii():  # the checks below skip work most bodies do not need (this runs per row)
        text = unicodedata.normalize("NFC", text).replace("\u00a0", " ")
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if " \n" in text or "\t\n" in text:
        text = _TRAILING_SPACE.sub("\n", text)
    if "\n\n\n" in text:
        text = _collapse_blank_lines(text)
    text = text.rstrip()
    first = len(text) - len(text.lstrip())  # drop leading blank lines, keep the first line's indentation
    return text[text.rfind("\n", 0, first) + 1:] if first else text


def html_to_text(body: str | None) -> str:
    """A post body as Markdown text: HTML converted (code blocks become fenced blocks), Markdown kept as written."""
    if not body:
        return ""
    text = _convert(body) if body_format(body) == "html" else body
    return normalise_whitespace(text)


def question_text(title: str | None, body: str | None) -> str:
    """What a user asks: title and body, as the seeds' CONCAT(title, body), cleaned."""
    title = normalise_whitespace(title or "").strip()
    text = html_to_text(body)
    return f"{title}\n\n{text}" if title and text else title or text


def _tokens(text: str) -> list[str]:
    if not text.isascii():  # NFKC leaves ASCII as it is: skip it for most titles (this runs per row)
        text = unicodedata.normalize("NFKC", text)
    return _WORD.findall(text.lower())


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
    for i, (qid, aid) in enumerate(zip(columns["question_id"], columns["answer_id"], strict=True)):
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
    kept = table.num_rows
    if kept:
        pq.write_table(table, path, compression="lz4")
    del table
    pa.default_memory_pool().release_unused()  # hand the batch's buffers back: a worker stays near its import size
    return kept, dropped, nulls


def clean_ipc_to_parquet(task: tuple[bytes, dict[str, Any], str]) -> tuple[int, dict[str, int], dict[str, int]]:
    """Process-pool entry point: the batch as Arrow IPC bytes and the options as a dict (cheap to pickle)."""
    data, options, path = task
    return clean_to_parquet(pa.ipc.open_stream(data).read_next_batch(), CleanOptions(**options), path)


def to_ipc(batch: pa.RecordBatch) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return sink.getvalue().to_pybytes()
