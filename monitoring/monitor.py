"""`llmops monitor run` without the I/O of its results: the log cut into windows per version, each window compared
with the version's eval split (skew) and with an earlier window, the training inputs or a file (drift), and its
operational metrics. Logging, plots, reports and the trigger consume the result (`MonitorResult`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from llmops.errors import DataError, LlmopsError
from monitoring.compare import Comparison, compare_frames
from monitoring.features import FeatureFrame, FeatureSpace
from monitoring.references import (
    ModelVersion,
    Reference,
    check_same_version,
    describe_reference,
    eval_reference,
    file_reference,
    lookup_version,
    resolve_model,
    train_reference,
)
from monitoring.rules import AlarmRules
from monitoring.windows import (
    Window,
    WindowSpec,
    answer_features,
    cut_windows,
    load_log,
    operational_metrics,
    questions_of,
    records_of,
    versions_in,
)

log = logging.getLogger(__name__)
DRIFT_CHOICES = ("previous", "first", "train", "none")


@dataclass
class WindowResult:
    window: Window
    metrics: dict[str, float]
    questions: int
    skew: Comparison | None = None
    drift: Comparison | None = None
    drift_against: str = ""

    def comparisons(self) -> list[tuple[str, Comparison]]:
        return [(kind, c) for kind, c in (("skew", self.skew), ("drift", self.drift)) if c is not None]

    def to_dict(self) -> dict[str, Any]:
        w = self.window
        return {"index": w.index, "start": w.start.isoformat(), "end": w.end.isoformat(), "records": w.records.num_rows,
                "questions": self.questions, "metrics": self.metrics,
                "skew": self.skew.to_dict() if self.skew else None,
                "drift": self.drift.to_dict() if self.drift else None, "drift_against": self.drift_against}


@dataclass
class VersionResult:
    model_name: str
    model_version: str
    model: ModelVersion | None
    skew_reference: Reference | None
    drift_reference: str
    basis: str
    embedder: str
    windows: list[WindowResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.model_name} v{self.model_version}"

    def alarms(self) -> list[tuple[WindowResult, str, Comparison]]:
        return [(w, kind, c) for w in self.windows for kind, c in w.comparisons() if c.drift]

    @property
    def reference_digest(self) -> str:
        return self.skew_reference.digest if self.skew_reference else ""

    def to_dict(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "model_version": self.model_version,
                "skew_reference": describe_reference(self.skew_reference) if self.skew_reference else None,
                "drift_reference": self.drift_reference, "basis": self.basis, "embedding": self.embedder,
                "alarms": len(self.alarms()), "notes": self.notes, "windows": [w.to_dict() for w in self.windows]}


@dataclass
class MonitorResult:
    log: str
    window: WindowSpec
    rules: AlarmRules
    versions: list[VersionResult]

    @property
    def drift(self) -> bool:
        return any(v.alarms() for v in self.versions)

    def to_dict(self) -> dict[str, Any]:
        return {"log": self.log, "window": str(self.window), "mode": self.rules.mode, "alpha": self.rules.alpha,
                "drift": self.drift, "versions": [v.to_dict() for v in self.versions]}


def _skew_reference(choice: str, model: ModelVersion | None, name: str, version: str) -> Reference | None:
    if choice == "none":
        return None
    if choice in ("eval", "train"):
        if model is None:
            raise DataError(f"{name} v{version} is not in the model registry: its {choice} split is unknown "
                            "(pass --skew-reference FILE or none)")
        return eval_reference(model) if choice == "eval" else train_reference(model)
    if choice.startswith("models:/"):
        return eval_reference(resolve_model(choice))
    return file_reference(choice)


def _basis(model: ModelVersion | None, skew: Reference | None, drift_choice: str,
           pooled: list[str]) -> tuple[list[str], str, Reference | None]:
    """Training inputs when known and not themselves a compared side; else every compared question together."""
    train = None
    if model is not None and "llmops.tune_run_id" in model.tags:
        try:
            train = train_reference(model)
        except LlmopsError as exc:
            log.warning("training inputs of %s unavailable (%s): fitting on the compared questions", model.label, exc)
    if train is not None and drift_choice != "train" and (skew is None or skew.kind != "train"):
        return list(train.questions), f"training inputs {train.uri}", train
    return pooled, "the compared questions together", train


def monitor(log_location: str, window: WindowSpec, rules: AlarmRules, model_uri: str | None = None,
            skew: str = "eval", drift: str = "previous", since: datetime | None = None,
            until: datetime | None = None) -> MonitorResult:
    """Compute everything `llmops monitor run` reports; nothing is logged or run here."""
    table = load_log(log_location, since, until)
    present = versions_in(table)
    if model_uri:
        model = resolve_model(model_uri)
        targets = [(model.name, model.version, model)]
        if (model.name, model.version) not in present:
            held = ", ".join(f"{n} v{v}" for n, v in present)
            raise DataError(f"the log holds no records of {model.label} (it holds {held})")
    else:
        targets = [(n, v, lookup_version(n, v)) for n, v in present]
    results = []
    for name, version, model in targets:
        records = records_of(table, name, version)
        results.append(_monitor_version(name, version, model, records, window, rules, skew, drift))
    return MonitorResult(log_location, window, rules, results)


def _monitor_version(name: str, version: str, model: ModelVersion | None, records, window: WindowSpec,
                     rules: AlarmRules, skew_choice: str, drift_choice: str) -> VersionResult:
    served = {d for d in records.column("dataset_digest").to_pylist() if d}
    notes = []
    if model is None and skew_choice in ("eval", "train"):
        notes.append(f"{name} v{version} is not in the model registry: no {skew_choice} split to measure skew against")
        skew_choice = "none"
    skew_ref = _skew_reference(skew_choice, model, name, version)
    if skew_ref is not None:
        check_same_version(skew_ref, name, version, served)
    drift_ref: Reference | None = None
    if drift_choice == "train":
        if model is None:
            raise DataError(f"{name} v{version} is not in the model registry: its training inputs are unknown")
        drift_ref = train_reference(model)
        check_same_version(drift_ref, name, version, served)
    elif drift_choice not in DRIFT_CHOICES:
        drift_ref = file_reference(drift_choice)
    windows = cut_windows(records, window)
    pooled = [q for w in windows for q in w.questions]
    pooled += list(skew_ref.questions) if skew_ref else []
    pooled += list(drift_ref.questions) if drift_ref else []
    if not pooled:
        raise DataError(f"the log's records of {name} v{version} hold no questions")
    basis, basis_label, _train = _basis(model, skew_ref, drift_choice, pooled)
    space = FeatureSpace.fit(basis, embedding=rules.embedding, dim=rules.embedding_dim, seed=rules.seed)
    rng = np.random.default_rng(rules.seed)
    result = VersionResult(name, version, model, skew_ref, drift_choice, basis_label, space.embedder.name,
                           notes=notes)

    def frame_of(questions: list[str], answers: dict[str, np.ndarray] | None = None) -> FeatureFrame:
        frame = space.transform(questions, max_model_rows=rules.max_model_rows, rng=rng)
        return frame.with_answers(answers) if answers else frame

    skew_frame = frame_of(list(skew_ref.questions)) if skew_ref else None
    drift_frame = frame_of(list(drift_ref.questions)) if drift_ref else None
    frames: list[FeatureFrame] = []
    for w in windows:
        frame = frame_of(questions_of(w.records), answer_features(w.records))
        frames.append(frame)
        item = WindowResult(w, operational_metrics(w), len(frame))
        seed = rules.seed + 1000 * w.index
        if skew_frame is not None:
            item.skew = compare_frames(skew_frame, frame, rules, kind="skew", seed=seed, embedder_name=space.embedder.name)
        against = None
        if drift_frame is not None:
            against, item.drift_against = drift_frame, f"{drift_ref.kind} {drift_ref.uri}"
        elif drift_choice == "previous" and w.index > 0:
            against, item.drift_against = frames[w.index - 1], f"window {w.index - 1}"
        elif drift_choice == "first" and w.index > 0:
            against, item.drift_against = frames[0], "window 0"
        if against is not None:
            item.drift = compare_frames(against, frame, rules, kind="drift", seed=seed + 1,
                                        embedder_name=space.embedder.name)
        result.windows.append(item)
    if not windows:
        result.notes.append("no windows")
    return result
