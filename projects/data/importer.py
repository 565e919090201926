"""Stack Exchange data dump `Posts.xml` -> BigQuery-shaped `posts_questions` / `posts_answers` Parquet tables.

Streaming: the file is decoded as strict UTF-8 and fed to an incremental XML parser in 1 MiB chunks; rows are
written in batches, so a multi-GB dump needs a bounded amount of memory. Both tables are written to a temporary
directory and moved into place only when the whole file parsed, so a truncated dump leaves nothing behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from llmops.errors import DataError, NotFoundError
from llmops.settings import ANSWERS_TABLE, QUESTIONS_TABLE

CHUNK = 1 << 20
BATCH_ROWS = 20_000
_TS = pa.timestamp("us", tz="UTC")

QUESTIONS_SCHEMA = pa.schema([
    ("id", pa.int64()), ("title", pa.string()), ("body", pa.string()), ("tags", pa.string()),
    ("creation_date", _TS), ("accepted_answer_id", pa.int64()), ("answer_count", pa.int64()),
    ("score", pa.int64()), ("view_count", pa.int64()), ("owner_user_id", pa.int64()), ("site", pa.string()),
])
ANSWERS_SCHEMA = pa.schema([
    ("id", pa.int64()), ("body", pa.string()), ("creation_date", _TS), ("parent_id", pa.int64()),
    ("score", pa.int64()), ("owner_user_id", pa.int64()), ("site", pa.string()),
])
_ATTRIBUTES = {  # column -> Posts.xml attribute
    "id": "Id", "title": "Title", "body": "Body", "tags": "Tags", "creation_date": "CreationDate",
    "accepted_answer_id": "AcceptedAnswerId", "answer_count": "AnswerCount", "score": "Score",
    "view_count": "ViewCount", "owner_user_id": "OwnerUserId", "parent_id": "ParentId",
}


@dataclass(frozen=True)
class ImportResult:
    questions: int
    answers: int
    skipped: int
    tables: dict[str, str]


def parse_tags(raw: str | None) -> str | None:
    """`<python><pandas>` (old dumps) or `|python|pandas|` (2024+ dumps) -> BigQuery's `python|pandas`."""
    if not raw:
        return None
    if raw.startswith("<"):
        parts = raw.strip("<>").split("><")
    else:
        parts = raw.strip("|").split("|")
    return "|".join(p for p in parts if p) or None


def _convert(column: str, value: str | None, line: int | None) -> Any:
    if value is None or value == "":
        return None
    field = QUESTIONS_SCHEMA.field(column) if column in QUESTIONS_SCHEMA.names else ANSWERS_SCHEMA.field(column)
    try:
        if pa.types.is_integer(field.type):
            return int(value)
        if pa.types.is_timestamp(field.type):
            return datetime.fromisoformat(value).replace(tzinfo=UTC)
    except ValueError as exc:
        raise DataError(f"Posts.xml row {line}: {_ATTRIBUTES[column]}={value!r} is not a valid "
                        f"{'integer' if pa.types.is_integer(field.type) else 'date'}") from exc
    if column == "tags":
        return parse_tags(value)
    return value


def iter_rows(path: Path) -> Iterator[dict[str, str]]:
    """Yield each `<row>`'s attributes; strict UTF-8, and a truncated file is an error, never a short import."""
    parser = ET.XMLPullParser(events=("end",))
    try:
        with path.open("r", encoding="utf-8", errors="strict", newline="") as handle:
            while chunk := handle.read(CHUNK):
                parser.feed(chunk)
                yield from _drain(parser)
            parser.close()
            yield from _drain(parser)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 (byte 0x{exc.object[exc.start]:02x} cannot be decoded)") from exc
    except ET.ParseError as exc:
        line, column = exc.position
        hint = " (the file looks truncated)" if "no element found" in str(exc) or "unclosed" in str(exc) else ""
        reason = str(exc).split(":")[0]
        raise DataError(f"{path} is not well-formed XML at line {line}, column {column}{hint}: {reason}") from exc


def _drain(parser: ET.XMLPullParser) -> Iterator[dict[str, str]]:
    for _, element in parser.read_events():
        if element.tag == "row":
            yield dict(element.attrib)
            element.clear()


class _TableWriter:
    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.schema = schema
        self.writer = pq.ParquetWriter(path, schema, compression="zstd")
        self.rows: list[dict[str, Any]] = []
        self.count = 0

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        if len(self.rows) >= BATCH_ROWS:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            self.writer.write_table(pa.Table.from_pylist(self.rows, schema=self.schema))
            self.count += len(self.rows)
            self.rows = []

    def close(self) -> None:
        self.flush()
        self.writer.close()


def import_posts(posts_xml: Path, site: str, out_dir: Path) -> ImportResult:
    """Convert one site's Posts.xml; PostTypeId 1 -> questions, 2 -> answers, other post types are skipped."""
    posts_xml, out_dir = Path(posts_xml), Path(out_dir)
    if not posts_xml.is_file():
        raise NotFoundError(f"Posts.xml not found: {posts_xml}")
    if not site or "/" in site:
        raise DataError(f"--site must be a host name such as ai.stackexchange.com, got {site!r}")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".import-", dir=out_dir))
    except OSError as exc:
        raise DataError(f"output directory {out_dir} is not writable: {exc.strerror or exc}") from exc
    names = {"questions": "posts_questions.parquet", "answers": "posts_answers.parquet"}
    try:
        questions = _TableWriter(staging / names["questions"], QUESTIONS_SCHEMA)
        answers = _TableWriter(staging / names["answers"], ANSWERS_SCHEMA)
        skipped = 0
        for number, attrs in enumerate(iter_rows(posts_xml), start=1):
            kind = attrs.get("PostTypeId")
            target = questions if kind == "1" else answers if kind == "2" else None
            if target is None:
                skipped += 1
                continue
            row = {col: _convert(col, attrs.get(_ATTRIBUTES[col]), number)
                   for col in target.schema.names if col != "site"}
            if row["id"] is None:
                raise DataError(f"Posts.xml row {number} has no Id")
            row["site"] = site
            target.add(row)
        questions.close()
        answers.close()
        for name in names.values():
            os.replace(staging / name, out_dir / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ImportResult(questions.count, answers.count, skipped, {
        QUESTIONS_TABLE: str((out_dir / names["questions"]).resolve()),
        ANSWERS_TABLE: str((out_dir / names["answers"]).resolve()),
    })
