"""The server's Prometheus metrics (`prometheus-client`), one registry per app so several apps can live in one
process (tests), and multiprocess mode when uvicorn runs several workers (`PROMETHEUS_MULTIPROC_DIR`)."""

from __future__ import annotations

import os
from typing import Any

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class ServerMetrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

        disable_created_metrics()  # no `_created` twin of every series
        self.multiprocess = bool(os.environ.get(MULTIPROC_ENV))
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("llmops_requests", "Requests answered, by endpoint, HTTP status, model version and "
                                "role (champion | challenger | shadow).",
                                ["endpoint", "status", "model_version", "role"], registry=r)
        self.latency = Histogram("llmops_request_latency_seconds", "Request latency, by endpoint and model version.",
                                 ["endpoint", "model_version", "role"], buckets=LATENCY_BUCKETS, registry=r)
        self.in_flight = Gauge("llmops_requests_in_flight", "Requests being answered now.", registry=r,
                               multiprocess_mode="livesum")
        self.abstentions = Counter("llmops_abstentions", "Answers that abstained.", ["model_version", "role"],
                                   registry=r)
        self.safety_blocks = Counter("llmops_safety_blocks", "Answers replaced by a refusal by the safety filter.",
                                     ["model_version", "role"], registry=r)
        self.swaps = Counter("llmops_swaps", "Versions swapped in, by slot (champion | challenger).",
                             ["slot", "to_version"], registry=r)
        self.refused = Counter("llmops_versions_refused", "Versions never swapped in, by stage (load | consistency "
                               "| smoke).", ["slot", "version", "stage"], registry=r)
        self.rollbacks = Counter("llmops_rollbacks", "Automatic rollbacks, by outcome in the registry (moved | "
                                 "refused | failed).", ["from_version", "to_version", "registry"], registry=r)
        self.log_written = Counter("llmops_log_records_written", "Inference-log records written to parts.",
                                   registry=r)
        self.log_dropped = Counter("llmops_log_records_dropped", "Inference-log records dropped (queue full past "
                                   "the backpressure timeout, or unwritable at shutdown).", registry=r)
        self.shadow_skipped = Counter("llmops_shadow_skipped", "Shadow copies skipped because the shadow queue was "
                                      "full.", registry=r)
        self.serving = Gauge("llmops_serving_version", "1 for the version each slot serves now.",
                             ["slot", "model_name", "model_version", "alias"], registry=r,
                             multiprocess_mode="liveall")
        self.ready = Gauge("llmops_ready", "1 when a champion is loaded and smoke-checked.", registry=r,
                           multiprocess_mode="liveall")

    def set_serving(self, slot: str, loaded: Any, previous: Any = None) -> None:
        if previous is not None:
            try:
                self.serving.remove(slot, previous.name, previous.version, previous.alias or "")
            except KeyError:
                pass
        if loaded is not None:
            self.serving.labels(slot, loaded.name, loaded.version, loaded.alias or "").set(1)

    def exposition(self) -> tuple[bytes, str]:
        """(body, content type) of /metrics: this process, or every worker in multiprocess mode."""
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

        if self.multiprocess:
            from prometheus_client import multiprocess

            registry: Any = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
