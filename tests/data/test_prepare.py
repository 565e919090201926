"""The whole data step through its CLI, on a real SQLite MLflow store and real DuckDB."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pyarrow.parquet as pq
import pytest

from llmops.cli import main
from llmops.errors import DataError
from llmops.dataset import dataset_digest, identify, read_manifest, split_digest
from llmops.dataset import REQUIRED_KEYS, read_examples

QUESTIONS = "bigquery-public-data.stackoverflow.posts_questions"
ANSWERS = "bigquery-public-data.stackoverflow.posts_answers"


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(args)
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(errors) <= 1, errors
    return int(info.value.code or 0), captured.out, errors[0] if errors else ""


def _runs() -> list:
    return mlflow.search_runs(search_all_experiments=True, output_format="list", order_by=["start_time ASC"])


def _tables(monkeypatch: pytest.MonkeyPatch, questions: Path, answers: Path) -> None:
    monkeypatch.setenv("LLMOPS_WAREHOUSE__TABLES", json.dumps({QUESTIONS: str(questions), ANSWERS: str(answers)}))


def test_sample_dataset_formats_digest_prompt_and_reuse(tracking_uri: str, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code, stdout, _ = _cli(["data", "prepare", "--output-dir", str(out), "--test-percent", "10"], capsys)
    assert code == 0, stdout
    (version,) = out.iterdir()
    (run,) = _runs()
    tags = run.data.tags
    assert run.info.status == "FINISHED" and version.name.endswith(tags["llmops.dataset_digest"])
    assert version.name[:16].endswith("Z")  # <creation time>-<digest>

    splits = {s: read_examples(tags[f"llmops.{s}_uri"]) for s in ("train", "eval", "test")}
    rows = [r for split in splits.values() for r in split]
    assert len(rows) == 352 and len({r["id"] for r in rows}) == 352  # the hand-checked query rows
    assert all(set(REQUIRED_KEYS) <= set(r) for r in rows)
    assert all(r["split"] == s for s, split in splits.items() for r in split)
    assert 0.65 < len(splits["train"]) / 352 < 0.85 and splits["test"]
    # the digest tag is `dataset_digest` over the split digests of what consumers read back (train + eval + test),
    # and the manifest beside the files says the same, with its scope and lineage
    assert dataset_digest({s: split_digest(split) for s, split in splits.items()}) == tags["llmops.dataset_digest"]
    manifest = read_manifest(tags["llmops.train_uri"])
    assert (manifest.digest, manifest.scope) == (tags["llmops.dataset_digest"], "train+eval+test")
    assert manifest.lineage_key == tags["llmops.dataset_lineage"] == run.data.params["dataset_lineage"]
    identity = identify({"train": (tags["llmops.train_uri"], splits["train"]),
                         "eval": (tags["llmops.eval_uri"], splits["eval"])})
    assert identity.digest == tags["llmops.dataset_digest"] and identity.scope == "train+eval+test"
    # every example records the registry prompt it was rendered with
    prompt = mlflow.genai.load_prompt(f"prompts:/{rows[0]['prompt_name']}/{rows[0]['prompt_version']}")
    head, tail = prompt.template.split("{{question}}")
    assert all(r["input_text"] == head + r["question"] + tail and r["output_text"] == r["answer"] for r in rows)
    assert {r["instruction_hash"] for r in rows} == {prompt.tags["llmops.instruction_hash"]}
    # Vertex AI supervised-tuning chat format: the same examples as the input/output file (row order is free)
    vertex = [json.loads(line) for line in (version / "train_vertex.jsonl").read_text().splitlines()]
    plain = [json.loads(line) for line in (version / "train.jsonl").read_text().splitlines()]
    chats = sorted(json.dumps(v, sort_keys=True) for v in vertex)
    assert chats == sorted(json.dumps({"contents": [{"role": "user", "parts": [{"text": p["input_text"]}]},
                                                    {"role": "model", "parts": [{"text": p["output_text"]}]}]},
                                      sort_keys=True) for p in plain)
    # report + stats + dataset inputs in MLflow
    report = json.loads((version / "validation_report.json").read_text())
    assert report["funnel"]["answer_date_match"] == 352 and report["rows"]["from_query"] == 352
    assert report["leakage"]["eval_questions_with_train_duplicate"] == run.data.metrics["leakage_eval_questions"]
    artifacts = {f.path for f in mlflow.MlflowClient().list_artifacts(run.info.run_id, "datasets")}
    assert {"datasets/validation_report.json", "datasets/stats.json", "datasets/eval_vertex.jsonl"} <= artifacts
    assert {d.dataset.name for d in run.inputs.dataset_inputs} == {"so-qa-train", "so-qa-eval", "so-qa-test"}
    assert {d.dataset.digest for d in run.inputs.dataset_inputs} == {tags["llmops.dataset_digest"]}

    # the same inputs again: same digest, nothing written, the earlier run's files reused
    code, stdout, _ = _cli(["data", "prepare", "--output-dir", str(out), "--test-percent", "10"], capsys)
    assert code == 0 and "reused run" in stdout
    assert len(list(out.iterdir())) == 1
    second = _runs()[-1]
    assert second.data.tags["llmops.reused_from"] == run.info.run_id
    assert second.data.tags["llmops.train_uri"] == tags["llmops.train_uri"]
    # a different split is a different dataset version
    code, _, _ = _cli(["data", "prepare", "--output-dir", str(out)], capsys)
    assert code == 0 and len(list(out.iterdir())) == 2


@pytest.mark.parametrize(("args", "exit_code", "message"), [
    (["--answer-date-cutoff", "2020/01/01"], 2, "invalid setting data.answer_date_cutoff"),
    (["--question-date-from", "yesterday"], 2, "invalid setting dataprep.question_date_from"),
    (["--limit", "lots"], 2, "invalid setting data.limit"),
    (["--tag-pattern", "^nothing-matches$"], 3, "zero examples: the query returned 0 row(s)"),
])
def test_bad_input_fails_cleanly(args: list[str], exit_code: int, message: str, tracking_uri: str,
                                 tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code, _, err = _cli(["data", "prepare", "--output-dir", str(out), *args], capsys)
    assert code == exit_code and message in err
    assert not out.exists() or not any(out.iterdir())
    assert all(r.info.status == "FAILED" for r in _runs())
    assert all("llmops.train_uri" not in r.data.tags for r in _runs())


def test_unwritable_output_directory_fails_before_any_work(tracking_uri: str, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    code, _, err = _cli(["data", "prepare", "--output-dir", str(blocker / "out")], capsys)
    assert code == 3 and "output directory" in err and "is not writable" in err
    assert [r.info.status for r in _runs()] == ["FAILED"]


def test_missing_bigquery_credentials(tracking_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LLMOPS_WAREHOUSE__ENGINE", "bigquery")
    monkeypatch.setenv("LLMOPS_WAREHOUSE__PROJECT", "some-project")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    monkeypatch.setenv("NO_GCE_CHECK", "True")
    code, _, err = _cli(["data", "prepare", "--output-dir", str(tmp_path / "out")], capsys)
    assert code == 2 and "no Google Cloud credentials" in err
    assert not (tmp_path / "out").exists() and _runs() == []


def test_bigquery_over_the_cap_and_a_failed_write_leave_nothing(tracking_uri: str, tmp_path: Path,
                                                                sample_table_map, fake_client_class,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the step function with the fake BigQuery client: refused queries and write errors fail the run."""
    from llmops.settings import load_settings
    from llmops.tracking import configure_mlflow
    from projects.data import prepare as step
    from projects.data.warehouse import BigQueryWarehouse
    from prompts.registry import sync_prompt
    from prompts.template import load_template

    out = tmp_path / "out"
    settings = load_settings({"data": {"output_dir": str(out)}, "mlflow": {"tracking_uri": tracking_uri}})
    configure_mlflow(settings)
    over = BigQueryWarehouse(fake_client_class(sample_table_map, bytes_scanned=10**13), maximum_bytes_billed=10**9)
    with pytest.raises(DataError, match="over the cap"), mlflow.start_run():
        prompt, _ = sync_prompt(load_template(settings.prompt.name, settings.prompt.templates_dir))
        step.run_data_step(settings, over, prompt)

    def broken(con, table, split, directory, parquet):
        (directory / f"{split}.jsonl").write_text("partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(step, "write_split", broken)
    fine = BigQueryWarehouse(fake_client_class(sample_table_map), maximum_bytes_billed=10**9)
    with pytest.raises(DataError, match="No space left on device"), mlflow.start_run():
        step.run_data_step(settings, fine, prompt)
    assert not any(p for p in out.iterdir() if not p.name.startswith(".write-test"))
    assert [r.info.status for r in _runs()] == ["FAILED", "FAILED"]


@pytest.mark.parametrize("clean_in", ["threads", "processes"])
def test_parquet_outputs_when_large_enough(clean_in: str, tracking_uri: str, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LLMOPS_DATAPREP__PARQUET_MIN_ROWS", "10")
    monkeypatch.setenv("LLMOPS_DATAPREP__BATCH_ROWS", "30")  # several batches: the worker pool path
    monkeypatch.setenv("LLMOPS_DATAPREP__WORKERS", "2")
    monkeypatch.setenv("LLMOPS_DATAPREP__CLEAN_IN", clean_in)
    code, _, _ = _cli(["data", "prepare", "--output-dir", str(tmp_path / "out")], capsys)
    assert code == 0
    (version,) = (tmp_path / "out").iterdir()
    for split in ("train", "eval"):
        table = pq.read_table(version / f"{split}.parquet")
        lines = (version / f"{split}.jsonl").read_text().splitlines()
        assert table.num_rows == len(lines) > 0
        assert sorted(table.column("id").to_pylist()) == sorted(json.loads(line)["id"] for line in lines)
    rows = {s: [json.loads(line) for line in (version / f"{s}.jsonl").read_text().splitlines()] for s in ("train", "eval")}
    assert dataset_digest({s: split_digest(r) for s, r in rows.items()}) == \
        _runs()[0].data.tags["llmops.dataset_digest"]


def _prepare_shared(folder: Path, tag_pattern: str, cutoff: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                    capsys: pytest.CaptureFixture[str]):
    """`llmops data prepare` on a folder of shared BigQuery-shaped tables; returns its (only) run."""
    _tables(monkeypatch, folder / "posts_questions.parquet", folder / "posts_answers.parquet")
    code, _, err = _cli(["data", "prepare", "--tag-pattern", tag_pattern, "--answer-date-cutoff", cutoff,
                         "--output-dir", str(tmp_path / "out")], capsys)
    assert code == 0, err
    (run,) = _runs()
    return run


def test_shared_stackexchange_data(tracking_uri: str, shared_data: Path, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Real, messy multi-site data: NULL dates and tags, Markdown and HTML bodies, ids unique per site only."""
    run = _prepare_shared(shared_data / "stackexchange", ".*", "1970-01-01", tmp_path, monkeypatch, capsys)
    rows = read_examples(run.data.tags["llmops.train_uri"]) + read_examples(run.data.tags["llmops.eval_uri"])
    sites = {r["site"] for r in rows}
    assert len(sites) >= 4 and len({r["id"] for r in rows}) == len(rows)
    assert all(r["id"] == (str(r["question_id"]) if r["site"] == "stackoverflow.com"
                           else f"{r['site']}/{r['question_id']}") for r in rows)
    assert all(r["link"] == f"https://{r['site']}/q/{r['question_id']}" for r in rows)
    (version,) = (tmp_path / "out").iterdir()
    report = json.loads((version / "validation_report.json").read_text())
    funnel = report["funnel"]
    # accepted ids whose answer is missing, and NULL answer dates, are counted, not crashed on
    assert funnel["with_accepted_answer_id"] > funnel["accepted_answer_present"]
    assert funnel["answer_date_null"] > 0
    assert report["rows"]["from_query"] == funnel["answer_date_match"]
    assert report["rows"]["after_dedup"] == len(rows)
    assert "<p>" not in "".join(r["answer"] for r in rows[:200])


def test_shared_stackoverflow_data(tracking_uri: str, shared_data: Path, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    run = _prepare_shared(shared_data / "stackoverflow", "neo4j|cypher", "2010-01-01", tmp_path, monkeypatch, capsys)
    rows = read_examples(run.data.tags["llmops.train_uri"])
    assert rows and all("neo4j" in r["tags"] or "cypher" in r["tags"] for r in rows)
    assert run.data.metrics["n_rows_from_query"] >= run.data.metrics["n_examples"]
