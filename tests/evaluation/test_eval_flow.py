"""Evaluation end to end on one real SQLite store: run, compare, gate, review, and the bad inputs at the CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from tests.support.judge_server import JudgeServer
from tests.support.synth import qa_rows

N_EVAL = 16


def cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """`llmops ...` in-process, through the real boundary (errors -> one line + exit code)."""
    from llmops.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    out = capsys.readouterr()
    return int(exit_info.value.code or 0), out.out, out.err


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Store, prompt, two retrievers (one abstains more), eval/train files, and three evaluation runs."""
    from backends.retrieval import RetrievalAnswerer
    from evaluation.dataset import load_eval_dataset
    from evaluation.run import evaluate_target, spec_target
    from llmops.provider_spec import ProviderSpec
    from llmops.settings import load_settings
    from llmops.tracking import configure_mlflow
    from projects.tuning.run import run_tuning
    from prompts.registry import load_pinned

    root = tmp_path_factory.mktemp("eval-world")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    settings = load_settings({"mlflow": {"tracking_uri": uri},
                              "evaluation": {"judge": {"cache_dir": str(root / "cache")}}})
    configure_mlflow(settings)
    mlflow.set_registry_uri(uri)
    mlflow.genai.register_prompt("qa-eval", "Answer this question: {{question}}", tags={
        "llmops.instruction_hash": "qa-eval-instruction"})
    prompt = load_pinned("prompts:/qa-eval/1")

    def rendered(rows):
        return [{**r, "input_text": prompt.format(question=r["question"]), "output_text": r["answer"],
                 "prompt_name": prompt.name, "prompt_version": prompt.version,
                 "instruction_hash": prompt.instruction_hash} for r in rows]

    train = rendered(qa_rows(30, seed=1, start_id=1))
    eval_rows = rendered(qa_rows(N_EVAL, seed=2, start_id=5000))
    files = {"train": write_jsonl(root / "train.jsonl", train), "eval": write_jsonl(root / "eval.jsonl", eval_rows),
             "no_ref": write_jsonl(root / "no_ref.jsonl", [{**r, "answer": ""} for r in eval_rows[:3]])}
    good = RetrievalAnswerer.fit(train)
    good.save(root / "retr_good")
    strict = RetrievalAnswerer.fit(train)
    strict.threshold = 0.99
    strict.save(root / "retr_strict")
    runs = {}
    dataset = load_eval_dataset(str(files["eval"]))
    for name, retriever in [("a", "retr_good"), ("a2", "retr_good"), ("strict", "retr_strict")]:
        spec = ProviderSpec(kind="retrieval", artifacts={"retriever": str(root / retriever)})
        with mlflow.start_run(run_name=name) as run:
            evaluate_target(spec_target(spec, prompt, settings, train_uri=str(files["train"])), dataset,
                            settings=settings)
        runs[name] = run.info.run_id
    tuned = run_tuning(settings, str(files["train"]), str(files["eval"]))
    yield {"root": root, "uri": uri, "files": files, "runs": runs, "settings": settings,
           "tune_run_id": tuned["run_id"]}
    while mlflow.active_run():
        mlflow.end_run()


@pytest.fixture(autouse=True)
def _use_world_store(world) -> None:
    """CLI calls re-point MLflow's globals; every test starts on the module's store and experiment."""
    mlflow.set_tracking_uri(world["uri"])
    mlflow.set_registry_uri(world["uri"])
    mlflow.set_experiment("llmops")


def test_run_logs_metrics_params_rows_and_plots(world) -> None:
    from evaluation.compare import load_rows

    run = MlflowClient().get_run(world["runs"]["a"])
    for metric in ("answered_token_f1", "answered_rouge_l", "coverage", "cited/mean", "token_f1/mean",
                   "rouge_l/mean", "exact_match/mean", "abstained/mean", "bleu/mean", "citation_valid/mean",
                   "token_f1/ci_low", "token_f1/ci_high", "latency_ms/mean", "cost_per_1k_queries/mean"):
        assert metric in run.data.metrics, metric
    m = run.data.metrics
    assert m["token_f1/ci_low"] <= m["token_f1/mean"] <= m["token_f1/ci_high"]
    assert m["n_rows"] == N_EVAL and m["citation_valid/mean"] == 1.0
    params = run.data.params
    assert params["prompt_name"] == "qa-eval" and params["prompt_version"] == "1"
    assert len(params["eval_digest"]) == 16 and params["judge_model"] == "none"
    # the rows' lineage: the eval file as a run input with the same digest
    # (MLflow's evaluate logs the in-memory rows as "dataset" too; ours names the file and its digest)
    (dataset_input,) = [d for d in run.inputs.dataset_inputs if d.dataset.name == "eval"]
    assert (dataset_input.dataset.name, dataset_input.dataset.digest) == ("eval", params["eval_digest"])
    assert [t.value for t in dataset_input.tags if t.key == "mlflow.data.context"] == ["evaluation"]
    # and as an MLflow evaluation dataset (the UI's Datasets page), made once for these rows and reused
    import mlflow.genai.datasets

    managed = f"so-qa-eval@{params['eval_digest']}"
    assert {d.dataset.name for d in run.inputs.dataset_inputs} == {"eval", managed}
    (registered,) = mlflow.genai.datasets.search_datasets(filter_string=f"name = '{managed}'")
    assert registered.tags["llmops.eval_digest"] == params["eval_digest"] and len(registered.to_df()) == N_EVAL
    a2 = MlflowClient().get_run(world["runs"]["a2"])
    assert managed in {d.dataset.name for d in a2.inputs.dataset_inputs}
    # the headline set is logged first, under Headline/ and under its usual names
    first = list(m)[:5]
    assert first == ["Headline/answered_token_f1", "Headline/coverage", "Headline/utility",
                     "Headline/vs/random_answer/answered_token_f1/ci_low", "Headline/token_f1/mean"], first
    assert m["Headline/coverage"] == m["coverage"] and m["Headline/utility"] == m["utility"]
    assert all(v not in ("", "None") for v in params.values()), "empty parameters are not logged"
    artifacts = {a.path for a in MlflowClient().list_artifacts(run.info.run_id, "plots")}
    assert artifacts == {"plots/quality.png", "plots/operations.png"}
    rows = load_rows(run.info.run_id)
    assert len(rows) == N_EVAL and set(rows["row_id"]) == {str(5000 + i) for i in range(N_EVAL)}
    # the per-row table agrees with the answered metrics recomputed from it
    assert rows["token_f1"].mean() == pytest.approx(m["token_f1/mean"])
    strict = MlflowClient().get_run(world["runs"]["strict"]).data.metrics
    assert strict["coverage"] < m["coverage"]


def test_every_row_is_a_trace_with_its_scores_reference_and_row_id(world) -> None:
    """Rows are scored inside their traces: each trace linked to the run holds one assessment per scorer (values
    equal to the rows table), the reference as an expectation and the row id tag - written with the trace."""
    from evaluation.compare import load_rows

    run_id = world["runs"]["a"]
    rows = load_rows(run_id).set_index("trace_id")
    scorers = MlflowClient().get_run(run_id).data.params["scorers"].split(",")
    traces = mlflow.search_traces(run_id=run_id, return_type="list", flush=True)
    assert len(traces) == N_EVAL and set(rows.index) == {t.info.trace_id for t in traces}
    for trace in traces:
        row = rows.loc[trace.info.trace_id]
        assert trace.info.tags["llmops.row_id"] == row["row_id"]
        feedback = {a.name: a for a in trace.info.assessments if a.feedback is not None}
        expected = {name for name in scorers if not np.isnan(row[name])}
        assert set(feedback) == expected and "token_f1" in expected
        for name in expected:
            assert feedback[name].value == pytest.approx(row[name]), name
            assert feedback[name].rationale and feedback[name].source.source_type == "CODE"
            assert feedback[name].metadata["mlflow.assessment.sourceRunId"] == run_id
        (reference,) = [a for a in trace.info.assessments if a.expectation is not None]
        assert (reference.name, reference.value) == ("expected_response", row["reference"])
        assert trace.data.spans[0].name == "qa_chain" and len(trace.data.spans) > 2  # the chain's stage spans


def test_failed_predictions_are_counted_kept_and_fail_the_command(world) -> None:
    from evaluation.dataset import load_eval_dataset
    from evaluation.run import Target, evaluate_target, raise_on_errors
    from llmops.errors import BackendError

    dataset = load_eval_dataset(str(world["files"]["eval"]), limit=4)
    broken = dataset.rows[1].question

    def predict(question: str) -> dict:
        if question == broken:
            raise ConnectionError("provider down")
        return {"answer": "Use slicing.", "citations": [], "abstained": False}

    with mlflow.start_run(run_name="broken") as run:
        outcome = evaluate_target(Target(predict, {"provider_kind": "test"}, name="test"), dataset,
                                  settings=world["settings"])
    assert outcome.predict_errors == 1 and outcome.metrics["predict_errors"] == 1.0
    assert "ConnectionError: provider down" in outcome.predict_error_example
    assert outcome.rows["predict_error"].tolist() == ["", "ConnectionError: provider down", "", ""]
    assert outcome.rows.loc[1, "token_f1"] == 0.0  # scored as the empty answer it is
    states = {t.info.tags["llmops.row_id"]: t.info.state for t in
              mlflow.search_traces(run_id=run.info.run_id, return_type="list", flush=True)}
    assert states[dataset.rows[1].row_id] == "ERROR" and list(states.values()).count("OK") == 3
    with pytest.raises(BackendError, match="1 prediction"):
        raise_on_errors(outcome)


def test_questions_the_chain_refuses_are_abstentions_not_failures(world, tmp_path: Path, capsys) -> None:
    """Real data holds questions longer than the chain accepts (its input contract; the server answers them 4xx):
    such a row is the abstention a user gets, counted in predict_refused, a warning, not a failed evaluation."""
    from evaluation.dataset import load_eval_dataset
    from evaluation.run import evaluate_target, raise_on_errors, tune_run_target

    lines = world["files"]["eval"].read_text(encoding="utf-8").splitlines()[:3]
    long = json.loads(lines[0]) | {"id": "long-1", "question": "How do I parse this log? " + "x" * 9000}
    path = write_jsonl(tmp_path / "eval.jsonl", [*map(json.loads, lines), long])
    dataset = load_eval_dataset(str(path))
    with mlflow.start_run(run_name="refused"):
        outcome = evaluate_target(tune_run_target(world["tune_run_id"], world["settings"]), dataset,
                                  settings=world["settings"])
    assert outcome.predict_errors == 0 and outcome.predict_refused == 1
    assert outcome.metrics["predict_refused"] == 1.0 and outcome.metrics["predict_errors"] == 0.0
    refused = outcome.rows.set_index("row_id").loc["long-1"]
    assert refused["predict_refused"].startswith("InputError: question is") and refused["predict_error"] == ""
    assert bool(refused["response_abstained"]) and outcome.metrics["coverage"] <= 0.75
    raise_on_errors(outcome)  # no exception: a warning line
    assert "1 question(s) refused by the chain (first: row long-1" in capsys.readouterr().err


def test_identical_runs_not_distinguishable_and_logged(world, capsys) -> None:
    runs = world["runs"]
    code, out, _ = cli(["eval", "compare", runs["a"], runs["a2"], "--json", "--tracking-uri", world["uri"]], capsys)
    assert code == 0
    result = json.loads(out)
    verdicts = {m["metric"]: m["verdict"] for m in result["comparisons"][0]["metrics"]}
    quality = {k: v for k, v in verdicts.items() if k not in ("latency_ms",)}
    assert set(quality.values()) == {"not distinguishable"}, verdicts
    logged = MlflowClient().get_run(result["logged_run"])
    assert logged.data.tags["llmops.step"] == "compare"
    assert [a.path for a in MlflowClient().list_artifacts(logged.info.run_id) if a.path.endswith(".json")] == \
        ["comparison.json"]


def test_compare_detects_a_real_difference(world, capsys) -> None:
    runs = world["runs"]
    code, out, _ = cli(["eval", "compare", runs["a"], runs["strict"], "--no-log", "--tracking-uri", world["uri"]],
                       capsys)
    assert code == 0
    line = next(ln for ln in out.splitlines() if ln.startswith("abstained"))
    assert line.endswith("higher")  # the strict retriever abstains on every row
    assert next(ln for ln in out.splitlines() if ln.startswith("token_f1")).endswith("worse")


def test_compare_refuses_different_rows_and_datasets_without_artifact(world, capsys) -> None:
    from evaluation.compare import load_rows
    from evaluation.run import ROWS_ARTIFACT

    a = world["runs"]["a"]
    rows = load_rows(a)
    digest = MlflowClient().get_run(a).data.params["eval_digest"]
    made = {}
    # Runs shaped like evaluation runs (params + rows table), cheaper than evaluating again.
    for name, table, run_digest in [("eval_small", rows.iloc[:-2], digest), ("eval_changed", rows, "0" * 16)]:
        with mlflow.start_run(run_name=name) as run:
            mlflow.log_param("eval_digest", run_digest)
            mlflow.log_table(table, artifact_file=ROWS_ARTIFACT)
        made[name] = run.info.run_id
    before = len(MlflowClient().search_runs([run.info.experiment_id], "tags.`llmops.step` = 'compare'"))
    code, _, err = cli(["eval", "compare", a, made["eval_changed"], "--tracking-uri", world["uri"]], capsys)
    assert code == 3 and "different datasets" in err and "--allow-different-datasets" in err
    code, _, err = cli(["eval", "compare", a, made["eval_small"], "--allow-different-datasets",
                        "--tracking-uri", world["uri"]], capsys)
    assert code == 3 and "different rows" in err and "2 only in" in err
    code, _, err = cli(["eval", "compare", a, "0123456789abcdef0123456789abcdef", "--tracking-uri", world["uri"]],
                       capsys)
    assert code == 4 and "not found" in err
    after = len(MlflowClient().search_runs([run.info.experiment_id], "tags.`llmops.step` = 'compare'"))
    assert after == before, "a refused comparison logs nothing"
    code, out, _ = cli(["eval", "compare", a, made["eval_changed"], "--allow-different-datasets", "--no-log",
                        "--tracking-uri", world["uri"]], capsys)
    assert code == 0 and "exact_match" in out


def test_gate_command_with_champion(world, capsys, tmp_path: Path) -> None:
    runs, uri = world["runs"], world["uri"]
    code, out, _ = cli(["eval", "gate", runs["a"], "--tracking-uri", uri], capsys)
    # the shipped gates: too few eval rows to tell a model from chance is a failed gate, not a crash
    assert code == 5 and "PASS  cited/mean = 1.0000" in out
    assert f"FAIL  n_rows = {N_EVAL}.0000  (needs >= 30.0)" in out
    code, out, err = cli(["eval", "gate", runs["strict"], "--tracking-uri", uri], capsys)
    assert code == 5 and "FAIL  coverage = " in out and "(needs >= 0.1)" in out and "gate(s) failed" in err
    # champion: a registered version whose eval run is `a`; the candidate `strict` regresses against it
    client = MlflowClient()
    client.create_registered_model("gate-model")
    version = client.create_model_version("gate-model", "file:///nonexistent", tags={"llmops.eval_run_id": runs["a"]})
    client.set_registered_model_alias("gate-model", "production", version.version)
    gates = tmp_path / "gates.yaml"
    gates.write_text("targets:\n  production:\n    - {metric: coverage, min: 0.0, max_regression: 0.05}\n")
    code, out, _ = cli(["eval", "gate", runs["a2"], "--target", "production", "--against",
                        "models:/gate-model@production", "--gates-file", str(gates), "--tracking-uri", uri], capsys)
    assert code == 0 and "PASS  coverage vs champion" in out
    code, out, _ = cli(["eval", "gate", runs["strict"], "--target", "production", "--against",
                        "models:/gate-model@production", "--gates-file", str(gates), "--tracking-uri", uri], capsys)
    assert code == 5 and "FAIL  coverage vs champion = " in out
    # a typo in the champion's model or alias is an error, never a skipped comparison
    for against, message in [("models:/gate-model@nobody", "has no alias 'nobody' (its aliases: production)"),
                             ("models:/gate-modl@production", "registered model 'gate-modl' not found")]:
        code, _, err = cli(["eval", "gate", runs["strict"], "--target", "production", "--against", against,
                            "--gates-file", str(gates), "--tracking-uri", uri], capsys)
        assert code == 4 and message in err, err
    # paired gates: against the champion on the same rows, and against the baselines scored beside the model
    paired = tmp_path / "paired.yaml"
    paired.write_text("targets:\n  production:\n"
                      "    - {metric: answered_token_f1, beats: champion, margin: -0.02}\n"
                      "    - {metric: answered_token_f1, beats: random_answer, margin: 0.05}\n"
                      "    - {metric: utility, beats: always_abstain, margin: 0.0}\n")
    code, out, _ = cli(["eval", "gate", runs["a2"], "--target", "production", "--against",
                        "models:/gate-model@production", "--gates-file", str(paired), "--tracking-uri", uri], capsys)
    assert code == 0, out
    assert f"PASS  answered_token_f1 vs champion = 0.0000  (needs lower bound >= -0.020)  [model - champion = " \
           f"+0.000, CI +0.000..+0.000 over {N_EVAL} rows]" in out
    a = MlflowClient().get_run(runs["a"]).data.metrics
    assert a["vs/random_answer/answered_token_f1/ci_low"] >= 0.05, "the retriever clearly beats a random answer"
    assert a["baseline/random_answer/answered_token_f1"] < a["answered_token_f1"] - 0.05
    assert "PASS  answered_token_f1 vs random_answer" in out and "PASS  utility vs always_abstain" in out
    code, out, _ = cli(["eval", "gate", runs["a2"], "--target", "production", "--gates-file", str(paired),
                        "--tracking-uri", uri], capsys)
    assert code == 0 and "[not checked: no champion given (--against models:/NAME@ALIAS)]" in out
    for text, message in [("targets:\n  staging:\n    - {metric: coverage, beats: randm_answer, margin: 0}\n",
                           "unknown baseline 'randm_answer'"),
                          ("targets:\n  staging: []\n", "targets.staging has no gates"),
                          ("targets: {}\n", "targets is empty"),
                          ("targets:\n  staging:\n    - {metric: coverage, min: -.inf}\n", "finite number"),
                          ("targets:\n  staging:\n    - {metric: coverage, min: .nan}\n", "finite number")]:
        broken = tmp_path / "broken.yaml"
        broken.write_text(text)
        code, _, err = cli(["eval", "gate", runs["a"], "--gates-file", str(broken), "--tracking-uri", uri], capsys)
        assert code == 2 and message in err, (text, err)
    dry = tmp_path / "dry.yaml"
    dry.write_text(gates.read_text().replace("targets:", "mode: dry-run\ntargets:"))
    code, out, _ = cli(["eval", "gate", runs["strict"], "--target", "production", "--gates-file", str(dry),
                        "--against", "models:/gate-model@production", "--tracking-uri", uri], capsys)
    assert code == 0 and "dry-run" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text("targets:\n  staging:\n    - {metric: nonsense, min: 1}\n")
    code, _, err = cli(["eval", "gate", runs["a"], "--gates-file", str(bad), "--tracking-uri", uri], capsys)
    assert code == 2 and "unknown metric 'nonsense'" in err
    code, _, err = cli(["eval", "gate", "nope", "--tracking-uri", uri], capsys)
    assert code == 4 and "not found" in err


def test_human_review_roundtrip(world, capsys, tmp_path: Path) -> None:
    run_id, uri = world["runs"]["a"], world["uri"]
    out_file = tmp_path / "review.csv"
    code, out, _ = cli(["eval", "review", "export", run_id, "--out", str(out_file), "--n", "6",
                        "--tracking-uri", uri], capsys)
    assert code == 0 and "wrote 6 row(s)" in out
    rows = list(csv.DictReader(out_file.open()))
    assert len(rows) == 6 and all(r["rating"] == "" for r in rows)
    bad = tmp_path / "bad.csv"
    with bad.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows([{**rows[0], "rating": "9"}])
    code, _, err = cli(["eval", "review", "import", run_id, str(bad), "--reviewer", "ann", "--tracking-uri", uri],
                       capsys)
    assert code == 3 and "outside the scale" in err
    for i, row in enumerate(rows[:5]):  # one row left unrated
        row["rating"] = str(1 + i % 5)
        row["comment"] = f"note {i}"
    with out_file.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    code, out, _ = cli(["eval", "review", "import", run_id, str(out_file), "--reviewer", "ann",
                        "--tracking-uri", uri], capsys)
    assert code == 0 and "logged 5 human rating(s); skipped 1" in out and "token_f1" in out
    trace = mlflow.get_trace(rows[0]["trace_id"])
    human = [a for a in trace.info.assessments if a.name == "human_rating"]
    assert len(human) == 1 and human[0].source.source_type == "HUMAN" and human[0].source.source_id == "ann"
    assert human[0].value == float(rows[0]["rating"])


def test_cli_run_with_judges_cache_and_bad_inputs(world, capsys) -> None:
    files, uri, root = world["files"], world["uri"], world["root"]
    server = JudgeServer().start()
    try:
        base = ["eval", "run", "--eval-uri", str(files["eval"]), "--tune-run-id", world["tune_run_id"], "--limit", "6",
                "--judge-provider", "openai", "--judge-model", "stub-judge", "--judge-base-url", server.base_url,
                "--tracking-uri", uri]
        env = {"LLMOPS_EVALUATION__JUDGE__CACHE_DIR": str(root / "judge-cache"),
               "LLMOPS_EVALUATION__JUDGE__JUDGES": '["correctness", "relevance"]'}
        with pytest.MonkeyPatch.context() as mp:
            for key, value in env.items():
                mp.setenv(key, value)
            code, out, err = cli(base, capsys)
            assert code == 0, err
            assert len(server.requests) == 12 and "correctness/mean" in out
            first = [ln for ln in out.splitlines() if ln.startswith(("correctness/mean", "relevance/mean"))]
            code, out, _ = cli(base, capsys)
            assert code == 0 and len(server.requests) == 12, "the rerun is served from the cache"
            assert "judge calls: 0 (cache hits 12)" in out
            assert [ln for ln in out.splitlines() if ln.startswith(("correctness/mean", "relevance/mean"))] == first
            server.mode = "garbage"
            mp.setenv("LLMOPS_EVALUATION__JUDGE__CACHE_DIR", str(root / "fresh-cache"))
            code, _, err = cli(base[:-2] + ["--limit", "2", "--tracking-uri", uri], capsys)
            assert code == 6 and "unparseable" in err and "judge call(s)" in err
    finally:
        server.stop()
    code, _, err = cli(["eval", "run", "--eval-uri", str(files["no_ref"]), "--tune-run-id", world["tune_run_id"],
                        "--tracking-uri", uri], capsys)
    assert code == 3 and "no reference answer" in err
    for args, message in [(["--eval-uri", str(files["eval"])], "exactly one of --tune-run-id or --model-uri"),
                          (["--eval-uri", str(files["eval"]), "--tune-run-id", world["runs"]["a"]],
                           "records no provider spec"),
                          (["--eval-uri", str(files["eval"]), "--tune-run-id", world["tune_run_id"],
                            "--train-uri", str(files["train"])], "--train-uri applies to --model-uri")]:
        code, _, err = cli(["eval", "run", *args, "--tracking-uri", uri], capsys)
        assert code == 2 and message in err, err


def test_cli_run_on_a_registered_model_uri(world, capsys) -> None:
    import mlflow.pyfunc

    class Echo(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return [{"answer": "I do not know.", "citations": [], "abstained": False} for _ in model_input]

    with mlflow.start_run(run_name="log-echo"):
        mlflow.pyfunc.log_model(name="model", python_model=Echo(), pip_requirements=[],
                                registered_model_name="echo-model")
    code, out, err = cli(["eval", "run", "--eval-uri", str(world["files"]["eval"]), "--model-uri",
                          "models:/echo-model/1", "--limit", "4", "--tracking-uri", world["uri"]], capsys)
    assert code == 0, err
    run_id = out.strip().splitlines()[-1].split()[-1]
    run = MlflowClient().get_run(run_id)
    assert run.data.params["model_name"] == "echo-model" and run.data.params["model_version"] == "1"
    assert run.data.metrics["cited/mean"] == 0.0 and run.data.metrics["exact_match/mean"] == 0.0


def test_cli_json_results_names_and_progress(world, capsys, monkeypatch, tmp_path: Path) -> None:
    """`eval run --json` is one document naming the run as it is named in MLflow; gate/compare/review speak JSON;
    the progress bar (as on a terminal) is told every row and never writes to stdout."""
    import llmops.cli_support as cli_support

    told: list[tuple[str, object]] = []

    class Recorder(cli_support.RowProgress):
        def start(self, total):
            told.append(("start", total))

        def advance(self, rows):
            told.append(("advance", rows))

    monkeypatch.setattr(cli_support, "RowProgress", Recorder)
    monkeypatch.setattr(cli_support, "progress_enabled", lambda quiet: not quiet)  # as on a terminal
    uri = world["uri"]
    code, out, err = cli(["eval", "run", "--eval-uri", str(world["files"]["eval"]), "--tune-run-id",
                          world["tune_run_id"], "--limit", "5", "--json", "--tracking-uri", uri], capsys)
    assert code == 0, err
    assert told[0] == ("start", 5) and sum(n for kind, n in told if kind == "advance") == 5
    result = json.loads(out)
    run = MlflowClient().get_run(result["run_id"])
    assert result["run_name"] == run.info.run_name == "eval qa-eval@v1 retrieval-tfidf"
    assert result["rows"] == 5 and result["headline"]["coverage"] == run.data.metrics["coverage"]
    assert set(result["leads"]) == {"vs/random_answer/answered_token_f1", "vs/always_abstain/utility"}
    code, out, _ = cli(["eval", "gate", result["run_id"], "--json", "--tracking-uri", uri], capsys)
    gate = json.loads(out)
    assert code == 5 and gate["passed"] is False and gate["failed"] >= 1  # 5 rows: the n_rows floor fails
    assert {"metric": "n_rows", "value": 5.0}.items() <= next(r for r in gate["results"]
                                                               if r["metric"] == "n_rows").items()
    code, out, _ = cli(["eval", "compare", world["runs"]["a"], world["runs"]["a2"], "--json",
                        "--tracking-uri", uri], capsys)
    logged = MlflowClient().get_run(json.loads(out)["logged_run"])
    assert logged.info.run_name == "compare a vs a2"
    assert {d.dataset.name for d in logged.inputs.dataset_inputs} >= {"eval"}  # the rows it compared
    code, out, _ = cli(["eval", "review", "export", world["runs"]["a"], "--out", str(tmp_path / "r.jsonl"),
                        "--n", "3", "--json", "--tracking-uri", uri], capsys)
    assert code == 0 and json.loads(out)["rows"] == 3
