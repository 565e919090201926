"""MLflow traces of served answers: off by default, sampled when on, and PII-redacted before export.

The chain opens a span per stage; with tracing disabled those are no-ops (microseconds). `mlflow models serve`
traces every request synchronously into the tracking store (measured: ~10 KB per request, 1.7 -> 79 MB a minute on
SQLite, a third dropped under load, raw questions stored). Here a sampled share is traced, and a span processor
runs `llmops.pii.redact` over every string in span inputs, outputs and attributes before it is exported.
"""

from __future__ import annotations

import os
from typing import Any


def configure_tracing(sample_rate: float, settings: Any = None) -> bool:
    """Disable tracing (rate 0), or enable it at `sample_rate` with redaction, into the settings' experiment
    (created like every other experiment of the platform: artifacts beside a SQLite store); returns whether it
    is on."""
    import mlflow

    if sample_rate <= 0:
        mlflow.tracing.disable()
        return False
    os.environ["MLFLOW_TRACE_SAMPLING_RATIO"] = repr(float(sample_rate))  # read when the tracer provider starts
    if settings is not None:
        from llmops.tracking import configure_mlflow

        configure_mlflow(settings)
    mlflow.tracing.reset()  # the sampling ratio is read when the provider starts again (this also resets config)
    mlflow.tracing.configure(span_processors=[redact_span])
    mlflow.tracing.enable()
    return True


def redact_value(value: Any) -> Any:
    """Every string inside `value` (dicts, lists) through the PII redactor."""
    from llmops.pii import redact_text

    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(v) for v in value]
    return value


def redact_span(span: Any) -> None:
    """MLflow span processor: questions, prompts and answers leave the process redacted."""
    if span.inputs is not None:
        span.set_inputs(redact_value(span.inputs))
    if span.outputs is not None:
        span.set_outputs(redact_value(span.outputs))
    for key, value in list((span.attributes or {}).items()):
        if isinstance(value, str | dict | list) and not key.startswith("mlflow."):
            span.set_attribute(key, redact_value(value))
