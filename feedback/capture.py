"""Taking feedback: validate it, resolve its request through the inference log, store it, log MLflow assessments.

One path for every entry point (`POST /feedback`, `llmops feedback add`, bulk import, review sessions): a batch is
checked whole first (every rating inside the schema, every request id known, no correction of a blocked answer, no
empty correction) and then written as one part of the append-only store, so a bad item stores nothing. Only then,
when the server logged a trace for the request, the rating becomes an MLflow `log_feedback` assessment and a
correction a `log_expectation` (`expected_response`), both with a HUMAN source; the store is the record of truth,
so an assessment that cannot be logged is reported, never a reason to lose the feedback.
"""

from __future__ import annotations

import getpass
import hashlib
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from feedback.ratings import parse_rating
from feedback.resolve import InferenceLog
from llmops.errors import InputError, LlmopsError, NotFoundError
from llmops.pii import redact_text
from llmops.records import FEEDBACK_SCHEMA_VERSION, write_feedback_records
from llmops.secrets import mask_url
from llmops.settings import FeedbackSettings, Settings, inference_log_uri

log = logging.getLogger(__name__)

Source = Literal["server", "cli", "import", "review"]
RATING_NAME = "human_rating"          # the same assessment name `llmops eval review import` logs
EXPECTATION_NAME = "expected_response"  # the name evaluation reads references under
MAX_REQUEST_ID_CHARS = 200
MAX_USER_CHARS = 200


class FeedbackInput(BaseModel):
    """One piece of feedback as a client gives it (the JSON body of POST /feedback, a CLI call, a file row)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    request_id: str = Field(min_length=1, max_length=MAX_REQUEST_ID_CHARS)
    rating: bool | int | float | str
    rating_kind: Literal["thumbs", "scale5"] | None = None
    corrected_answer: str | None = None
    comment: str | None = None
    user: str | None = Field(default=None, max_length=MAX_USER_CHARS)


def parse_input(data: Any, where: str = "feedback") -> FeedbackInput:
    """A dict -> FeedbackInput; the first problem named in one line (InputError)."""
    if not isinstance(data, dict):
        raise InputError(f"{where} must be a JSON object with request_id and rating")
    try:
        return FeedbackInput.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "body"
        message = "unknown field" if first["type"] == "extra_forbidden" else first["msg"]
        if field == "rating" and first["type"] != "missing":  # a union: pydantic names every member it tried
            message = "must be up/down, true/false or a number"
        known = ", ".join(FeedbackInput.model_fields)
        hint = f" (known: {known})" if first["type"] == "extra_forbidden" else ""
        raise InputError(f"{where}: {field}: {message}{hint}") from exc


def resolve_log_uri(settings: Settings) -> str:
    """feedback.log_uri, else monitoring.log_uri, else serving.log_uri: where the server writes (one setting)."""
    return inference_log_uri(settings, "feedback")


def pseudonym(user: str) -> str:
    """A stable, non-reversible stand-in for an application user: counts per user still work."""
    return "user:" + hashlib.sha256(user.encode("utf-8")).hexdigest()[:16]


def default_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        return "unknown"


def build_record(item: FeedbackInput, answer: dict[str, Any], cfg: FeedbackSettings, *, source: Source,
                 user: str | None, now: datetime) -> dict[str, Any]:
    """The stored feedback record (FEEDBACK_SCHEMA) for `item` about the logged `answer`; pure, raises InputError."""
    if item.rating_kind is not None and item.rating_kind != cfg.rating:
        raise InputError(f"this deployment takes {cfg.rating} ratings (feedback.rating), got rating_kind "
                         f"{item.rating_kind}")
    rating = parse_rating(item.rating, cfg.rating)
    status = answer.get("status")
    if status is not None and int(status) >= 400:
        raise InputError(f"request {item.request_id} failed (status {status}): there is no answer to give "
                         "feedback on")
    correction = None
    if item.corrected_answer is not None:
        if not item.corrected_answer.strip():
            raise InputError("empty correction: give the corrected answer, or leave corrected_answer out to rate "
                             "only")
        if answer.get("safety_blocked"):
            raise InputError(f"request {item.request_id} was blocked by the safety filter: it can be rated, not "
                             "corrected")
        if len(item.corrected_answer) > cfg.max_correction_chars:
            raise InputError(f"corrected_answer has {len(item.corrected_answer):,} characters, more than "
                             f"feedback.max_correction_chars ({cfg.max_correction_chars:,})")
        correction = redact_text(item.corrected_answer.strip())
    if item.comment is not None and len(item.comment) > cfg.max_comment_chars:
        raise InputError(f"comment has {len(item.comment):,} characters, more than feedback.max_comment_chars "
                         f"({cfg.max_comment_chars:,})")
    return {
        "schema_version": FEEDBACK_SCHEMA_VERSION, "feedback_id": f"fb-{uuid.uuid4().hex}",
        "request_id": item.request_id, "time": now, "rating": rating, "rating_kind": cfg.rating,
        "corrected_answer": correction, "comment": redact_text(item.comment.strip()) if item.comment else None,
        "user": user, "source": source,
        "model_name": answer.get("model_name"), "model_version": answer.get("model_version"),
        "prompt_name": answer.get("prompt_name"), "prompt_version": answer.get("prompt_version"),
        "instruction_hash": answer.get("instruction_hash"), "dataset_digest": answer.get("dataset_digest"),
        "question": redact_text(answer.get("question")), "answer": redact_text(answer.get("answer")),
        "abstained": answer.get("abstained"), "safety_blocked": answer.get("safety_blocked"),
    }


@dataclass(frozen=True)
class Taken:
    """A stored feedback record and what became of its MLflow assessments."""

    record: dict[str, Any]
    assessments: str  # logged | no trace | off | failed: <why>

    def summary(self) -> dict[str, Any]:
        r = self.record
        return {"feedback_id": r["feedback_id"], "request_id": r["request_id"], "rating": r["rating"],
                "rating_kind": r["rating_kind"], "corrected": r["corrected_answer"] is not None,
                "user": r["user"], "source": r["source"],
                "provenance": {k: r[k] for k in ("model_name", "model_version", "prompt_name", "prompt_version",
                                                 "instruction_hash", "dataset_digest")},
                "assessments": self.assessments}


def log_assessments(record: dict[str, Any], trace_id: str) -> None:
    """The rating as `human_rating` feedback and a correction as the `expected_response` expectation."""
    import mlflow
    from mlflow.entities import AssessmentSource, AssessmentSourceType

    source = AssessmentSource(source_type=AssessmentSourceType.HUMAN, source_id=record["user"] or "anonymous")
    metadata = {"feedback_id": record["feedback_id"], "request_id": record["request_id"],
                "rating_kind": record["rating_kind"], "model_version": str(record["model_version"])}
    mlflow.log_feedback(trace_id=trace_id, name=RATING_NAME, value=record["rating"],
                        rationale=record["comment"] or None, source=source, metadata=metadata)
    if record["corrected_answer"] is not None:
        mlflow.log_expectation(trace_id=trace_id, name=EXPECTATION_NAME, value=record["corrected_answer"],
                               source=source, metadata=metadata)


class FeedbackService:
    """Capture for one process: the settings, the inference log's index and the store."""

    def __init__(self, settings: Settings, *, log_uri: str | None = None, store_uri: str | None = None,
                 inference_log: InferenceLog | None = None) -> None:
        self.cfg = settings.feedback
        # `is None`, not `or`: an index with nothing in it yet has len() 0
        self.log = inference_log if inference_log is not None else InferenceLog(log_uri or resolve_log_uri(settings))
        self.store_uri = store_uri or self.cfg.store_uri

    def user_for(self, source: Source, user: str | None) -> str | None:
        user = (user or "").strip() or None
        if user is not None and source == "server" and self.cfg.pseudonymise_app_users:
            return pseudonym(user)
        return user

    def take(self, items: Sequence[FeedbackInput], *, source: Source, where: Sequence[str] | None = None,
             users: Sequence[str | None] | None = None, now: datetime | None = None) -> list[Taken]:
        """Check every item, then store all of them in one part; `where` names each item in errors (`line 3`)."""
        if not items:
            raise InputError("no feedback given")
        now = now or datetime.now(UTC)
        records, traces = [], []
        for i, item in enumerate(items):
            try:
                answer = self.log.find(item.request_id)
                if answer is None:
                    raise NotFoundError(f"unknown request id {item.request_id!r}: it is not in the inference log "
                                        f"at {mask_url(self.log.location)} (a server writes its records there "
                                        f"within serving.part_max_seconds)")
                user = users[i] if users is not None else item.user
                records.append(build_record(item, answer, self.cfg, source=source, user=self.user_for(source, user),
                                            now=now))
                traces.append(answer.get("trace_id"))
            except LlmopsError as exc:
                if where is None:
                    raise
                raise type(exc)(f"{where[i]}: {exc}") from exc
        write_feedback_records(self.store_uri, records)
        return [Taken(record, self._assess(record, trace)) for record, trace in zip(records, traces, strict=True)]

    def _assess(self, record: dict[str, Any], trace_id: str | None) -> str:
        if not self.cfg.log_assessments:
            return "off"
        if not trace_id:
            return "no trace"
        try:
            log_assessments(record, trace_id)
        except Exception as exc:  # the store already holds the feedback; an unreachable tracking server loses none
            reason = " ".join(str(getattr(exc, "message", exc)).split())[:200]
            log.warning("feedback %s stored, but its assessments on trace %s were not logged: %s",
                        record["feedback_id"], trace_id, reason)
            return f"failed: {reason}"
        return "logged"
