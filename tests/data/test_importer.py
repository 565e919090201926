"""The Stack Exchange dump importer, on a Posts.xml built here, and the data step over what it wrote."""

from __future__ import annotations

import json
from pathlib import Path
from xml.sax.saxutils import quoteattr

import mlflow
import pyarrow.parquet as pq
import pytest

from llmops.cli import main
from llmops.errors import DataError
from projects.data.importer import import_posts, parse_tags
from llmops.dataset import read_examples

SITE = "ai.stackexchange.com"


def _row(**attrs: object) -> str:
    return "  <row " + " ".join(f"{k}={quoteattr(str(v))}" for k, v in attrs.items()) + " />\n"


def _posts_xml(path: Path, questions: int = 30) -> Path:
    rows = []
    for i in range(1, questions + 1):
        qid, aid = i, 1000 + i
        accepted = {"AcceptedAnswerId": aid} if i % 10 else {"AcceptedAnswerId": 9999 + i}  # 10% answer missing
        tags = "<python><neural-networks>" if i % 2 else "|reinforcement-learning|python|"
        rows.append(_row(Id=qid, PostTypeId=1, CreationDate=f"2021-03-{i % 28 + 1:02d}T10:00:00.123",
                         Score=i, ViewCount=10 * i, Title=f"Question {i}: how does layer {i} train?",
                         Body=f"<p>Body of question {i} with <code>x &lt; {i}</code> and café.</p>",
                         Tags=tags, AnswerCount=1, OwnerUserId=7, **accepted))
        rows.append(_row(Id=aid, PostTypeId=2, ParentId=qid, CreationDate=f"2021-04-{i % 28 + 1:02d}T08:00:00",
                         Score=2, Body=f"<p>Answer {i}:</p><pre><code>train(layer={i})\n</code></pre>"))
    rows.append(_row(Id=5000, PostTypeId=5, Body="a tag wiki"))  # other post types are skipped
    rows.append(_row(Id=5001, PostTypeId=1, Title="No date, no tags", Body="<p>q</p>", AcceptedAnswerId=5002))
    rows.append(_row(Id=5002, PostTypeId=2, ParentId=5001, Body="<p>a</p>"))
    path.write_text('<?xml version="1.0" encoding="utf-8"?>\n<posts>\n' + "".join(rows) + "</posts>\n",
                    encoding="utf-8")
    return path


def test_tags_in_both_dump_formats() -> None:
    assert parse_tags("<python><pandas>") == "python|pandas"
    assert parse_tags("|python|pandas|") == "python|pandas"
    assert parse_tags("") is None and parse_tags(None) is None


def test_import_writes_bigquery_shaped_tables(tmp_path: Path) -> None:
    result = import_posts(_posts_xml(tmp_path / "Posts.xml"), SITE, tmp_path / "tables")
    assert (result.questions, result.answers, result.skipped) == (31, 31, 1)
    questions = pq.read_table(tmp_path / "tables" / "posts_questions.parquet")
    answers = pq.read_table(tmp_path / "tables" / "posts_answers.parquet")
    assert {"id", "title", "body", "tags", "creation_date", "accepted_answer_id", "score", "site"} <= set(
        questions.column_names)
    assert str(questions.schema.field("creation_date").type) == "timestamp[us, tz=UTC]"
    first = questions.slice(0, 1).to_pylist()[0]
    assert first["tags"] == "python|neural-networks" and first["site"] == SITE
    assert "x &lt; 1" in first["body"] and "café" in first["body"]  # XML entities decoded once, HTML kept
    assert questions.to_pylist()[1]["tags"] == "reinforcement-learning|python"
    assert questions.to_pylist()[-1]["creation_date"] is None  # missing dates stay NULL
    assert set(answers.column("parent_id").to_pylist()) == set(questions.column("id").to_pylist())


@pytest.mark.parametrize(("damage", "message"), [
    (lambda text: text.encode("utf-8")[: len(text) // 2], "looks truncated"),
    (lambda text: text.encode("utf-8").replace(b"caf\xc3\xa9", b"caf\xe9", 1), "is not UTF-8"),
    (lambda text: text.replace('Score="3"', 'Score="three"', 1).encode(), "Score='three' is not a valid integer"),
])
def test_broken_dumps_are_refused_and_leave_nothing(damage, message: str, tmp_path: Path) -> None:
    good = _posts_xml(tmp_path / "good.xml").read_text(encoding="utf-8")
    bad = tmp_path / "Posts.xml"
    bad.write_bytes(damage(good))
    with pytest.raises(DataError, match=message):
        import_posts(bad, SITE, tmp_path / "tables")
    assert list((tmp_path / "tables").iterdir()) == []


def test_import_cli_then_prepare_on_the_dump(tracking_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    xml = _posts_xml(tmp_path / "Posts.xml")
    with pytest.raises(SystemExit) as info:
        main(["data", "import-dump", str(xml), "--site", SITE, "--out", str(tmp_path / "tables")])
    assert info.value.code == 0
    assert "31 questions, 31 answers" in capsys.readouterr().out
    tables = tmp_path / "tables"
    monkeypatch.setenv("LLMOPS_WAREHOUSE__TABLES", json.dumps({
        "bigquery-public-data.stackoverflow.posts_questions": str(tables / "posts_questions.parquet"),
        "bigquery-public-data.stackoverflow.posts_answers": str(tables / "posts_answers.parquet")}))
    with pytest.raises(SystemExit) as info:
        main(["data", "prepare", "--answer-date-cutoff", "2021-01-01", "--output-dir", str(tmp_path / "out")])
    assert info.value.code == 0
    (run,) = mlflow.search_runs(search_all_experiments=True, output_format="list")
    rows = read_examples(run.data.tags["llmops.train_uri"]) + read_examples(run.data.tags["llmops.eval_uri"])
    # 30 python questions, 3 of them accept an answer that is not in the dump; the undated one fails the cutoff
    assert len(rows) == 27 and all(r["id"] == f"{SITE}/{r['question_id']}" for r in rows)
    by_id = {r["question_id"]: r for r in rows}
    assert "```\ntrain(layer=1)\n```" in by_id[1]["answer"] and "`x < 1`" in by_id[1]["question"]
    funnel = json.loads(next((tmp_path / "out").iterdir()).joinpath("validation_report.json").read_text())["funnel"]
    assert funnel["with_accepted_answer_id"] - funnel["accepted_answer_present"] == 3


def test_import_cli_reports_a_bad_file_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "Posts.xml"
    bad.write_text('<?xml version="1.0"?>\n<posts>\n  <row Id="1" PostTypeId="1" ', encoding="utf-8")
    with pytest.raises(SystemExit) as info:
        main(["data", "import-dump", str(bad), "--site", SITE, "--out", str(tmp_path / "tables")])
    err = capsys.readouterr().err.strip()
    assert info.value.code == 3 and err.startswith("error: ") and "truncated" in err and "\n" not in err
