"""Feedback metrics per model version, logged to MLflow so a release manager compares versions by human feedback.

Per (model, version), over the store's records (the newest per request and user):
- `feedback/n`, and with the inference log `requests/n` and `feedback/rate` (feedback per served answer);
- `rating/mean` on 0..1 (thumbs: the share of thumbs up; scale5: (r - 1) / 4) with its seeded bootstrap CI
  (`rating/ci_low`, `rating/ci_high`, the evaluation settings' samples and confidence), and the raw mean;
- `share/low`, `share/good`, `share/corrected` (records that carry a correction);
- agreement of the human ratings with automatic scores of the same answers (Spearman, as `llmops eval review`
  reports it): `retrieval_similarity` (the answer's top citation similarity, from the log), `code_valid` and
  `answer_length` (the evaluation scorers' definitions) and `token_f1` against the question's correction where
  one exists; `agreement/<score>/spearman` and `/n` (left out when constant or under 3 rows).
Each version gets one MLflow run (`llmops.step = feedback_report`, tagged with the model, version and the feedback
digest it covers); its metrics are also linked to the version's logged model, so they show on the model's page.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from feedback.ratings import normalised
from projects.data.feedback import normalise_text, feedback_set, is_good, is_low, newest_per_user, question_key

SCORES = ("retrieval_similarity", "code_valid", "answer_length", "token_f1")


@dataclass
class VersionReport:
    model_name: str
    model_version: str
    metrics: dict[str, float]
    feedback_digest: str
    rating_kinds: list[str]
    run_id: str | None = None
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "model_version": self.model_version, "metrics": self.metrics,
                "feedback_digest": self.feedback_digest, "rating_kinds": self.rating_kinds, "run_id": self.run_id,
                "notes": self.notes}

    def line(self) -> str:
        m = self.metrics
        head = f"{self.model_name} v{self.model_version}: {int(m['feedback/n'])} feedback"
        if "requests/n" in m:
            head += f" on {int(m['requests/n'])} request(s) (rate {m['feedback/rate']:.3f})"
        head += (f", rating {m['rating/mean']:.3f} (CI {m['rating/ci_low']:.3f}..{m['rating/ci_high']:.3f}), "
                 f"low {m['share/low']:.2f}, corrected {m['share/corrected']:.2f}")
        agree = [f"{s} {m[f'agreement/{s}/spearman']:+.2f} (n {int(m[f'agreement/{s}/n'])})" for s in SCORES
                 if f"agreement/{s}/spearman" in m]
        return head + (f"; agreement: {', '.join(agree)}" if agree else "")


def _top_similarity(citations: Any) -> float | None:
    values = [c.get("similarity") for c in citations or [] if isinstance(c, dict) and c.get("similarity") is not None]
    return max(values) if values else None


def automatic_scores(record: dict[str, Any], logged: dict[str, Any] | None, reference: str | None) -> dict[str, float]:
    """Scores of the rated answer that need no human: the evaluation scorers' definitions."""
    from evaluation.metrics import code_validity, token_f1

    answer = record.get("answer") or ""
    scores: dict[str, float] = {"answer_length": float(len(answer.split()))}
    similarity = _top_similarity((logged or {}).get("citations"))
    if similarity is not None:
        scores["retrieval_similarity"] = float(similarity)
    valid, _ = code_validity(answer)
    if valid is not None:
        scores["code_valid"] = float(valid)
    if reference:
        scores["token_f1"] = float(token_f1(answer, reference))
    return scores


def spearman(human: Sequence[float], auto: Sequence[float]) -> float:
    import numpy as np
    from scipy.stats import spearmanr

    a, b = np.asarray(human, dtype=float), np.asarray(auto, dtype=float)
    if a.size < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return math.nan
    return float(spearmanr(a, b).statistic)


def version_reports(feedback_rows: Sequence[dict[str, Any]], log_rows: Sequence[dict[str, Any]] | None, *,
                    low_rating_max: int, good_rating_min: int, samples: int = 1000, confidence: float = 0.95,
                    seed: int = 0, model_name: str | None = None) -> list[VersionReport]:
    """One report per model version in the store (pure)."""
    from evaluation.stats import bootstrap_mean

    effective = [r for r in newest_per_user(list(feedback_rows))
                 if model_name is None or r.get("model_name") == model_name]
    by_request = {r["request_id"]: r for r in log_rows or []}
    references: dict[str, str] = {}
    for record in sorted(effective, key=lambda r: r["time"]):  # the newest correction of a question
        if record.get("corrected_answer"):
            references[question_key(record.get("question") or "")] = record["corrected_answer"]
    requests: dict[tuple[str, str], int] = defaultdict(int)
    for row in log_rows or []:
        if row.get("role") != "shadow" and (row.get("status") or 0) < 400:
            requests[(str(row.get("model_name")), str(row.get("model_version")))] += 1
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for record in effective:
        groups[(str(record["model_name"]), str(record["model_version"]))].append(record)
    out = []
    for (name, version), records in sorted(groups.items()):
        values = [normalised(float(r["rating"]), r["rating_kind"]) for r in records]
        ci = bootstrap_mean(values, samples=samples, confidence=confidence, seed=seed)
        n = len(records)
        metrics = {
            "feedback/n": float(n), "rating/mean": ci.estimate, "rating/ci_low": ci.low, "rating/ci_high": ci.high,
            "rating/raw_mean": sum(float(r["rating"]) for r in records) / n,
            "share/low": sum(is_low(r, low_rating_max) for r in records) / n,
            "share/good": sum(is_good(r, good_rating_min) for r in records) / n,
            "share/corrected": sum(1 for r in records if r.get("corrected_answer")) / n,
        }
        if log_rows is not None:
            served = requests.get((name, version), 0)
            metrics["requests/n"] = float(served)
            if served:
                metrics["feedback/rate"] = n / served
        scored = []
        for record, value in zip(records, values, strict=True):
            reference = references.get(question_key(record.get("question") or ""))
            if reference is not None and normalise_text(reference) == normalise_text(record.get("answer") or ""):
                reference = None  # the answer is the correction itself: no signal
            scored.append((value, automatic_scores(record, by_request.get(record["request_id"]), reference)))
        for score in SCORES:
            pairs = [(h, s[score]) for h, s in scored if score in s]
            rho = spearman([h for h, _ in pairs], [a for _, a in pairs])
            if not math.isnan(rho):
                metrics[f"agreement/{score}/spearman"] = rho
                metrics[f"agreement/{score}/n"] = float(len(pairs))
        digest = feedback_set(records, name, "").digest
        kinds = sorted({r["rating_kind"] for r in records})
        notes = [] if len(kinds) == 1 else [f"ratings of {len(kinds)} kinds ({', '.join(kinds)}) on one 0..1 scale"]
        out.append(VersionReport(name, version, metrics, digest, kinds, notes=notes))
    return out


def logged_model_id(version: Any) -> str | None:
    """The logged model behind a registered version (SQLite stores leave `model_id` empty; the source names it)."""
    if getattr(version, "model_id", None):
        return version.model_id
    source = str(getattr(version, "source", "") or "")
    return source.removeprefix("models:/") if source.startswith("models:/m-") else None


def log_reports(reports: Sequence[VersionReport], store: str) -> None:
    """One MLflow run per version; metrics also linked to the version's logged model when the registry has it."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from llmops.secrets import mask_text

    client = MlflowClient()
    for report in reports:
        model_id = None
        try:
            model_id = logged_model_id(client.get_model_version(report.model_name, report.model_version))
        except MlflowException:
            report.notes.append(f"{report.model_name} v{report.model_version} is not in this registry: metrics "
                                "not linked to a logged model")
        finite = {k: v for k, v in report.metrics.items() if math.isfinite(v)}
        with mlflow.start_run(run_name=f"feedback {report.model_name} v{report.model_version}") as run:
            mlflow.set_tags({"llmops.step": "feedback_report", "llmops.model_name": report.model_name,
                             "llmops.model_version": report.model_version,
                             "llmops.feedback_digest": report.feedback_digest})
            mlflow.log_params({"feedback_store": mask_text(store), "rating_kinds": ",".join(report.rating_kinds)})
            mlflow.log_metrics(finite, model_id=model_id)  # on the run, and on the logged model when known
            _log_feedback_input(store, report.feedback_digest)
            report.run_id = run.info.run_id


def _log_feedback_input(store: str, digest: str) -> None:
    """The feedback records the report read, as the run's dataset input `feedback` (the MLflow UI names and links
    it); a store MLflow cannot name as a source is skipped with a log line."""
    import logging

    from mlflow.exceptions import MlflowException

    from llmops.tracking import log_dataset_input

    try:
        log_dataset_input(store, "feedback", digest, {"feedback_id": "string", "request_id": "string",
                                                      "rating": "double", "corrected_answer": "string"}, "feedback")
    except (MlflowException, ValueError, OSError) as exc:
        logging.getLogger(__name__).warning("feedback store %s not logged as a run input: %s", store, exc)
