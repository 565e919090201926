"""Fixtures of the data step's tests: sample rows read independently of the SQL, a fake BigQuery client."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

QUESTIONS = "bigquery-public-data.stackoverflow.posts_questions"
ANSWERS = "bigquery-public-data.stackoverflow.posts_answers"


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _ts(value: str | None) -> datetime | None:
    return datetime.strptime(value, "%Y-%m-%d %H:%M:%S UTC").replace(tzinfo=UTC) if value else None


def expected_pairs(sample: Path, tag_pattern: str, cutoff: str, q_from: str | None = None,
                   q_to: str | None = None) -> list[tuple[int, int]]:
    """The query's answer computed by hand in Python from the JSONL files: (question id, answer id) pairs."""
    answers = {a["id"]: a for a in read_jsonl(sample / "posts_answers.jsonl")}
    cut = datetime.fromisoformat(cutoff).replace(tzinfo=UTC)
    low = datetime.fromisoformat(q_from).replace(tzinfo=UTC) if q_from else None
    high = datetime.fromisoformat(q_to).replace(tzinfo=UTC) if q_to else None
    pairs = []
    for q in read_jsonl(sample / "posts_questions.jsonl"):
        answer = answers.get(q.get("accepted_answer_id"))
        if answer is None or not re.search(tag_pattern, q.get("tags") or ""):
            continue
        answered, asked = _ts(answer["creation_date"]), _ts(q["creation_date"])
        if answered is None or answered < cut:
            continue
        if (low and (asked is None or asked < low)) or (high and (asked is None or asked >= high)):
            continue
        pairs.append((q["id"], answer["id"]))
    return sorted(pairs)


def sample_tables(sample: Path) -> dict[str, str]:
    return {QUESTIONS: str(sample / "posts_questions.jsonl"), ANSWERS: str(sample / "posts_answers.jsonl")}


class FakeRowIterator:
    """Stands in for `google.cloud.bigquery.table.RowIterator`: `schema` of real SchemaFields, Arrow pages."""

    def __init__(self, table: Any, page_rows: int) -> None:
        from google.cloud.bigquery import SchemaField

        self._table = table
        self._page_rows = page_rows
        kinds = {"int64": "INTEGER", "string": "STRING", "large_string": "STRING"}
        self.schema = [SchemaField(f.name, kinds.get(str(f.type), "TIMESTAMP")) for f in table.schema]
        self.total_rows = table.num_rows
        self.bqstorage_client_seen: Any = "unset"

    def to_arrow_iterable(self, bqstorage_client: Any = None, max_queue_size: Any = None,
                          max_stream_count: int | None = None, timeout: float | None = None):
        self.bqstorage_client_seen = bqstorage_client
        yield from self._table.to_batches(max_chunksize=self._page_rows)


class FakeQueryJob:
    """Stands in for `QueryJob`: dry runs report bytes, real runs return rows via `result()`."""

    def __init__(self, total_bytes_processed: int, rows: FakeRowIterator | None) -> None:
        self.total_bytes_processed = total_bytes_processed
        self._rows = rows

    def result(self, *args: Any, **kwargs: Any) -> FakeRowIterator:
        assert self._rows is not None, "result() of a dry-run job"
        return self._rows


class FakeBigQueryClient:
    """Implements `Client.query(sql, job_config=...)`, checks the job config like BigQuery would, and answers
    by running the SQL it received (BigQuery dialect) on DuckDB over the raw sample files - which have no
    `site` column, exactly like the public tables."""

    def __init__(self, tables: dict[str, str], bytes_scanned: int = 1_000, page_rows: int = 40) -> None:
        self.tables = tables
        self.bytes_scanned = bytes_scanned
        self.page_rows = page_rows
        self.calls: list[tuple[str, Any]] = []
        self.last_rows: FakeRowIterator | None = None

    def query(self, query: str, job_config: Any = None, **kwargs: Any) -> FakeQueryJob:
        import duckdb
        import sqlglot
        from google.api_core.exceptions import BadRequest
        from google.cloud import bigquery

        assert isinstance(job_config, bigquery.QueryJobConfig), "queries must carry a QueryJobConfig"
        params = {}
        for param in job_config.query_parameters:
            assert isinstance(param, bigquery.ScalarQueryParameter), param
            assert param.type_ in ("STRING", "INT64"), param
            if param.value is not None:
                expected = int if param.type_ == "INT64" else str
                assert isinstance(param.value, expected), param
            params[param.name] = param.value
        self.calls.append((query, job_config))
        if job_config.dry_run:
            assert job_config.use_query_cache is False
            return FakeQueryJob(self.bytes_scanned, None)
        assert job_config.maximum_bytes_billed, "a real run must carry maximum_bytes_billed"
        con = duckdb.connect()
        con.execute("SET TimeZone = 'UTC'")
        for name, path in self.tables.items():
            catalog, schema, table = name.split(".")
            con.execute(f'ATTACH IF NOT EXISTS \':memory:\' AS "{catalog}"')
            con.execute(f'CREATE SCHEMA IF NOT EXISTS "{catalog}"."{schema}"')
            con.execute(f'CREATE VIEW "{catalog}"."{schema}"."{table}" AS SELECT * REPLACE '
                        f"(CAST(creation_date AS TIMESTAMPTZ) AS creation_date) FROM read_json('{path}')")
        try:
            sql = sqlglot.transpile(query, read="bigquery", write="duckdb")[0]
            table = con.sql(sql, params=params).to_arrow_table()
        except (duckdb.Error, sqlglot.errors.SqlglotError) as exc:
            raise BadRequest(f"Invalid query: {str(exc).splitlines()[0]}") from exc
        self.last_rows = FakeRowIterator(table, self.page_rows)
        return FakeQueryJob(self.bytes_scanned, self.last_rows)


@pytest.fixture
def fake_bigquery(sample_dir: Path) -> FakeBigQueryClient:
    return FakeBigQueryClient(sample_tables(sample_dir))


@pytest.fixture
def expected() -> Any:
    """`expected_pairs(sample, tag_pattern, cutoff, q_from, q_to)`: the hand-computed query answer."""
    return expected_pairs


@pytest.fixture
def fake_client_class() -> type[FakeBigQueryClient]:
    return FakeBigQueryClient


@pytest.fixture
def sample_table_map(sample_dir: Path) -> dict[str, str]:
    return sample_tables(sample_dir)
