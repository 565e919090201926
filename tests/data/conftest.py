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

    def __init__(self, tables: dict[str, str], bytes_scanned: int = 1_000, page_rows: int = 40,
                 storage: FakeBigQueryReadClient | None = None) -> None:
        self.project = "fake-project"
        self.storage = storage  # when set, results are a real RowIterator over an anonymous destination table
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
        if self.storage is not None:
            return FakeQueryJob(self.bytes_scanned, self._destination_rows(table))
        self.last_rows = FakeRowIterator(table, self.page_rows)
        return FakeQueryJob(self.bytes_scanned, self.last_rows)

    def _destination_rows(self, table: Any):
        """What `QueryJob.result()` returns: the SDK's own RowIterator over the job's destination table. Its
        REST paging fails here, so a test passes only if rows come through the Storage Read API."""
        from google.cloud.bigquery import SchemaField, TableReference
        from google.cloud.bigquery.table import RowIterator

        def no_rest(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError("rows were paged over REST instead of the Storage Read API")

        destination = TableReference.from_string(f"{self.project}._anon.result_{len(self.calls)}")
        self.storage.tables[destination.to_bqstorage()] = table
        kinds = {"int64": "INTEGER", "string": "STRING", "large_string": "STRING"}
        schema = [SchemaField(f.name, kinds.get(str(f.type), "TIMESTAMP")) for f in table.schema]
        return RowIterator(client=self, api_request=no_rest, path=f"{destination.path}/data", schema=schema,
                           table=destination, total_rows=table.num_rows)


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
def fake_storage_class() -> type[FakeBigQueryReadClient]:
    return FakeBigQueryReadClient


@pytest.fixture
def sample_table_map(sample_dir: Path) -> dict[str, str]:
    return sample_tables(sample_dir)


class _ReadRowsWire:
    """The generated (gapic) layer under `ReadRowsStream`: `read_rows(read_stream, offset)` -> response messages."""

    def __init__(self, streams: dict[str, list[Any]]) -> None:
        self._streams = streams

    def read_rows(self, read_stream: str, offset: int = 0, **kwargs: Any):
        from google.cloud.bigquery_storage_v1 import types

        skipped, first = 0, True
        for batch in self._streams[read_stream]:
            if skipped < offset:  # a reconnect resumes after the rows already delivered
                skipped += batch.num_rows
                continue
            # like the service, the first message of a stream carries the schema
            schema = types.ArrowSchema(serialized_schema=batch.schema.serialize().to_pybytes()) if first else None
            first = False
            yield types.ReadRowsResponse(
                row_count=batch.num_rows, arrow_schema=schema,
                arrow_record_batch=types.ArrowRecordBatch(
                    serialized_record_batch=batch.serialize().to_pybytes(), row_count=batch.num_rows))


class FakeBigQueryReadClient:
    """Implements `BigQueryReadClient.create_read_session` / `read_rows` with the Storage Read API's own message
    types: serves a table (the query's destination) as Arrow record batches spread over several streams."""

    def __init__(self, stream_count: int = 3, rows_per_message: int = 17) -> None:
        self.tables: dict[str, Any] = {}  # "projects/p/datasets/d/tables/t" -> pyarrow.Table
        self.sessions: list[Any] = []
        self._stream_count = stream_count
        self._rows_per_message = rows_per_message
        self._streams: dict[str, list[Any]] = {}

    def create_read_session(self, parent: str, read_session: Any, max_stream_count: int = 0, **kwargs: Any):
        from google.cloud.bigquery_storage_v1 import types

        assert isinstance(read_session, types.ReadSession) and read_session.data_format == types.DataFormat.ARROW
        table = self.tables[read_session.table]
        name = f"{parent}/locations/us/sessions/s{len(self.sessions)}"
        count = min(self._stream_count, max_stream_count or self._stream_count)
        batches = table.to_batches(max_chunksize=self._rows_per_message)
        streams = {f"{name}/streams/{i}": batches[i::count] for i in range(count)}
        self._streams.update(streams)
        session = types.ReadSession(
            name=name, table=read_session.table, data_format=types.DataFormat.ARROW,
            arrow_schema=types.ArrowSchema(serialized_schema=table.schema.serialize().to_pybytes()),
            streams=[types.ReadStream(name=stream) for stream in streams])
        self.sessions.append((parent, read_session, max_stream_count))
        return session

    def read_rows(self, name: str, offset: int = 0, **kwargs: Any):
        from google.cloud.bigquery_storage_v1 import reader

        return reader.ReadRowsStream(_ReadRowsWire(self._streams), name, offset, {})
