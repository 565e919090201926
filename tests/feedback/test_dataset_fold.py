"""`llmops data prepare --include-feedback` through the real data step on data/sample: what each kind of feedback
becomes, where it is placed (the stable split and the leakage rule hold), how conflicts are decided and counted,
PII, and the version's digest and lineage ("previous version + feedback set F") as the manifest, the run and the
tuning step record them."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import mlflow
import pytest

from feedback.capture import FeedbackInput, FeedbackService, pseudonym
from llmops.dataset import read_manifest
from llmops.records import FEEDBACK_SCHEMA_VERSION, write_feedback_records
from llmops.settings import load_settings
from projects.data.feedback import ID_PREFIX, PROVENANCE_FILE
from tests.feedback.helpers import T0, cli, cli_streams, served, write_log

NEW_CORRECTED = "How do I flatten a list of lists into one flat list in Python?"
FLATTEN = "Use a nested comprehension: `[x for row in rows for x in row]`, or `itertools.chain.from_iterable(rows)`."
NEW_CONFLICT = "Why does my asyncio coroutine never run when I call it directly?"
NEW_MAJORITY = "How can I pretty print a nested dictionary with indentation?"
NEW_CONFIRMED = "What is the quickest way to count word frequencies in a text file?"
NEW_ABSTAINED = "How do I make a cup of tea with a kettle and a teabag?"
NEW_LOW = "How do I compute a rolling median over a pandas series window?"
NEW_CHANGED = "How do I split a string on several different delimiter characters?"
TWIN_A = "Sort a list of tuples by the second element\n\nMy tuples are (name, score) pairs from a game."
TWIN_B = "Sort a list of tuples by the second element\n\nI have [('a', 3), ('b', 1)] and want b first."


def _prepare(capsys, *extra: str) -> tuple[int, str, str]:
    return cli(["data", "prepare", "--quiet", *extra], capsys)


def _latest(tmp_path: Path) -> Path:
    return max((tmp_path / "outputs" / "datasets").iterdir(), key=lambda p: p.name)


def _rows(directory: Path, split: str) -> list[dict]:
    return [json.loads(line) for line in (directory / f"{split}.jsonl").read_text().splitlines() if line.strip()]


@pytest.fixture
def base(tmp_path: Path, tracking_uri: str, capsys) -> dict:
    code, out, err = _prepare(capsys)
    assert code == 0, err
    directory = _latest(tmp_path)
    manifest = read_manifest(str(directory / "train.jsonl"))
    return {"dir": directory, "manifest": manifest, "train": _rows(directory, "train"),
            "eval": _rows(directory, "eval")}


def _feedback(tmp_path: Path, base: dict) -> dict:
    """Answers served, and feedback on them through the capture service (as the server and the CLI take it)."""
    eval_exact, eval_title, train_exact = base["eval"][0], base["eval"][1], base["train"][0]
    title_only = eval_title["question"].split("\n", 1)[0]
    asked = {
        "new": served(NEW_CORRECTED, "Use `sorted()`."),
        "eval_exact": served(eval_exact["question"], "Something unrelated."),
        "eval_title": served(title_only, "Something unrelated."),
        "train_exact": served(train_exact["question"], train_exact["answer"]),
        "conflict": served(NEW_CONFLICT, "Use threads."),
        "majority": served(NEW_MAJORITY, "Use print."),
        "confirmed": served(NEW_CONFIRMED, "Use `collections.Counter(open(path).read().split())`."),
        "abstained": served(NEW_ABSTAINED, "I don't know.", abstained=True),
        "low": served(NEW_LOW, "Use mean()."),
        "changed": served(NEW_CHANGED, "Use str.split()."),
        "twin_a": served(TWIN_A, "Use sorted(key=...)."),
        "twin_b": served(TWIN_B, "Use sorted(key=lambda t: t[1])."),
        "other_model": served("Unrelated question of another model?", "x", name="another-model"),
    }
    log = tmp_path / "log"
    write_log(log, list(asked.values()))
    settings = load_settings({"feedback": {"log_uri": str(log)}})
    service = FeedbackService(settings)
    rid = {key: record["request_id"] for key, record in asked.items()}

    def give(key: str, rating, user: str, source: str = "server", correction: str | None = None, minutes: int = 0):
        item = FeedbackInput(request_id=rid[key], rating=rating, corrected_answer=correction)
        service.take([item], source=source, users=[user], now=T0 + timedelta(minutes=minutes))

    give("new", 0, "ann", correction=FLATTEN)
    give("eval_exact", 0, "ann", correction="The corrected eval answer: convert with `pd.to_datetime`.")
    give("eval_title", 0, "bob", correction="Another corrected answer, for a near-duplicate of an eval question.")
    give("train_exact", 0, "ann", correction="A better training answer that replaces the old one.")
    give("conflict", 0, "u1", correction="Await it: `asyncio.run(main())`.", minutes=1)
    give("conflict", 0, "u2", correction="Await it:   `asyncio.run(main())`.", minutes=2)
    give("conflict", 0, "carol", source="review", correction="A coroutine runs only when awaited or scheduled: "
                                                             "`asyncio.run(main())`.", minutes=0)
    give("majority", 0, "u1", correction="Use `pprint.pprint(d)` or `json.dumps(d, indent=2)`.", minutes=1)
    give("majority", 0, "u2", correction="Use `pprint.pprint(d)`  or `json.dumps(d, indent=2)`.", minutes=2)
    give("majority", 0, "u3", correction="Use `print(d)`.", minutes=3)
    give("confirmed", 1, "ann")
    give("confirmed", 1, "bob")
    give("abstained", 1, "ann")
    give("low", 0, "ann")
    give("changed", 0, "dan", correction="An early correction that its author replaced.", minutes=1)
    give("changed", 0, "dan", correction="Use `re.split(r'[;,\\s]+', text)`.", minutes=5)
    give("twin_a", 1, "ann")
    give("twin_b", 0, "bob", correction="Use `sorted(pairs, key=lambda t: t[1])`.")
    give("other_model", 0, "ann", correction="Not about this model.")
    # a record from an older writer that stored a correction unredacted: redacted on the way into the dataset
    raw = {"schema_version": FEEDBACK_SCHEMA_VERSION, "feedback_id": "fb-raw", "request_id": "legacy-1",
           "time": T0, "rating": 0.0, "rating_kind": "thumbs",
           "corrected_answer": "Mail the maintainer at jane.doe@example.org or call +1 650 253 0000.",
           "comment": None, "user": "legacy", "source": "import", "model_name": "so-qa-assistant",
           "model_version": "1", "prompt_name": "so-qa", "prompt_version": 1, "instruction_hash": "x",
           "dataset_digest": "d", "question": "Who maintains the legacy importer package?", "answer": "?"}
    write_feedback_records(settings.feedback.store_uri, [raw])
    return {"asked": asked, "eval_exact": eval_exact, "eval_title": eval_title, "train_exact": train_exact,
            "title_only": title_only}


def test_feedback_becomes_the_next_version_with_provenance(tmp_path: Path, base: dict, capsys) -> None:
    fb = _feedback(tmp_path, base)
    code, out, err = _prepare(capsys, "--include-feedback")
    assert code == 0, err
    assert "feedback set" in out
    directory = _latest(tmp_path)
    assert directory != base["dir"]
    manifest = read_manifest(str(directory / "train.jsonl"))
    train, evals = _rows(directory, "train"), _rows(directory, "eval")
    by_question = {r["question"]: r for r in train + evals}

    # the version records "previous version + feedback set F" and continues the lineage
    assert manifest.previous_digest == base["manifest"].digest != manifest.digest
    assert manifest.lineage_key == base["manifest"].lineage_key
    lineage = manifest.lineage.feedback
    assert lineage["count"] == 19 and lineage["model_name"] == "so-qa-assistant"  # not the other model's record
    assert len(lineage["digest"]) == len(lineage["ids_digest"]) == 16
    assert lineage["conflicts"] == 2 and lineage["overruled"] == 3 and lineage["superseded"] == 2

    # a new question's correction teaches: it is a training example answered with the correction
    new = by_question[NEW_CORRECTED]
    assert new["split"] == "train" and new["answer"] == new["output_text"] == FLATTEN
    assert new["id"].startswith(ID_PREFIX) and new["question_id"] >= 2**62
    assert new["input_text"].count(NEW_CORRECTED) == 1 and new["instruction_hash"] == manifest.instruction_hash
    # the same question as an eval example keeps its split and its identity, with the corrected reference
    eval_exact = fb["eval_exact"]
    replaced = next(r for r in evals if r["id"] == eval_exact["id"])
    assert replaced["answer"].startswith("The corrected eval answer") and replaced["link"] == eval_exact["link"]
    assert all(r["id"] != eval_exact["id"] for r in train)
    # a near-duplicate of an eval question never enters train
    assert by_question[fb["title_only"]]["split"] == "eval"
    assert any(r["id"] == fb["eval_title"]["id"] for r in evals)  # the eval example itself stays
    # the same question as a training example replaces it there
    train_exact = [r for r in train if r["id"] == fb["train_exact"]["id"]]
    assert len(train_exact) == 1 and train_exact[0]["answer"].startswith("A better training answer")
    # conflicts: the reviewer's correction beats two identical app corrections; else the majority; else the newest
    assert by_question[NEW_CONFLICT]["answer"].startswith("A coroutine runs only when awaited")
    # (the two majority texts differ only in spacing: one group, its newest text is used)
    assert by_question[NEW_MAJORITY]["answer"] == "Use `pprint.pprint(d)`  or `json.dumps(d, indent=2)`."
    assert by_question[NEW_CHANGED]["answer"] == "Use `re.split(r'[;,\\s]+', text)`."
    # a confirmed answer becomes a new eval case; an abstention, a bare low rating and another model add nothing
    assert by_question[NEW_CONFIRMED]["split"] == "eval"
    assert by_question[NEW_CONFIRMED]["answer"].startswith("Use `collections.Counter")
    for question in (NEW_ABSTAINED, NEW_LOW, "Unrelated question of another model?"):
        assert question not in by_question
    # near-duplicate feedback questions are placed together: the confirmed twin follows the corrected one to train
    assert by_question[TWIN_A]["split"] == by_question[TWIN_B]["split"] == "train"
    # PII is redacted before anything enters the dataset, even from a record stored raw
    legacy = by_question["Who maintains the legacy importer package?"]
    assert "jane.doe" not in legacy["answer"] and "[EMAIL]" in legacy["answer"] and "[PHONE]" in legacy["answer"]

    # provenance: feedback ids, request ids, reviewers and why each example is where it is
    provenance = [json.loads(line) for line in (directory / PROVENANCE_FILE).read_text().splitlines()]
    assert {row["id"] for row in provenance} == {r["id"] for r in train + evals
                                                 if r["id"].startswith(ID_PREFIX)} | {eval_exact["id"],
                                                                                     fb["train_exact"]["id"]}
    conflict = next(row for row in provenance if row["id"] == by_question[NEW_CONFLICT]["id"])
    assert conflict["decided_by"] == "source" and conflict["users"] == ["carol"] and len(conflict["overruled"]) == 2
    assert conflict["request_ids"] == [fb["asked"]["conflict"]["request_id"]]
    assert conflict["sources"] == ["review"] and conflict["model_versions"] == ["1"]
    majority = next(row for row in provenance if row["id"] == by_question[NEW_MAJORITY]["id"])
    assert majority["decided_by"] == "majority" and majority["users"] == sorted([pseudonym("u1"), pseudonym("u2")])
    placed = next(row for row in provenance if row["id"] == by_question[fb["title_only"]]["id"])
    assert placed["placement"] == f"near-duplicate of eval example {fb['eval_title']['id']}"

    # the leakage report: the feedback added no eval question with a near-duplicate in train
    report = json.loads((directory / "validation_report.json").read_text())
    before = json.loads((base["dir"] / "validation_report.json").read_text())
    assert report["leakage"]["eval_questions_with_train_duplicate"] == \
        before["leakage"]["eval_questions_with_train_duplicate"]
    assert report["feedback"]["counts"]["replaced_by_same_user"] == 1
    assert report["feedback"]["counts"]["low_without_correction"] >= 1

    # the run records it too, and the same feedback again reuses the version
    (run,) = mlflow.search_runs(search_all_experiments=True, output_format="list",
                                filter_string=f"tags.`llmops.dataset_digest` = '{manifest.digest}'")
    assert run.data.tags["llmops.feedback_digest"] == lineage["digest"]
    assert run.data.tags["llmops.previous_dataset_digest"] == base["manifest"].digest
    assert run.data.metrics["feedback_train"] + run.data.metrics["feedback_eval"] == len(provenance)
    code, out, _ = _prepare(capsys, "--include-feedback")
    assert code == 0 and f"dataset {manifest.digest} unchanged: reusing run" in out

    # and every consumer records the feedback set: tuning (hence the release bundle) names it
    code, out, err = cli(["tune", "--train-uri", str(directory / "train.jsonl"), "--eval-uri",
                          str(directory / "eval.jsonl")], capsys)
    assert code == 0, err
    tune = mlflow.get_run(next(line.split(": ")[1] for line in out.splitlines() if line.startswith("run_id: ")))
    assert tune.data.params["dataset_feedback"] == lineage["digest"]
    assert tune.data.params["dataset_previous"] == base["manifest"].digest
    assert tune.data.params["dataset_digest"] == manifest.digest


def test_include_feedback_with_nothing_usable_or_no_store(tmp_path: Path, base: dict, capsys) -> None:
    code, _, err = _prepare(capsys, "--include-feedback", "--feedback-store", str(tmp_path / "no-such-store"))
    assert code == 3 and "feedback store" in err and "does not exist" in err
    assert _latest(tmp_path) == base["dir"]  # nothing written
    log = tmp_path / "log"
    record = write_log(log, [served("A question only rated low?", "An answer.")])[0]
    service = FeedbackService(load_settings({"feedback": {"log_uri": str(log)}}))
    service.take([FeedbackInput(request_id=record["request_id"], rating=0)], source="cli", users=["ann"])
    code, out, stderr = cli_streams(["data", "prepare", "--quiet", "--include-feedback"], capsys)
    assert code == 0 and "reusing run" in out  # no example from F: the same version as without it
    assert "yields no example" in stderr


def test_the_setting_and_the_mlproject_parameter_turn_it_on(tmp_path: Path, base: dict, capsys,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "log"
    record = write_log(log, [served(NEW_CORRECTED, "Use sorted().")])[0]
    FeedbackService(load_settings({"feedback": {"log_uri": str(log)}})).take(
        [FeedbackInput(request_id=record["request_id"], rating=0, corrected_answer=FLATTEN)], source="cli",
        users=["ann"])
    code, out, err = cli(["data", "prepare", "--quiet", "--include-feedback-value", "nope"], capsys)
    assert code == 2 and "feedback.include_in_dataset" in err
    monkeypatch.setenv("LLMOPS_FEEDBACK__INCLUDE_IN_DATASET", "true")
    code, out, err = _prepare(capsys, "--no-include-feedback")
    assert code == 0 and "reusing run" in out  # the flag wins over the setting
    code, out, err = cli(["data", "prepare", "--quiet", "--include-feedback-value", ""], capsys)
    assert code == 0 and "feedback set" in out  # '' (MLproject's default) leaves it to the setting
