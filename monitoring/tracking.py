"""One MLflow run per monitored model version: per-window metrics (step = the window's start in epoch seconds,
timestamp = the same instant), params naming the version, the references and their digests, the report, the plots
and the drift examples. Everything is rendered before the run is created; a failure while logging deletes the run,
so a run is either whole or absent."""

from __future__ import annotations

import json
import logging
import math
import re
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from llmops.errors import ConfigError
from monitoring.monitor import MonitorResult, VersionResult
from monitoring.report import html_report, markdown_report, write_plots

_SECRET_QUERY = re.compile(r"(?i)((?:^|&)[^=&]*(?:token|key|secret|password|signature|sig|credential)[^=&]*=)[^&]*")


def mask_credentials(location: str) -> str:
    """`s3://user:pass@bucket/x?X-Amz-Signature=..` -> `s3://***@bucket/x?X-Amz-Signature=***`."""
    parts = urlsplit(location)
    if not parts.scheme or not parts.netloc:
        return location
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    query = _SECRET_QUERY.sub(r"\1***", parts.query)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def drift_example_rows(version: VersionResult, limit: int = 50) -> list[dict[str, Any]]:
    from llmops.pii import redact_text

    rows = []
    for w, kind, comparison in version.alarms():
        for example in comparison.examples(limit):
            rows.append({"model_name": version.model_name, "model_version": version.model_version,
                         "window": w.window.index, "window_start": w.window.start.isoformat(),
                         "window_end": w.window.end.isoformat(), "kind": kind, **example,
                         "question": redact_text(example["question"])})
    return rows


def _metrics(version: VersionResult) -> list[Any]:
    from mlflow.entities import Metric

    out = []
    for w in version.windows:
        millis = int(w.window.start.timestamp() * 1000)
        step = int(w.window.start.timestamp())
        values: dict[str, float] = {f"ops/{k}": v for k, v in w.metrics.items()}
        values["questions"] = float(w.questions)
        for kind, comparison in w.comparisons():
            if comparison.status != "ok":
                values[f"{kind}/enough_data"] = 0.0
                continue
            values[f"{kind}/enough_data"] = 1.0
            values[f"{kind}/alarm"] = float(comparison.drift)
            for f in comparison.features:
                if f.statistic is not None:
                    values[f"{kind}/{f.name}/statistic"] = f.statistic
                if f.p_value is not None:
                    values[f"{kind}/{f.name}/p_value"] = f.p_value
                if f.adjusted_p_value is not None:
                    values[f"{kind}/{f.name}/adjusted_p_value"] = f.adjusted_p_value
        out += [Metric(key, float(value), millis, step) for key, value in values.items()
                if value is not None and math.isfinite(value)]
    return out


def _params(result: MonitorResult, version: VersionResult, rules_file: str) -> dict[str, str]:
    ref = version.skew_reference
    model = version.model
    return {
        "model_name": version.model_name, "model_version": version.model_version,
        "model_alias": (model.alias or "") if model else "",
        "skew_reference": ref.kind if ref else "none", "skew_reference_uri": mask_credentials(ref.uri) if ref else "",
        "reference_digest": ref.digest if ref else "",
        "drift_reference": version.drift_reference, "basis": mask_credentials(version.basis)[:500],
        "embedding": version.embedder, "window": str(result.window), "windows": str(len(version.windows)),
        "log": mask_credentials(result.log), "rules_file": rules_file, "rules_mode": result.rules.mode,
        "alpha": str(result.rules.alpha), "min_rows": str(result.rules.min_rows),
        "counted_features": ",".join(result.rules.features),
    }


def render(result: MonitorResult, version: VersionResult, folder: Path) -> None:
    """Every artifact of the run, written under `folder` (report.md/html, monitor.json, plots, drift examples)."""
    plots = write_plots(version, result.rules.alpha, folder)
    markdown = markdown_report(result, version, plots)
    (folder / "report.md").write_text(markdown, encoding="utf-8")
    (folder / "report.html").write_text(html_report(markdown), encoding="utf-8")
    payload = {**result.to_dict(), "versions": [version.to_dict()], "log": mask_credentials(result.log)}
    (folder / "monitor.json").write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")
    examples = drift_example_rows(version)
    (folder / "drift_examples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in examples), encoding="utf-8")


def log_version(result: MonitorResult, version: VersionResult, rules_file: str, invocation: str) -> str:
    """Log one version's run; returns its id."""
    import mlflow
    from mlflow.tracking import MlflowClient

    with tempfile.TemporaryDirectory(prefix="llmops-monitor-") as tmp:
        folder = Path(tmp)
        render(result, version, folder)
        metrics = _metrics(version)
        params = _params(result, version, rules_file)
        alarms = version.alarms()
        tags = {"llmops.step": "monitor", "llmops.monitor.invocation": invocation,
                "llmops.model_name": version.model_name, "llmops.model_version": version.model_version,
                "llmops.monitor.drift": str(bool(alarms)).lower(),
                "llmops.monitor.alarms": str(len(alarms)),
                "llmops.dataset_digest": version.reference_digest}
        client = MlflowClient()
        run = mlflow.start_run(run_name=f"monitor {version.label}", tags=tags)
        run_id = run.info.run_id
        try:
            client.log_batch(run_id, params=[_param(k, v) for k, v in params.items() if v])  # no '' cells
            _log_inputs(result, version)
            for start in range(0, len(metrics), 1000):
                client.log_batch(run_id, metrics=metrics[start:start + 1000])
            client.log_artifacts(run_id, str(folder))
        except BaseException as exc:
            mlflow.end_run("FAILED")
            client.delete_run(run_id)  # a run is whole or absent
            if isinstance(exc, Exception):
                raise ConfigError(f"logging the monitor run of {version.label} failed, nothing kept: "
                                  f"{getattr(exc, 'message', None) or exc}".splitlines()[0]) from exc
            raise
        mlflow.end_run("FINISHED")
    return run_id


def _log_inputs(result: MonitorResult, version: VersionResult) -> None:
    """The run's datasets in the MLflow UI: the inference-log records it read (digest over the windows' spans and
    sizes) and the skew reference (for eval/train the data step's split, so the same dataset entry links)."""
    import hashlib

    from llmops.tracking import log_dataset_input

    spans = "|".join(f"{w.window.start.isoformat()}/{w.window.end.isoformat()}/{w.window.records.num_rows}"
                     for w in version.windows)
    digest = hashlib.sha256(f"{version.label}|{spans}".encode()).hexdigest()[:16]
    inputs = [(mask_credentials(result.log), "inference-log", digest, {"question": "string"}, "monitoring")]
    ref = version.skew_reference
    if ref is not None and ref.uri and ref.digest:
        name = {"eval": "so-qa-eval", "train": "so-qa-train"}.get(ref.kind, f"reference-{ref.kind}")
        inputs.append((mask_credentials(ref.uri), name, ref.digest, {"question": "string"}, "reference"))
    for uri, name, dataset_digest, columns, context in inputs:
        try:
            log_dataset_input(uri, name, dataset_digest, columns, context)
        except Exception as exc:  # noqa: BLE001 - a source MLflow cannot name costs the link, not the run
            logging.getLogger(__name__).warning("monitor input %s not logged as a dataset: %s", name, exc)


def _param(key: str, value: str) -> Any:
    from mlflow.entities import Param

    return Param(key, value[:6000])
