"""`llmops feedback report`: metrics per model version from the store and the log (rating mean with a bootstrap CI,
shares, agreement with automatic scores), one MLflow run per version linked to its logged model, and the
monitoring trigger on a version's count of low ratings."""

from __future__ import annotations

import json
import sys
from datetime import timedelta
from pathlib import Path

import mlflow
import numpy as np
import pytest

from feedback.capture import FeedbackInput, FeedbackService
from feedback.report import logged_model_id
from llmops.settings import load_settings
from tests.feedback.helpers import T0, cli, served, write_log


def _register_version() -> str:
    """A real registered version (a trivial pyfunc) so the report can link its metrics to the logged model."""

    class Echo(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input: list[str]) -> list[str]:  # pragma: no cover - never called
            return model_input

    mlflow.set_experiment("llmops")
    with mlflow.start_run(run_name="register"):
        info = mlflow.pyfunc.log_model(name="model", python_model=Echo(), registered_model_name="so-qa-assistant")
    return str(info.registered_model_version)


@pytest.fixture
def traffic(tmp_path: Path, tracking_uri: str) -> dict:
    version = _register_version()
    assert version == "1"
    rng = np.random.default_rng(0)
    similarities = rng.uniform(0.1, 0.95, 30)
    records = [served(f"Question number {i} about lists?", f"Answer {i}.", similarity=float(s))
               for i, s in enumerate(similarities)]
    records += [served(f"Question {i} for version two?", f"Answer {i}.", version="2") for i in range(10)]
    records += [served(f"Unrated {i}?", "y") for i in range(20)]
    write_log(tmp_path / "log", records)
    service = FeedbackService(load_settings({"feedback": {"log_uri": str(tmp_path / "log")}}))
    ratings = []
    for i, (record, similarity) in enumerate(zip(records[:30], similarities, strict=True)):
        rating = int(similarity > 0.5)  # people like the confident answers: agreement is positive
        ratings.append(rating)
        correction = f"A corrected answer {i}." if rating == 0 and i % 2 else None
        service.take([FeedbackInput(request_id=record["request_id"], rating=rating, corrected_answer=correction)],
                     source="server", users=[f"user{i}"], now=T0 + timedelta(seconds=i))
    for i, record in enumerate(records[30:40]):
        service.take([FeedbackInput(request_id=record["request_id"], rating=1)], source="server", users=["u"],
                     now=T0 + timedelta(seconds=100 + i))
    # the same user changing their mind counts once, as its newest rating
    service.take([FeedbackInput(request_id=records[30]["request_id"], rating=0)], source="server", users=["u"],
                 now=T0 + timedelta(seconds=500))
    return {"log": str(tmp_path / "log"), "ratings": ratings, "similarities": similarities}


def test_metrics_per_version_logged_to_mlflow(traffic: dict, capsys) -> None:
    code, out, err = cli(["feedback", "report", "--log", traffic["log"], "--json"], capsys)
    assert code == 0, err
    result = json.loads(out)
    v1, v2 = result["versions"]
    assert (v1["model_version"], v2["model_version"]) == ("1", "2")
    m1, m2 = v1["metrics"], v2["metrics"]
    ratings = traffic["ratings"]
    p = float(np.mean(ratings))
    normal_width = 2 * 1.96 * np.sqrt(p * (1 - p) / 30)  # a 95% bootstrap CI of a share is close to this
    assert m1["feedback/n"] == 30 and m1["requests/n"] == 50 and m1["feedback/rate"] == pytest.approx(30 / 50)
    assert m1["rating/mean"] == pytest.approx(np.mean(ratings))
    assert m1["rating/ci_high"] - m1["rating/ci_low"] == pytest.approx(normal_width, rel=0.3)
    assert m1["rating/ci_low"] < m1["rating/mean"] < m1["rating/ci_high"]
    corrected = sum(1 for i, r in enumerate(ratings) if r == 0 and i % 2)
    assert m1["share/corrected"] == pytest.approx(corrected / 30)
    assert m1["share/low"] == pytest.approx(1 - np.mean(ratings))
    assert m1["agreement/retrieval_similarity/spearman"] > 0.7 and m1["agreement/retrieval_similarity/n"] == 30
    assert m2["feedback/n"] == 10 and m2["rating/mean"] == pytest.approx(0.9)  # one rating changed to down
    runs = {r.data.tags["llmops.model_version"]: r for r in mlflow.search_runs(
        search_all_experiments=True, output_format="list", filter_string="tags.`llmops.step` = 'feedback_report'")}
    assert set(runs) == {"1", "2"}
    assert runs["1"].data.metrics["rating/mean"] == pytest.approx(m1["rating/mean"])
    assert runs["1"].data.tags["llmops.feedback_digest"] == v1["feedback_digest"]
    assert runs["1"].info.run_name == "feedback so-qa-assistant v1"
    (read,) = mlflow.get_run(runs["1"].info.run_id).inputs.dataset_inputs  # the records it read, in the UI
    assert (read.dataset.name, read.dataset.digest) == ("feedback", v1["feedback_digest"])
    assert {t.key: t.value for t in read.tags}["mlflow.data.context"] == "feedback"
    # v1 is registered: its metrics also sit on the version's logged model; v2 is not, and the report says so
    model_id = logged_model_id(mlflow.tracking.MlflowClient().get_model_version("so-qa-assistant", "1"))
    logged = {m.key: m.value for m in mlflow.get_logged_model(model_id).metrics}
    assert logged["rating/mean"] == pytest.approx(m1["rating/mean"])
    assert any("not in this registry" in note for note in v2["notes"])


def test_no_log_prints_without_a_run(traffic: dict, capsys) -> None:
    code, out, err = cli(["feedback", "report", "--log", traffic["log"], "--no-log"], capsys)
    assert code == 0, err
    assert "so-qa-assistant v1: 30 feedback on 50 request(s)" in out and "agreement: retrieval_similarity" in out
    assert mlflow.search_runs(search_all_experiments=True, output_format="list",
                              filter_string="tags.`llmops.step` = 'feedback_report'") == []


def test_the_trigger_runs_on_a_versions_low_ratings(traffic: dict, tmp_path: Path, capsys,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    script = tmp_path / "retune.py"
    script.write_text("import json, sys\nopen(sys.argv[1], 'a').write(json.dumps(json.load(sys.stdin)) + '\\n')\n")
    calls = tmp_path / "calls.jsonl"
    rules = tmp_path / "rules.yaml"
    rules.write_text(f"trigger:\n  command: [{json.dumps(sys.executable)}, {json.dumps(str(script))}, "
                     f"{json.dumps(str(calls))}]\n  when: [feedback]\n  min_feedback: 5\n")
    monkeypatch.setenv("LLMOPS_MONITORING__RULES_FILE", str(rules))
    monkeypatch.setenv("LLMOPS_MONITORING__TRIGGER_DIR", str(tmp_path / "triggers"))
    code, out, err = cli(["feedback", "report", "--log", traffic["log"], "--no-log", "--trigger"], capsys)
    assert code == 0, err
    assert "trigger: ran" in out and "v2: 1 low rating(s), below trigger.min_feedback (5)" in out
    (call,) = [json.loads(line) for line in calls.read_text().splitlines()]
    low = sum(1 for r in traffic["ratings"] if r == 0)
    assert call["kind"] == "feedback" and call["model_version"] == "1" and call["feedback_count"] == low


def test_an_empty_store_is_one_line(tmp_path: Path, capsys) -> None:
    code, _, err = cli(["feedback", "report", "--store", str(tmp_path / "empty"), "--no-log"], capsys)
    assert code == 3 and "holds no records" in err
