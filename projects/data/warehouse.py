"""Run one BigQuery-dialect query on BigQuery or, transpiled with sqlglot, on an embedded DuckDB.

The query text is the same for both engines; values always travel as bind parameters.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
import sqlglot
from sqlglot.errors import ParseError

from llmops.errors import ConfigError, DataError, NotFoundError
from llmops.settings import ANSWERS_TABLE, QUESTIONS_TABLE, WarehouseSettings

QUERIES_DIR = Path(__file__).parent / "queries"

REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    QUESTIONS_TABLE: ("id", "title", "body", "tags", "creation_date", "accepted_answer_id", "score"),
    ANSWERS_TABLE: ("id", "body", "creation_date", "parent_id", "score"),
}


def load_query(name: str) -> str:
    path = QUERIES_DIR / f"{name}.sql"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in QUERIES_DIR.glob("*.sql")))
        raise NotFoundError(f"query {name!r} not found in {QUERIES_DIR} (known: {known})")
    return path.read_text(encoding="utf-8")


def to_duckdb_sql(bigquery_sql: str) -> str:
    """Transpile BigQuery SQL to DuckDB; `@name` parameters become `$name`."""
    try:
        statements = sqlglot.transpile(bigquery_sql, read="bigquery", write="duckdb")
    except ParseError as exc:
        raise DataError(f"SQL does not parse as BigQuery: {str(exc).splitlines()[0]}") from exc
    if len(statements) != 1:
        raise DataError(f"expected exactly one SQL statement, found {len(statements)}")
    return statements[0]


class Warehouse(Protocol):
    def query(self, bigquery_sql: str, params: Mapping[str, Any]) -> pa.Table: ...


def _reader_for(path: Path) -> str:
    suffix = "".join(path.suffixes[-2:]) if path.suffix == ".gz" else path.suffix
    quoted = "'" + str(path).replace("'", "''") + "'"
    if suffix in (".parquet", ".pq"):
        return f"read_parquet({quoted})"
    if suffix in (".csv", ".csv.gz"):
        return f"read_csv({quoted}, header=true, auto_detect=true)"
    if suffix in (".jsonl", ".json", ".ndjson", ".jsonl.gz"):
        return f"read_json({quoted}, format='newline_delimited', auto_detect=true)"
    raise ConfigError(f"warehouse table file {path} has an unsupported type (use .parquet, .csv or .jsonl)")


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


class DuckDBWarehouse:
    """BigQuery table names mapped onto local files, exposed as views under the same three-part names."""

    def __init__(self, tables: Mapping[str, str | Path]) -> None:
        import duckdb

        self._con = duckdb.connect()
        self._con.execute("SET TimeZone = 'UTC'")
        self._tables = {name: Path(path) for name, path in tables.items()}
        catalogs: set[str] = set()
        for name, path in self._tables.items():
            parts = name.split(".")
            if len(parts) != 3:
                raise ConfigError(f"warehouse table name {name!r} must be project.dataset.table")
            catalog, schema, table = parts
            if catalog not in catalogs:
                self._con.execute(f"ATTACH ':memory:' AS {_quote(catalog)}")
                catalogs.add(catalog)
            self._con.execute(f"CREATE SCHEMA IF NOT EXISTS {_quote(catalog)}.{_quote(schema)}")
            self._create_view(name, path, f"{_quote(catalog)}.{_quote(schema)}.{_quote(table)}")

    def _create_view(self, name: str, path: Path, target: str) -> None:
        import duckdb

        if not path.is_file():
            raise NotFoundError(f"warehouse table {name}: file not found: {path}")
        source = _reader_for(path)
        try:
            described = self._con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()
        except duckdb.Error as exc:
            raise DataError(f"warehouse table {name}: cannot read {path}: {str(exc).splitlines()[0]}") from exc
        types = {row[0]: row[1] for row in described}
        missing = [column for column in REQUIRED_COLUMNS.get(name, ()) if column not in types]
        if missing:
            raise DataError(f"warehouse table {name} ({path}) is missing column(s): {', '.join(missing)}")
        # Text dates (CSV/JSONL) become UTC timestamps; unparseable ones become NULL and are counted downstream.
        casts = [
            f"TRY_CAST({_quote(col)} AS TIMESTAMPTZ) AS {_quote(col)}"
            for col, typ in types.items()
            if col.endswith("_date") and typ == "VARCHAR"
        ]
        replace = f" REPLACE ({', '.join(casts)})" if casts else ""
        self._con.execute(f"CREATE VIEW {target} AS SELECT *{replace} FROM {source}")

    def query(self, bigquery_sql: str, params: Mapping[str, Any]) -> pa.Table:
        import duckdb

        sql = to_duckdb_sql(bigquery_sql)
        try:
            result = self._con.execute(sql, dict(params))
            # duckdb 2 renamed fetch_arrow_table to to_arrow_table
            fetch = getattr(result, "to_arrow_table", None) or result.fetch_arrow_table
            return fetch()
        except duckdb.Error as exc:
            raise DataError(f"DuckDB query failed: {str(exc).splitlines()[0]}") from exc


def _bigquery_parameter(name: str, value: Any):
    from google.cloud import bigquery

    if isinstance(value, bool):
        kind = "BOOL"
    elif isinstance(value, int):
        kind = "INT64"
    elif isinstance(value, float):
        kind = "FLOAT64"
    elif isinstance(value, str):
        kind = "STRING"
    else:
        raise DataError(f"query parameter {name!r} has unsupported type {type(value).__name__}")
    return bigquery.ScalarQueryParameter(name, kind, value)


class BigQueryWarehouse:
    """Google BigQuery with named parameters; a dry run guards the byte cap before any bytes are billed."""

    def __init__(self, client: Any, maximum_bytes_billed: int) -> None:
        self._client = client
        self._cap = maximum_bytes_billed

    @classmethod
    def from_settings(cls, settings: WarehouseSettings) -> BigQueryWarehouse:
        try:
            from google.cloud import bigquery
        except ImportError as exc:
            raise ConfigError("the bigquery engine needs the 'gcp' extra: pip install 'llmops-mlflow[gcp]'") from exc
        import google.auth.exceptions

        try:
            client = bigquery.Client(project=settings.project, location=settings.location)
        except google.auth.exceptions.DefaultCredentialsError as exc:
            raise ConfigError(
                "no Google Cloud credentials: set GOOGLE_APPLICATION_CREDENTIALS or run `gcloud auth "
                "application-default login`"
            ) from exc
        return cls(client, settings.maximum_bytes_billed)

    def dry_run_bytes(self, bigquery_sql: str, params: Mapping[str, Any]) -> int:
        from google.cloud import bigquery

        config = bigquery.QueryJobConfig(
            dry_run=True,
            use_query_cache=False,
            query_parameters=[_bigquery_parameter(k, v) for k, v in params.items()],
        )
        job = self._client.query(bigquery_sql, job_config=config)
        return int(job.total_bytes_processed or 0)

    def query(self, bigquery_sql: str, params: Mapping[str, Any]) -> pa.Table:
        from google.api_core import exceptions as gexc
        from google.cloud import bigquery

        try:
            scanned = self.dry_run_bytes(bigquery_sql, params)
            if scanned > self._cap:
                raise DataError(
                    f"BigQuery query would scan {scanned:,} bytes, over the cap of {self._cap:,} "
                    "(warehouse.maximum_bytes_billed)"
                )
            config = bigquery.QueryJobConfig(
                maximum_bytes_billed=self._cap,
                query_parameters=[_bigquery_parameter(k, v) for k, v in params.items()],
            )
            rows = self._client.query(bigquery_sql, job_config=config).result()
            batches = list(rows.to_arrow_iterable())
        except gexc.GoogleAPICallError as exc:
            raise DataError(f"BigQuery query failed: {exc.message}") from exc
        if not batches:
            return pa.table({field.name: pa.array([], pa.string()) for field in rows.schema})
        return pa.Table.from_batches(batches)


def open_warehouse(settings: WarehouseSettings) -> Warehouse:
    if settings.engine == "bigquery":
        return BigQueryWarehouse.from_settings(settings)
    return DuckDBWarehouse(settings.tables)
