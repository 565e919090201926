"""Run one BigQuery-dialect query on BigQuery or, transpiled with sqlglot, on an embedded DuckDB.

The query text is the same for both engines; values always travel as typed bind parameters, and results come
back as a stream of Arrow record batches so no engine ever hands the whole result to Python at once.
Stack Exchange ids are unique per site: the query joins on (site, id). Tables without a `site` column get
one (the configured default site) - a view column on DuckDB, a subquery column on BigQuery.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Mapping
from datetime import date
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, SqlglotError

from llmops.errors import ConfigError, DataError, NotFoundError
from llmops.settings import ANSWERS_TABLE, QUESTIONS_TABLE, Settings, WarehouseSettings

QUERIES_DIR = Path(__file__).parent / "queries"

REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    QUESTIONS_TABLE: ("id", "title", "body", "tags", "creation_date", "accepted_answer_id", "score"),
    ANSWERS_TABLE: ("id", "body", "creation_date", "parent_id", "score"),
}

# BigQuery type of every bind parameter a query may use; dates travel as strings and are cast in SQL.
PARAM_TYPES: dict[str, str] = {
    "tag_pattern": "STRING",
    "answer_date_cutoff": "STRING",
    "limit": "INT64",
    "question_date_from": "STRING",
    "question_date_to": "STRING",
}
_DATE_PARAMS = {"answer_date_cutoff", "question_date_from", "question_date_to"}
# NULL turns the filter off (no answer date cutoff, an open question window).
NULLABLE_PARAMS = frozenset({"answer_date_cutoff", "question_date_from", "question_date_to"})
_PY_TYPES = {"STRING": str, "INT64": int, "FLOAT64": float, "BOOL": bool}


def load_query(name: str) -> str:
    path = QUERIES_DIR / f"{name}.sql"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in QUERIES_DIR.glob("*.sql")))
        raise NotFoundError(f"query {name!r} not found in {QUERIES_DIR} (known: {known})")
    return path.read_text(encoding="utf-8")


def parse_query(bigquery_sql: str) -> exp.Expression:
    """Parse exactly one BigQuery statement; a syntax error names its first line."""
    try:
        statements = [s for s in sqlglot.parse(bigquery_sql, read="bigquery") if s is not None]
    except (ParseError, SqlglotError) as exc:
        raise DataError(f"SQL does not parse as BigQuery: {str(exc).splitlines()[0]}") from exc
    if len(statements) != 1:
        raise DataError(f"expected exactly one SQL statement, found {len(statements)}")
    return statements[0]


def referenced_tables(tree: exp.Expression) -> set[str]:
    """Three-part names of the tables a query reads (CTE names excluded)."""
    ctes = {cte.alias for cte in tree.find_all(exp.CTE)}
    names = set()
    for table in tree.find_all(exp.Table):
        if table.name in ctes and not table.db:
            continue
        names.add(".".join(part for part in (table.catalog, table.db, table.name) if part))
    return names


def parameter_names(tree: exp.Expression) -> set[str]:
    return {param.name for param in tree.find_all(exp.Parameter)}


def bind_params(tree: exp.Expression, params: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters the query uses, checked for presence, type and date format."""
    bound: dict[str, Any] = {}
    for name in sorted(parameter_names(tree)):
        if name not in params:
            raise DataError(f"query parameter @{name} has no value")
        value = params[name]
        kind = PARAM_TYPES.get(name)
        if kind is None:
            raise DataError(f"query parameter @{name} is unknown (known: {', '.join(PARAM_TYPES)})")
        if value is not None:
            expected = _PY_TYPES[kind]
            if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
                raise DataError(
                    f"query parameter @{name} must be {kind}, got {type(value).__name__} {value!r}"
                )
            if name in _DATE_PARAMS:
                try:
                    date.fromisoformat(value)
                except ValueError as exc:
                    raise DataError(f"query parameter @{name} must be a date as YYYY-MM-DD, got {value!r}") from exc
        elif name not in NULLABLE_PARAMS:
            raise DataError(f"query parameter @{name} may not be NULL")
        bound[name] = value
    return bound


def to_duckdb_sql(bigquery_sql: str) -> str:
    """Transpile BigQuery SQL to DuckDB; `@name` parameters become `$name`."""
    return parse_query(bigquery_sql).sql(dialect="duckdb")


def query_params(settings: Settings) -> dict[str, Any]:
    """Bind parameters of the data step's query, from the settings."""
    return {
        "tag_pattern": settings.data.tag_pattern,
        "answer_date_cutoff": settings.data.answer_date_cutoff,
        "limit": settings.data.limit,
        "question_date_from": settings.dataprep.question_date_from,
        "question_date_to": settings.dataprep.question_date_to,
    }


class Warehouse(Protocol):
    def batches(self, bigquery_sql: str, params: Mapping[str, Any], batch_rows: int) -> Iterator[pa.RecordBatch]:
        """Stream the result; errors surface as DataError, possibly while iterating."""

    def query(self, bigquery_sql: str, params: Mapping[str, Any]) -> pa.Table:
        """Small results only (counts, reports)."""


def _files_of(name: str, paths: str | Path | list[str]) -> list[Path]:
    """The files of one mapped table; a glob that matches nothing is an error naming it."""
    from llmops.settings import table_files

    files = table_files([str(p) for p in paths] if isinstance(paths, list) else str(paths))
    if not files:
        raise NotFoundError(f"warehouse table {name}: no file matches {paths}")
    return files


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


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _first_line(exc: BaseException) -> str:
    """The line of an engine error that names the problem (DuckDB puts the encoding cause on a later line)."""
    text = str(exc).strip()
    if not text:
        return type(exc).__name__
    lines = text.splitlines()
    encoding = next((line for line in lines if "not utf-8" in line.lower()), None)
    return f"{lines[0]} ({encoding.strip()})" if encoding and encoding != lines[0] else lines[0]


class DuckDBWarehouse:
    """BigQuery table names mapped onto local files, exposed as views under the same three-part names."""

    def __init__(self, tables: Mapping[str, str | Path | list[str]], default_site: str = "stackoverflow.com",
                 memory_limit: str | None = None, threads: int = 0) -> None:
        import duckdb

        self._con = duckdb.connect()
        self._con.execute("SET TimeZone = 'UTC'")
        self._con.execute("SET enable_progress_bar = false")
        if memory_limit:
            self._con.execute(f"SET memory_limit = {_literal(memory_limit)}")
            # ORDER BY + LIMIT becomes a top-N heap that cannot spill; a full sort spills to disk under the limit
            self._con.execute("SET disabled_optimizers = 'top_n'")
            self._spill = tempfile.TemporaryDirectory(prefix="llmops-duckdb-")
            self._con.execute(f"SET temp_directory = {_literal(self._spill.name)}")
        if threads:  # each scan thread buffers its own Parquet row group: fewer threads, less memory
            self._con.execute(f"SET threads = {int(threads)}")
        self._tables = {name: _files_of(name, paths) for name, paths in tables.items()}
        self._site = default_site
        catalogs: set[str] = set()
        for name, files in self._tables.items():
            parts = name.split(".")
            if len(parts) != 3:
                raise ConfigError(f"warehouse table name {name!r} must be project.dataset.table")
            catalog, schema, table = parts
            if catalog not in catalogs:
                self._con.execute(f"ATTACH ':memory:' AS {_quote(catalog)}")
                catalogs.add(catalog)
            self._con.execute(f"CREATE SCHEMA IF NOT EXISTS {_quote(catalog)}.{_quote(schema)}")
            self._create_view(name, files, f"{_quote(catalog)}.{_quote(schema)}.{_quote(table)}")

    @classmethod
    def from_settings(cls, settings: Settings) -> DuckDBWarehouse:
        prep = settings.dataprep
        return cls(settings.warehouse.tables, prep.default_site, prep.duckdb_memory_limit, prep.duckdb_threads)

    def _create_view(self, name: str, files: list[Path], target: str) -> None:
        """One view over every file of a table: each file read by its format, text dates cast, a missing `site`
        filled in, then the files combined by column name (several site dumps become one table)."""
        selects = [self._file_select(name, path) for path in files]
        self._con.execute(f"CREATE VIEW {target} AS {' UNION ALL BY NAME '.join(selects)}")

    def _file_select(self, name: str, path: Path) -> str:
        import duckdb

        if not path.is_file():
            raise NotFoundError(f"warehouse table {name}: file not found: {path}")
        source = _reader_for(path)
        try:
            described = self._con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()
        except (duckdb.Error, UnicodeDecodeError) as exc:
            raise DataError(f"warehouse table {name}: cannot read {path}: {_first_line(exc)}") from exc
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
        site = "" if "site" in types else f", {_literal(self._site)} AS site"
        return f"SELECT *{replace}{site} FROM {source}"

    def _prepare(self, bigquery_sql: str, params: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        tree = parse_query(bigquery_sql)
        unknown = sorted(referenced_tables(tree) - set(self._tables))
        if unknown:
            raise DataError(
                f"unknown table(s) {', '.join(unknown)}; configured: {', '.join(sorted(self._tables)) or 'none'}"
            )
        return tree.sql(dialect="duckdb"), bind_params(tree, params)

    def _execute(self, sql: str, bound: dict[str, Any]):
        import duckdb

        try:
            return self._con.sql(sql, params=bound)
        except (duckdb.Error, UnicodeDecodeError) as exc:
            raise DataError(f"DuckDB query failed: {_first_line(exc)}") from exc

    def batches(self, bigquery_sql: str, params: Mapping[str, Any], batch_rows: int) -> Iterator[pa.RecordBatch]:
        import duckdb

        sql, bound = self._prepare(bigquery_sql, params)
        try:
            yield from self._execute(sql, bound).to_arrow_reader(batch_rows)
        except (duckdb.Error, pa.ArrowException, OSError, UnicodeDecodeError) as exc:
            raise DataError(f"DuckDB query failed: {_first_line(exc)}") from exc

    def query(self, bigquery_sql: str, params: Mapping[str, Any]) -> pa.Table:
        import duckdb

        sql, bound = self._prepare(bigquery_sql, params)
        try:
            return self._execute(sql, bound).to_arrow_table()
        except duckdb.Error as exc:
            raise DataError(f"DuckDB query failed: {_first_line(exc)}") from exc


def _bigquery_parameter(name: str, value: Any):
    from google.cloud import bigquery

    return bigquery.ScalarQueryParameter(name, PARAM_TYPES[name], value)


def with_site_column(tree: exp.Expression, site: str) -> exp.Expression:
    """Replace each table with `(SELECT *, 'site' AS site FROM table)` under the same alias (BigQuery side)."""
    tree = tree.copy()
    for table in list(tree.find_all(exp.Table)):
        if not table.db:
            continue
        alias = table.alias or table.name
        bare = exp.Table(this=table.this.copy(), db=table.args["db"].copy(),
                         catalog=table.args["catalog"].copy() if table.args.get("catalog") else None)
        select = exp.select("*", exp.alias_(exp.Literal.string(site), "site")).from_(bare)
        table.replace(exp.Subquery(this=select, alias=exp.TableAlias(this=exp.to_identifier(alias))))
    return tree


class BigQueryWarehouse:
    """Google BigQuery with named parameters; a dry run guards the byte cap before any bytes are billed."""

    def __init__(self, client: Any, maximum_bytes_billed: int, default_site: str = "stackoverflow.com",
                 site_column: bool = False, bqstorage_client: Any = None) -> None:
        self._client = client
        self._cap = maximum_bytes_billed
        self._site = default_site
        self._site_column = site_column
        self._bqstorage = bqstorage_client
        self.last_dry_run_bytes: int | None = None

    @classmethod
    def from_settings(cls, settings: Settings | WarehouseSettings) -> BigQueryWarehouse:
        warehouse = settings.warehouse if isinstance(settings, Settings) else settings
        prep = settings.dataprep if isinstance(settings, Settings) else None
        try:
            from google.cloud import bigquery
        except ImportError as exc:
            raise ConfigError("the bigquery engine needs the 'gcp' extra: pip install 'llmops-mlflow[gcp]'") from exc
        import google.auth.exceptions

        try:
            client = bigquery.Client(project=warehouse.project, location=warehouse.location)
        except google.auth.exceptions.DefaultCredentialsError as exc:
            raise ConfigError(
                "no Google Cloud credentials: set GOOGLE_APPLICATION_CREDENTIALS or run `gcloud auth "
                "application-default login`"
            ) from exc
        except (OSError, ValueError) as exc:  # e.g. a project that cannot be determined
            raise ConfigError(f"cannot create a BigQuery client: {_first_line(exc)}") from exc
        storage = None
        try:  # the Storage Read API streams Arrow much faster than REST pages; optional
            from google.cloud import bigquery_storage

            storage = bigquery_storage.BigQueryReadClient(credentials=client._credentials)
        except ImportError:
            pass
        return cls(client, warehouse.maximum_bytes_billed,
                   prep.default_site if prep else "stackoverflow.com",
                   prep.bigquery_site_column if prep else False, storage)

    def render(self, bigquery_sql: str, params: Mapping[str, Any]) -> tuple[str, list[Any]]:
        """The SQL text and typed parameters sent to BigQuery."""
        tree = parse_query(bigquery_sql)
        bound = bind_params(tree, params)
        if not self._site_column:
            tree = with_site_column(tree, self._site)
        return tree.sql(dialect="bigquery"), [_bigquery_parameter(k, v) for k, v in bound.items()]

    def dry_run_bytes(self, bigquery_sql: str, params: Mapping[str, Any]) -> int:
        from google.cloud import bigquery

        sql, parameters = self.render(bigquery_sql, params)
        config = bigquery.QueryJobConfig(dry_run=True, use_query_cache=False, query_parameters=parameters)
        job = self._client.query(sql, job_config=config)
        self.last_dry_run_bytes = int(job.total_bytes_processed or 0)
        return self.last_dry_run_bytes

    def _rows(self, bigquery_sql: str, params: Mapping[str, Any]):
        from google.api_core import exceptions as gexc
        from google.cloud import bigquery

        try:
            scanned = self.dry_run_bytes(bigquery_sql, params)
            if scanned > self._cap:
                raise DataError(
                    f"BigQuery query would scan {scanned:,} bytes, over the cap of {self._cap:,} "
                    "(warehouse.maximum_bytes_billed)"
                )
            sql, parameters = self.render(bigquery_sql, params)
            config = bigquery.QueryJobConfig(maximum_bytes_billed=self._cap, query_parameters=parameters)
            return self._client.query(sql, job_config=config).result()
        except gexc.GoogleAPICallError as exc:
            raise DataError(f"BigQuery query failed: {_first_line(exc)}") from exc
        except Exception as exc:  # google-auth refresh errors come at the first call
            import google.auth.exceptions

            if isinstance(exc, google.auth.exceptions.GoogleAuthError):
                raise ConfigError(f"Google Cloud credentials rejected: {_first_line(exc)}") from exc
            raise

    def batches(self, bigquery_sql: str, params: Mapping[str, Any], batch_rows: int) -> Iterator[pa.RecordBatch]:
        from google.api_core import exceptions as gexc

        rows = self._rows(bigquery_sql, params)
        try:
            for batch in rows.to_arrow_iterable(bqstorage_client=self._bqstorage):
                # pages can be large; re-chunk so downstream memory stays bounded by batch_rows
                for offset in range(0, max(batch.num_rows, 1), batch_rows):
                    if batch.num_rows:
                        yield batch.slice(offset, batch_rows)
        except gexc.GoogleAPICallError as exc:
            raise DataError(f"BigQuery read failed: {_first_line(exc)}") from exc

    def query(self, bigquery_sql: str, params: Mapping[str, Any]) -> pa.Table:
        rows = self._rows(bigquery_sql, params)
        batches = list(rows.to_arrow_iterable(bqstorage_client=self._bqstorage))
        if not batches:
            return pa.table({field.name: pa.array([], pa.string()) for field in rows.schema})
        return pa.Table.from_batches(batches)


def open_warehouse(settings: Settings | WarehouseSettings) -> Warehouse:
    warehouse = settings.warehouse if isinstance(settings, Settings) else settings
    if warehouse.engine == "bigquery":
        return BigQueryWarehouse.from_settings(settings)
    if isinstance(settings, Settings):
        return DuckDBWarehouse.from_settings(settings)
    return DuckDBWarehouse(warehouse.tables)
