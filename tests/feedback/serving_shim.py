"""TEST SHIM, to be replaced by the real model server (`serving/`, issue 12) once it is merged: the smallest server
that answers by alias and writes the inference log the way the real one does, so the feedback loop can be tested
before it exists.

It loads `mlflow.pyfunc.load_model("models:/NAME@ALIAS")` once, answers `POST /invocations` with
`{"question": ...}`, returns the request id in `X-Request-ID`, writes one PII-redacted record per request through
`llmops.records.write_inference_records` (the core writer the server uses; here synchronously, one part per request)
with the version's bundle (prompt, instruction hash, dataset digest), and mounts the feedback router exactly as the
server will: `app.include_router(feedback_router(settings, log_uri=LOG))`. Nothing outside tests imports it.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from feedback.http import feedback_router
from llmops.pii import redact
from llmops.records import INFERENCE_SCHEMA_VERSION, write_inference_records
from llmops.settings import Settings


class Question(BaseModel):
    question: str


def shim_app(settings: Settings, model_uri: str, log_uri: str) -> FastAPI:
    import mlflow.pyfunc
    import pandas as pd
    from mlflow.tracking import MlflowClient

    name, alias = model_uri.removeprefix("models:/").split("@")
    version = MlflowClient().get_model_version_by_alias(name, alias)
    tags = version.tags
    model = mlflow.pyfunc.load_model(model_uri)
    app = FastAPI()

    @app.post("/invocations")
    def invocations(body: Question) -> Any:
        started, request_id = time.perf_counter(), uuid.uuid4().hex
        (answer,) = model.predict(pd.DataFrame({"question": [body.question]}))
        question, text = redact(body.question), redact(answer["answer"])
        write_inference_records(log_uri, [{
            "schema_version": INFERENCE_SCHEMA_VERSION, "request_id": request_id, "time": datetime.now(UTC),
            "latency_ms": (time.perf_counter() - started) * 1000, "status": 200, "endpoint": "invocations",
            "model_name": name, "model_version": str(version.version), "model_alias": alias, "role": "champion",
            "prompt_name": tags.get("llmops.prompt_name"), "prompt_version": int(tags.get("llmops.prompt_version")),
            "instruction_hash": tags.get("llmops.instruction_hash"),
            "dataset_digest": tags.get("llmops.dataset_digest"), "question": question.text, "answer": text.text,
            "citations": [{"source_id": str(c.get("source_id")), "link": c.get("link"),
                           "similarity": c.get("similarity")} for c in answer.get("citations") or []],
            "abstained": bool(answer.get("abstained")),
            "safety_blocked": bool((answer.get("safety") or {}).get("blocked")), "provider": "retrieval",
            "redactions": question.total + text.total, "replica": "shim",
        }])
        return JSONResponse({"answer": answer["answer"], "abstained": bool(answer.get("abstained")),
                             "model_version": str(version.version)}, headers={"X-Request-ID": request_id})

    app.include_router(feedback_router(settings, log_uri=log_uri))
    return app
