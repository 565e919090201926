"""One BigQuery-dialect query, two engines: DuckDB on local files and BigQuery behind a fake of its client."""

from __future__ import annotations

import operator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from llmops.errors import ConfigError, DataError
from projects.data.warehouse import BigQueryWarehouse, DuckDBWarehouse, load_query

QUESTIONS = "bigquery-public-data.stackoverflow.posts_questions"
ANSWERS = "bigquery-public-data.stackoverflow.posts_answers"


def _params(**overrides: Any) -> dict[str, Any]:
    params = {"tag_pattern": "python", "answer_date_cutoff": "2020-01-01", "limit": 1000,
              "question_date_from": None, "question_date_to": None}
    return {**params, **overrides}


def _pairs(table: pa.Table) -> list[tuple[int, int]]:
    return sorted(zip(table.column("question_id").to_pylist(), table.column("answer_id").to_pylist(), strict=True))


def _stream(warehouse: Any, params: dict[str, Any], batch_rows: int = 25) -> pa.Table:
    batches = list(warehouse.batches(load_query("qa_pairs"), params, batch_rows))
    assert all(b.num_rows <= batch_rows for b in batches)
    return pa.Table.from_batches(batches)


def test_duckdb_returns_the_hand_checked_rows_on_the_sample(sample_dir: Path, sample_table_map, expected) -> None:
    warehouse = DuckDBWarehouse(sample_table_map)
    table = _stream(warehouse, _params())
    want = expected(sample_dir, "python", "2020-01-01")
    assert len(want) == 352  # counted by hand from data/sample: python-tagged, accepted answer dated >= 2020
    assert _pairs(table) == want
    assert set(table.column("site").to_pylist()) == {"stackoverflow.com"}
    # the date window and the limit are bind parameters too
    window = _stream(warehouse, _params(question_date_from="2021-01-01", question_date_to="2023-01-01"))
    assert _pairs(window) == expected(sample_dir, "python", "2020-01-01", "2021-01-01", "2023-01-01")
    assert 0 < window.num_rows < table.num_rows
    limited = _stream(warehouse, _params(limit=7))
    assert sorted(limited.column("question_id").to_pylist()) == [q for q, _ in want][:7]  # the 7 lowest ids


def test_both_engines_receive_the_same_logical_query(sample_table_map, fake_client_class) -> None:
    client = fake_client_class(sample_table_map, bytes_scanned=5_000)
    bigquery = BigQueryWarehouse(client, maximum_bytes_billed=10_000)
    duck = DuckDBWarehouse(sample_table_map)
    for params in (_params(), _params(tag_pattern="javascript|typescript", answer_date_cutoff="2016-06-30"),
                   _params(question_date_from="2017-01-01")):
        from_bigquery = _stream(bigquery, params)
        from_duckdb = _stream(duck, params)
        assert from_bigquery.num_rows > 0
        assert from_bigquery.to_pylist() == from_duckdb.to_pylist()
    # every query: a dry run first, then the real run under the byte cap, with typed named parameters
    (dry_sql, dry), (sql, real) = client.calls[:2]
    assert dry.dry_run and not real.dry_run and real.maximum_bytes_billed == 10_000
    assert dry_sql == sql and "@tag_pattern" in sql and "python" not in sql
    types = {p.name: (p.type_, p.value) for p in real.query_parameters}
    assert types == {"tag_pattern": ("STRING", "python"), "answer_date_cutoff": ("STRING", "2020-01-01"),
                     "limit": ("INT64", 1000), "question_date_from": ("STRING", None),
                     "question_date_to": ("STRING", None)}
    assert client.last_rows.bqstorage_client_seen is None  # no Storage API client installed here


def test_bigquery_refuses_a_query_over_the_byte_cap(sample_table_map, fake_client_class) -> None:
    client = fake_client_class(sample_table_map, bytes_scanned=50 * 1024**3)
    warehouse = BigQueryWarehouse(client, maximum_bytes_billed=10 * 1024**3)
    with pytest.raises(DataError, match=r"would scan 53,687,091,200 bytes, over the cap of 10,737,418,240"):
        list(warehouse.batches(load_query("qa_pairs"), _params(), 100))
    assert len(client.calls) == 1 and client.calls[0][1].dry_run  # nothing billed


def test_bigquery_errors_become_one_line(sample_table_map, fake_client_class) -> None:
    warehouse = BigQueryWarehouse(fake_client_class(sample_table_map), maximum_bytes_billed=10_000)
    bad = load_query("qa_pairs").replace("qb.title AS title", "qb.no_such_column AS title")
    with pytest.raises(DataError, match="BigQuery query failed: .*no_such_column"):
        list(warehouse.batches(bad, _params(), 100))


def test_missing_credentials_are_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from llmops.settings import load_settings

    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "no-such-key.json"))
    monkeypatch.setenv("NO_GCE_CHECK", "True")
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    settings = load_settings({"warehouse": {"engine": "bigquery", "project": "p"}})
    with pytest.raises(ConfigError, match="no Google Cloud credentials"):
        BigQueryWarehouse.from_settings(settings)


@pytest.mark.parametrize(("params", "message"), [
    (_params(limit="10"), r"@limit must be INT64, got str '10'"),
    (_params(limit=True), r"@limit must be INT64"),
    (_params(answer_date_cutoff="01/02/2020"), r"@answer_date_cutoff must be a date as YYYY-MM-DD"),
    (_params(question_date_to="2020-13-01"), r"@question_date_to must be a date"),
    (_params(tag_pattern=None), r"@tag_pattern may not be NULL"),
    ({"tag_pattern": "python", "limit": 3}, r"@answer_date_cutoff has no value"),
])
def test_bad_parameters_are_refused_by_both_engines(params, message, sample_table_map, fake_client_class) -> None:
    for warehouse in (DuckDBWarehouse(sample_table_map),
                      BigQueryWarehouse(fake_client_class(sample_table_map), maximum_bytes_billed=10)):
        with pytest.raises(DataError, match=message):
            list(warehouse.batches(load_query("qa_pairs"), params, 10))


@pytest.mark.parametrize(("sql", "message"), [
    ("SELECT * FROM `p.d.nowhere`", r"unknown table\(s\) p.d.nowhere; configured: "),
    ("SELECT q.nope FROM `bigquery-public-data.stackoverflow.posts_questions` AS q", r"DuckDB query failed: .*nope"),
    ("SELEC id FROM", r"SQL does not parse as BigQuery"),
    ("SELECT 1; SELECT 2", r"exactly one SQL statement, found 2"),
    ("SELECT @mystery AS x", r"@mystery has no value"),
])
def test_bad_sql_is_named(sql: str, message: str, sample_table_map) -> None:
    with pytest.raises(DataError, match=message):
        list(DuckDBWarehouse(sample_table_map).batches(sql, {}, 10))


def test_ids_are_joined_per_site_when_tables_carry_one(tmp_path: Path) -> None:
    """Stack Exchange ids repeat across sites: question 1 on two sites must get its own site's answer."""
    ts = pa.array([1_700_000_000_000_000] * 2, pa.timestamp("us", tz="UTC"))
    pq.write_table(pa.table({
        "id": [1, 1], "title": ["T a", "T b"], "body": ["<p>qa</p>", "<p>qb</p>"], "tags": ["x", "x"],
        "creation_date": ts, "accepted_answer_id": [10, 10], "score": [1, 1], "site": ["a.se", "b.se"]}),
        tmp_path / "q.parquet")
    pq.write_table(pa.table({
        "id": [10, 10], "body": ["answer on b", "answer on a"], "creation_date": ts, "parent_id": [1, 1],
        "score": [1, 1], "site": ["b.se", "a.se"]}), tmp_path / "a.parquet")
    warehouse = DuckDBWarehouse({QUESTIONS: tmp_path / "q.parquet", ANSWERS: tmp_path / "a.parquet"})
    rows = _stream(warehouse, _params(tag_pattern=".*")).to_pylist()
    assert [(r["site"], r["title"], r["answer_body"]) for r in rows] == [
        ("a.se", "T a", "answer on a"), ("b.se", "T b", "answer on b")]


def test_a_non_utf8_table_is_a_data_error(tmp_path: Path, sample_table_map) -> None:
    bad = tmp_path / "posts_questions.csv"
    bad.write_bytes(b"id,title,body,tags,creation_date,accepted_answer_id,score\n"
                    + b"1,caf\xe9 \xff\xfe,body,python,2021-01-01,5,1\n" * 3)
    with pytest.raises(DataError, match="posts_questions.*not utf-8 encoded"):
        warehouse = DuckDBWarehouse({**sample_table_map, QUESTIONS: bad})
        list(warehouse.batches(load_query("qa_pairs"), _params(), 10))


def test_shared_stackexchange_tables_join_on_site_and_id(shared_data: Path) -> None:
    folder = shared_data / "stackexchange"
    warehouse = DuckDBWarehouse({QUESTIONS: folder / "posts_questions.parquet",
                                 ANSWERS: folder / "posts_answers.parquet"})
    table = _stream(warehouse, _params(tag_pattern=".*", answer_date_cutoff="1970-01-01", limit=100_000), 500)
    assert table.num_rows > 100 and len(set(table.column("site").to_pylist())) > 1
    answers = pq.read_table(folder / "posts_answers.parquet", columns=["site", "id", "parent_id"]).to_pylist()
    parent = {(a["site"], a["id"]): a["parent_id"] for a in answers}
    for row in table.to_pylist():  # every joined answer is the one of the question's own site
        assert parent[(row["site"], row["answer_id"])] == row["question_id"]


@pytest.mark.live
def test_live_bigquery_dry_run_and_a_tiny_query() -> None:
    """Against real BigQuery (public dataset; bills your project): needs credentials and GOOGLE_CLOUD_PROJECT."""
    import os

    from llmops.settings import load_settings

    project = os.environ.get("GOOGLE_CLOUD_PROJECT")
    if not project or not os.environ.get("GOOGLE_APPLICATION_CREDENTIALS"):
        pytest.skip("set GOOGLE_APPLICATION_CREDENTIALS and GOOGLE_CLOUD_PROJECT to run against BigQuery")
    settings = load_settings({"warehouse": {"engine": "bigquery", "project": project,
                                            "maximum_bytes_billed": 200 * 1024**3}})
    warehouse = BigQueryWarehouse.from_settings(settings)
    params = _params(limit=5, question_date_from="2022-01-01", question_date_to="2022-01-08")
    assert warehouse.dry_run_bytes(load_query("qa_pairs"), params) > 0
    table = _stream(warehouse, params, 5)
    assert 0 < table.num_rows <= 5 and set(table.column("site").to_pylist()) == {"stackoverflow.com"}


def test_bigquery_results_stream_through_the_storage_read_api(sample_table_map, fake_client_class,
                                                              fake_storage_class) -> None:
    """The SDK's real RowIterator and Storage Read API reader decode the streams; batches stay bounded."""
    storage = fake_storage_class(stream_count=3, rows_per_message=17)
    client = fake_client_class(sample_table_map, storage=storage)
    warehouse = BigQueryWarehouse(client, maximum_bytes_billed=10_000, bqstorage_client=storage)
    from_storage = _stream(warehouse, _params(), batch_rows=10)
    from_duckdb = _stream(DuckDBWarehouse(sample_table_map), _params())
    key = operator.itemgetter("site", "question_id")  # streams interleave: compare rows by key
    assert sorted(from_storage.to_pylist(), key=key) == sorted(from_duckdb.to_pylist(), key=key)
    parent, session, _ = storage.sessions[0]
    assert parent == "projects/fake-project" and session.table.startswith("projects/fake-project/datasets/_anon/")
