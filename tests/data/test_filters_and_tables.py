"""The answer date cutoff can be turned off, tables take globs and several files, duplicate ids are counted and
announced, and a query that returns nothing shows where the rows were lost."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import mlflow
import pyarrow.parquet as pq
import pytest

from llmops.cli import main
from llmops.errors import NotFoundError
from llmops.settings import load_settings
from projects.data.warehouse import DuckDBWarehouse, load_query

QUESTIONS = "bigquery-public-data.stackoverflow.posts_questions"
ANSWERS = "bigquery-public-data.stackoverflow.posts_answers"


def _params(**overrides: object) -> dict[str, object]:
    params = {"tag_pattern": ".*", "answer_date_cutoff": None, "limit": 1_000_000,
              "question_date_from": None, "question_date_to": None}
    params.update(overrides)
    return params


def _count(warehouse: DuckDBWarehouse, **params: object) -> int:
    return sum(batch.num_rows for batch in warehouse.batches(load_query("qa_pairs"), _params(**params), 500))


def _funnel(warehouse: DuckDBWarehouse, **params: object) -> dict[str, int]:
    return warehouse.query(load_query("qa_funnel"), _params(**params)).to_pylist()[0]


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(args)
    captured = capsys.readouterr()
    return int(info.value.code or 0), captured.out, captured.err


def test_no_answer_date_cutoff_keeps_undated_answers(shared_data: Path) -> None:
    folder = shared_data / "stackexchange"
    warehouse = DuckDBWarehouse({QUESTIONS: folder / "posts_questions.parquet",
                                 ANSWERS: folder / "posts_answers.parquet"})
    funnel = _funnel(warehouse)
    assert funnel["answer_date_null"] > 100  # the SEDE sources carry no answer dates
    everything = _count(warehouse)
    dated = _count(warehouse, answer_date_cutoff="1970-01-01")
    assert everything == funnel["tag_match"] == funnel["answer_date_match"]
    assert dated == everything - funnel["answer_date_null"]
    # counted the same way by the funnel when a cutoff is on
    assert _funnel(warehouse, answer_date_cutoff="1970-01-01")["answer_date_match"] == dated


@pytest.mark.parametrize("spelling", ["none", "None", "NONE"])
def test_answer_date_cutoff_none_from_flags_environment_and_yaml(spelling: str, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from llmops.cli_support import settings_for

    assert settings_for(**{"data.answer_date_cutoff": spelling}).data.answer_date_cutoff is None
    monkeypatch.setenv("LLMOPS_DATA__ANSWER_DATE_CUTOFF", spelling)
    assert load_settings().data.answer_date_cutoff is None
    monkeypatch.delenv("LLMOPS_DATA__ANSWER_DATE_CUTOFF")
    (tmp_path / "llmops.yaml").write_text("data:\n  answer_date_cutoff: null\n")
    assert load_settings().data.answer_date_cutoff is None
    (tmp_path / "llmops.yaml").write_text("data:\n  answer_date_cutoff: 2021-03-04\n")  # YAML reads a date
    assert load_settings().data.answer_date_cutoff == "2021-03-04"


def test_step_without_cutoff_on_real_data(tracking_uri: str, shared_data: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    folder = shared_data / "stackexchange"
    monkeypatch.setenv("LLMOPS_WAREHOUSE__TABLES", json.dumps({QUESTIONS: str(folder / "posts_questions.parquet"),
                                                               ANSWERS: str(folder / "posts_answers.parquet")}))
    code, _, err = _cli(["data", "prepare", "--tag-pattern", ".*", "--answer-date-cutoff", "none",
                         "--output-dir", str(tmp_path / "out")], capsys)
    assert code == 0, err
    (version,) = (tmp_path / "out").iterdir()
    report = json.loads((version / "validation_report.json").read_text())
    assert report["rows"]["from_query"] == report["funnel"]["tag_match"] > report["funnel"]["answer_date_null"] > 0


def _split_by_site(source: Path, target: Path, stem: str) -> list[Path]:
    """One Parquet file per site, as several imported dumps would be."""
    con = duckdb.connect()
    sites = [row[0] for row in con.execute(f"SELECT DISTINCT site FROM read_parquet('{source}') ORDER BY 1").fetchall()]
    files = []
    for i, site in enumerate(sites):
        path = target / f"{stem}-{i}.parquet"
        con.execute(f"COPY (SELECT * FROM read_parquet('{source}') WHERE site = $1) TO '{path}' (FORMAT PARQUET)",
                    [site])
        files.append(path)
    return files


def test_tables_take_globs_and_lists_of_files(shared_data: Path, tmp_path: Path) -> None:
    folder = shared_data / "stackexchange"
    whole = DuckDBWarehouse({QUESTIONS: folder / "posts_questions.parquet", ANSWERS: folder / "posts_answers.parquet"})
    questions = _split_by_site(folder / "posts_questions.parquet", tmp_path, "questions")
    answers = _split_by_site(folder / "posts_answers.parquet", tmp_path, "answers")
    assert len(questions) >= 4
    by_glob = DuckDBWarehouse({QUESTIONS: str(tmp_path / "questions-*.parquet"), ANSWERS: [str(p) for p in answers]})
    assert _count(by_glob) == _count(whole) > 100
    assert _funnel(by_glob) == _funnel(whole)
    assert whole.query(load_query("table_duplicates"), _params()).to_pylist() == [
        {"posts_questions": 0, "posts_answers": 0}]
    # the settings keep globs and lists, absolute
    (tmp_path / "llmops.yaml").write_text(
        f"warehouse:\n  tables:\n    {QUESTIONS}: questions-*.parquet\n    {ANSWERS}: [{answers[0].name}, "
        f"{answers[1].name}]\n")
    settings = load_settings()
    assert settings.warehouse.tables[QUESTIONS] == str(tmp_path / "questions-*.parquet")
    assert settings.warehouse.table_files(QUESTIONS) == sorted(questions)
    assert settings.warehouse.table_files(ANSWERS) == answers[:2]


def test_a_glob_that_matches_nothing_is_named(tmp_path: Path, sample_table_map: dict[str, str]) -> None:
    with pytest.raises(NotFoundError, match=r"warehouse table .*posts_questions: no file matches .*nothing-\*"):
        DuckDBWarehouse({**sample_table_map, QUESTIONS: str(tmp_path / "nothing-*.parquet")})


def test_duplicate_ids_are_counted_and_announced(tracking_uri: str, sample_dir: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """The same dump imported twice: every (site, id) twice. The step keeps one example per question, counts the
    duplicate rows in the report and says so on stderr."""
    import shutil

    copy = tmp_path / "again.jsonl"
    shutil.copy(sample_dir / "posts_questions.jsonl", copy)
    questions = len((sample_dir / "posts_questions.jsonl").read_text().splitlines())
    monkeypatch.setenv("LLMOPS_WAREHOUSE__TABLES", json.dumps({
        QUESTIONS: [str(sample_dir / "posts_questions.jsonl"), str(copy)],
        ANSWERS: str(sample_dir / "posts_answers.jsonl")}))
    code, out, err = _cli(["data", "prepare", "--output-dir", str(tmp_path / "out")], capsys)
    assert code == 0, err
    assert (f"warning: warehouse table posts_questions has {questions:,} row(s) whose (site, id) occurs more than "
            "once; kept one example per question id") in err
    (version,) = (tmp_path / "out").iterdir()
    report = json.loads((version / "validation_report.json").read_text())
    assert report["duplicates"] == {"repeated_question_ids": 3 * 352, "posts_questions": questions, "posts_answers": 0}
    assert report["rows"]["after_dedup"] == 352  # as from one copy (the hand-checked sample rows)
    assert report["rows"]["from_query"] == 4 * 352  # the pairs and the body join each see both copies
    rows = [json.loads(line) for s in ("train", "eval") for line in (version / f"{s}.jsonl").read_text().splitlines()]
    assert len({r["id"] for r in rows}) == len(rows) == 352
    (run,) = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert run.data.metrics["dropped_exact_duplicate"] == 3 * 352


def test_zero_rows_show_the_funnel(tracking_uri: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _cli(["data", "prepare", "--tag-pattern", "^no-such-tag$", "--output-dir", str(tmp_path / "o")],
                        capsys)
    assert code == 3
    (line,) = [line for line in err.splitlines() if line.startswith("error:")]
    assert line.startswith("error: zero examples: the query returned 0 row(s); funnel: questions 446 -> with an "
                           "accepted answer id ")
    assert "-> tag matches 0 -> answer date passes the cutoff 0 -> question date in the window 0" in line
    code, _, err = _cli(["data", "prepare", "--answer-date-cutoff", "2099-01-01", "--output-dir",
                         str(tmp_path / "o")], capsys)
    assert code == 3 and ("funnel: questions 446 -> with an accepted answer id 419 -> accepted answer present 419 "
                          "-> tag matches 389 -> answer date passes the cutoff 0 -> question date in the window 0") in err


def test_duplicate_ids_resolved_by_the_step_are_counted(tmp_path: Path) -> None:
    """Same question id, different text (an edited post in two dumps): one example kept, `duplicate_id` counted."""
    from projects.data.stage import Staging

    staging = Staging(tmp_path, "64MB", 1)
    import pyarrow as pa

    from projects.data.clean import CLEAN_SCHEMA

    def row(answer_id: int, text: str) -> dict[str, object]:
        base = {name: f"{text}-{name}" for name in CLEAN_SCHEMA.names}
        return {**base, "id": "7", "question_id": 7, "answer_id": answer_id, "prompt_version": 1,
                "exact_key": text, "split": "train"}

    pq.write_table(pa.Table.from_pylist([row(11, "a"), row(12, "b"), row(13, "b")], schema=CLEAN_SCHEMA),
                   staging.part_path(0))
    con = staging.finish()
    assert con.execute("SELECT count(*) FROM keep1").fetchall()[0][0] == 2  # exact duplicate "b" dropped
    assert con.execute("SELECT answer_id FROM examples").fetchall() == [(11,)]  # then one per id: lowest answer
    staging.close()


def test_processes_are_chosen_where_they_pay() -> None:
    from projects.data.prepare import uses_processes

    assert not uses_processes("auto", cpus=2) and uses_processes("auto", cpus=4) and uses_processes("auto", cpus=16)
    assert uses_processes("processes", cpus=2) and not uses_processes("threads", cpus=16)
    assert load_settings().dataprep.clean_in == "auto"
