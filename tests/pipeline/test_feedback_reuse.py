"""The pipeline and issue 14's feedback: `include_feedback` (declared once, on MLproject's prepare_data) reaches the
data step through the definition, and the data step's reuse key follows the feedback store when feedback is folded
in - new feedback re-prepares the data, no new feedback (or feedback not included) reuses the version.

The data step runs for real (`mlflow.projects.run` of the entry point through the MLflow runner's `Driver`, real
SQLite store, real DuckDB over data/sample, the feedback store written by the core record writer); the KFP key task
computes its key with the same code, so the compiled pipeline reuses and reruns exactly as the MLflow runner does.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime

import pytest

MODEL = "so-qa-assistant"
QUESTIONS = ("How do I flatten a list of lists into one flat list in Python?",
             "How can I pretty print a nested dictionary with indentation?")
CORRECTIONS = ("Use `[x for row in rows for x in row]` or `itertools.chain.from_iterable(rows)`.",
               "Use `json.dumps(d, indent=2)` or `pprint.pprint(d)`.")

pytestmark = pytest.mark.timeout(900)


def _correction(i: int, model: str = MODEL) -> dict:
    """One feedback record as the capture service writes it: a thumbs-down with a correction."""
    from llmops.records import FEEDBACK_SCHEMA_VERSION

    return {"schema_version": FEEDBACK_SCHEMA_VERSION, "feedback_id": f"fb-{model}-{i}", "request_id": f"req-{i}",
            "time": datetime(2026, 11, 30, 8, i, tzinfo=UTC), "rating": 0.0, "rating_kind": "thumbs",
            "corrected_answer": CORRECTIONS[i], "comment": None, "user": "reviewer", "source": "review",
            "model_name": model, "model_version": "1", "prompt_name": "so-qa", "prompt_version": 1,
            "instruction_hash": "x", "dataset_digest": "d", "question": QUESTIONS[i], "answer": "Use sorted()."}


@pytest.fixture(scope="module")
def rounds(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Data-step rounds through the MLflow runner's driver, in one store, with feedback arriving in between."""
    from tests.conftest import _reset_mlflow_globals
    from llmops.records import write_feedback_records
    from llmops.settings import load_settings
    from llmops.tracking import configure_mlflow
    from projects.pipeline import Driver, export_settings
    from projects.pipeline_definition import check_parameters, key_of, step_named, step_values
    from projects.pipeline_kfp import key_task

    work = tmp_path_factory.mktemp("feedback-reuse")
    store = work / "feedback"
    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    for key in list(os.environ):
        if key.startswith(("LLMOPS_", "MLFLOW_")):
            del os.environ[key]
    os.environ.update(MLFLOW_TRACKING_URI=f"sqlite:///{work / 'mlflow.db'}", MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false",
                      LLMOPS_DATA__OUTPUT_DIR=str(work / "data"), LLMOPS_FEEDBACK__STORE_URI=str(store))
    os.chdir(work)
    log: list[str] = []
    try:
        settings = load_settings()
        experiment_id = configure_mlflow(settings)
        export_settings(settings)
        driver = Driver(settings, experiment_id, log.append)
        step = step_named("prepare_data")

        def data(**explicit: str):
            run, out, params = driver.run_defined(step, check_parameters(explicit), {})
            return {"run": run, "key": out["step_key"], "params": params, "dataset": out["dataset_digest"]}

        out: dict = {"store": store, "log": log}
        out["plain"] = data()                                   # feedback.include_in_dataset is false
        write_feedback_records(str(store), [_correction(0)])
        out["first"] = data(include_feedback="true")            # folds one record in
        out["same"] = data(include_feedback="true")             # nothing new: reused
        out["plain_again"] = data(include_feedback="false")     # feedback not included: the store does not count
        write_feedback_records(str(store), [_correction(0, model="another-model")])
        out["other_model"] = data(include_feedback="true")      # a record about another model: folded set unchanged
        write_feedback_records(str(store), [_correction(1)])
        out["second"] = data(include_feedback="true")           # new feedback: re-prepared
        values = {p: "" for p in step_values(step, settings, {}, {})} | {"include_feedback": "true"}
        out["kfp_key"] = key_task("prepare_data", values, "")   # what the compiled pipeline's key task computes
        out["key_false"] = key_of(step, step_values(step, settings, {"include_feedback": "false"}, {}),
                                  driver.key_settings, driver.code)
        return out
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        _reset_mlflow_globals()


def _reused(rounds: dict, name: str, of: str) -> bool:
    return rounds[name]["run"].info.run_id == rounds[of]["run"].info.run_id


def test_include_feedback_reaches_the_data_step_and_folds_the_store(rounds) -> None:
    plain, first, second = rounds["plain"]["run"], rounds["first"]["run"], rounds["second"]["run"]
    assert plain.data.params["include_feedback"] == "false" and "feedback_count" not in plain.data.params
    assert first.data.params["include_feedback"] == "true" and first.data.params["model_name"] == MODEL
    assert first.data.params["feedback_count"] == "1" and second.data.params["feedback_count"] == "2"
    assert first.data.tags["llmops.previous_dataset_digest"] == rounds["plain"]["dataset"]
    assert len({rounds[n]["dataset"] for n in ("plain", "first", "second")}) == 3


def test_no_new_feedback_reuses_the_data_step(rounds) -> None:
    assert _reused(rounds, "same", "first") and rounds["same"]["key"] == rounds["first"]["key"]
    assert f"[prepare_data] reusing run {rounds['first']['run'].info.run_id} (inputs unchanged)" in rounds["log"]


def test_new_feedback_reruns_the_data_step(rounds) -> None:
    assert not _reused(rounds, "second", "first") and rounds["second"]["key"] != rounds["first"]["key"]
    assert rounds["second"]["dataset"] != rounds["first"]["dataset"]


def test_feedback_not_included_ignores_the_store(rounds) -> None:
    assert _reused(rounds, "plain_again", "plain")  # the store changed in between, the key did not
    assert rounds["key_false"] == rounds["plain"]["key"]  # nor after more feedback arrived


def test_a_new_part_reruns_the_key_even_when_the_folded_set_is_the_same(rounds) -> None:
    """The key hashes the store's parts, not its content: a record about another model reruns the data step,
    which then finds the same dataset digest and hands on the earlier version's files (cheap, never stale)."""
    other, first = rounds["other_model"], rounds["first"]
    assert other["key"] != first["key"] and other["dataset"] == first["dataset"]
    assert other["run"].data.tags.get("llmops.reused_from") == first["run"].info.run_id


def test_the_kfp_key_task_computes_the_same_key(rounds) -> None:
    assert rounds["kfp_key"] == rounds["second"]["key"]


def test_a_bad_include_feedback_value_is_refused_before_anything_runs() -> None:
    from llmops.settings import load_settings
    from projects.pipeline_definition import DefinitionError, check_parameters, key_of, step_named

    assert check_parameters({"include_feedback": "True"}) == {"include_feedback": "True"}
    with pytest.raises(DefinitionError, match="include_feedback='maybe': expected true or false"):
        check_parameters({"include_feedback": "maybe"})  # `pipeline run` and `submit` check first
    with pytest.raises(DefinitionError, match="include_feedback='maybe': expected true or false"):
        key_of(step_named("prepare_data"), {"include_feedback": "maybe"}, load_settings(), "c")  # and a KFP task
