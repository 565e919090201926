"""Records that cross components, defined once: the inference-log record (written only by serving; read by
monitoring and feedback) and the feedback record (written by feedback; read by the data step and reports).

Both are versioned Arrow schemas stored as Parquet parts (`llmops.parts`). A new version may add a field, never
rename or retype one; readers fill fields an older part lacks with nulls. Text fields hold text that went through
`llmops.pii.redact` first: nothing raw is ever stored.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pyarrow as pa

from llmops.errors import DataError
from llmops.parts import read_store, write_part

INFERENCE_SCHEMA_VERSION = 2  # 2: trace_id
FEEDBACK_SCHEMA_VERSION = 2  # 2: abstained, safety_blocked

CITATION_TYPE = pa.struct([("source_id", pa.string()), ("link", pa.string()), ("similarity", pa.float64())])
TIMESTAMP = pa.timestamp("ms", tz="UTC")

INFERENCE_SCHEMA = pa.schema([
    ("schema_version", pa.int32()),
    ("request_id", pa.string()),        # returned to the client in the X-Request-ID header
    ("time", TIMESTAMP),                # when the request arrived
    ("latency_ms", pa.float64()),
    ("status", pa.int32()),             # HTTP status (batch: 200 or the status the same error gets over HTTP)
    ("error", pa.string()),             # one line, null when status < 400
    ("endpoint", pa.string()),          # invocations | chat | batch
    ("model_name", pa.string()),
    ("model_version", pa.string()),
    ("model_alias", pa.string()),
    ("role", pa.string()),              # champion | challenger (canary) | shadow
    ("shadow_of", pa.string()),         # shadow records: the request id of the champion's record they copy
    ("prompt_name", pa.string()),
    ("prompt_version", pa.int32()),
    ("instruction_hash", pa.string()),
    ("dataset_digest", pa.string()),
    ("question", pa.string()),          # PII-redacted
    ("answer", pa.string()),            # PII-redacted
    ("citations", pa.list_(CITATION_TYPE)),
    ("abstained", pa.bool_()),
    ("safety_blocked", pa.bool_()),
    ("provider", pa.string()),
    ("model_id", pa.string()),
    ("session_hash", pa.string()),      # sha256 prefix of the user/session header, never the header itself
    ("redactions", pa.int32()),         # PII findings replaced in question + answer
    ("replica", pa.string()),           # host:pid of the server process that wrote the record
    # v2: the MLflow trace of this request when the server logged one (sampled; null otherwise), so feedback can
    # be logged as assessments on it
    ("trace_id", pa.string()),
])
INFERENCE_REQUIRED = ("schema_version", "request_id", "time", "latency_ms", "status", "endpoint", "model_name",
                      "model_version", "role", "question")

RATING_KINDS = ("thumbs", "scale5")
FEEDBACK_SCHEMA = pa.schema([
    ("schema_version", pa.int32()),
    ("feedback_id", pa.string()),
    ("request_id", pa.string()),
    ("time", TIMESTAMP),
    ("rating", pa.float64()),           # thumbs: 0 (down) or 1 (up); scale5: 1..5
    ("rating_kind", pa.string()),
    ("corrected_answer", pa.string()),  # PII-redacted; null when none
    ("comment", pa.string()),           # PII-redacted
    ("user", pa.string()),
    ("source", pa.string()),            # server | cli | import | review
    # provenance, resolved through the inference log when the feedback is taken
    ("model_name", pa.string()),
    ("model_version", pa.string()),
    ("prompt_name", pa.string()),
    ("prompt_version", pa.int32()),
    ("instruction_hash", pa.string()),
    ("dataset_digest", pa.string()),
    ("question", pa.string()),
    ("answer", pa.string()),
    # v2: what the rated answer was, so the data step never needs the inference log
    ("abstained", pa.bool_()),
    ("safety_blocked", pa.bool_()),
])
FEEDBACK_REQUIRED = ("schema_version", "feedback_id", "request_id", "time", "rating", "rating_kind",
                     "model_name", "model_version", "question")

INFERENCE_PREFIX = "inference"
FEEDBACK_PREFIX = "feedback"


def to_table(records: Iterable[Mapping[str, Any]], schema: pa.Schema, what: str) -> pa.Table:
    """Records (dicts) -> a table in `schema`; an unknown field is a programming error, named."""
    rows = list(records)
    known = set(schema.names)
    for row in rows:
        unknown = set(row) - known
        if unknown:
            raise DataError(f"{what} record has unknown field(s): {', '.join(sorted(unknown))}")
    try:
        return pa.Table.from_pylist(rows, schema=schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise DataError(f"{what} record does not fit its schema: {exc}") from exc


def write_inference_records(location: str, records: Iterable[Mapping[str, Any]], prefix: str = INFERENCE_PREFIX) -> str:
    return write_part(location, to_table(records, INFERENCE_SCHEMA, "inference-log"), prefix)


def read_inference_log(location: str) -> pa.Table:
    """Every record under `location` (a folder or fsspec URL of Parquet parts), in INFERENCE_SCHEMA."""
    return read_store(location, INFERENCE_SCHEMA, INFERENCE_REQUIRED, "inference-log")


def write_feedback_records(location: str, records: Iterable[Mapping[str, Any]]) -> str:
    return write_part(location, to_table(records, FEEDBACK_SCHEMA, "feedback"), FEEDBACK_PREFIX)


def read_feedback(location: str) -> pa.Table:
    return read_store(location, FEEDBACK_SCHEMA, FEEDBACK_REQUIRED, "feedback")
