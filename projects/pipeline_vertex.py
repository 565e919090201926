"""`llmops pipeline submit --target vertex`: the compiled YAML on Vertex AI Pipelines through
`google.cloud.aiplatform.PipelineJob` (one job now, or a schedule with `--schedule CRON`).

Everything is checked before anything is created: the file is ours and from this version of the definition, the
project and `pipeline_root` (gs://) are set, the parameters are the pipeline's, and the steps' tracking server is one
they can reach from Google Cloud (not a local SQLite file). Project, region, bucket and service account come from the
settings (`pipeline.vertex.*`, i.e. llmops.yaml or LLMOPS_PIPELINE__VERTEX__*) and the environment
(`GOOGLE_CLOUD_PROJECT`, Application Default Credentials), never from the YAML.

A job gets an MLflow parent run in the steps' tracking store before it is submitted (its id is the job's
`parent_run_id` parameter, so the steps nest under it); the run records the job's resource name and console link as
tags. It carries no owner process, so `llmops gc` leaves it alone while the job runs; the job's last task ends it.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from llmops.errors import BackendError, ConfigError
from llmops.settings import Settings
from projects.pipeline_kfp import is_local_store, read_compiled

JOB_TAG = "llmops.vertex.pipeline_job"
SCHEDULE_TAG = "llmops.vertex.schedule"
_CRON = re.compile(r"^(TZ=[\w/+-]+ |CRON_TZ=[\w/+-]+ )?(\S+ ){4}\S+$")
_DONE = {"PIPELINE_STATE_SUCCEEDED", "PIPELINE_STATE_FAILED", "PIPELINE_STATE_CANCELLED"}


def vertex_target(settings: Settings) -> dict[str, str | None]:
    """Project, region, pipeline_root and service account; one line naming what is missing."""
    cfg = settings.pipeline.vertex
    project = cfg.project or os.environ.get("GOOGLE_CLOUD_PROJECT") or os.environ.get("CLOUDSDK_CORE_PROJECT")
    if not project:
        raise ConfigError("no Google Cloud project for Vertex AI Pipelines: set pipeline.vertex.project "
                          "(LLMOPS_PIPELINE__VERTEX__PROJECT) or GOOGLE_CLOUD_PROJECT")
    if not cfg.pipeline_root:
        raise ConfigError("pipeline.vertex.pipeline_root is not set: the gs://bucket/prefix where Vertex AI Pipelines "
                          "keeps the pipeline's outputs (LLMOPS_PIPELINE__VERTEX__PIPELINE_ROOT)")
    if not cfg.pipeline_root.startswith("gs://") or len(cfg.pipeline_root) <= len("gs://"):
        raise ConfigError(f"pipeline.vertex.pipeline_root {cfg.pipeline_root!r} must be a gs://bucket/prefix")
    return {"project": project, "region": cfg.region, "pipeline_root": cfg.pipeline_root,
            "service_account": cfg.service_account}


def console_url(project: str, region: str, job_id: str) -> str:
    return f"https://console.cloud.google.com/vertex-ai/locations/{region}/pipelines/runs/{job_id}?project={project}"


def submit_pipeline(settings: Settings, template: Path, explicit: Mapping[str, str], schedule: str | None = None,
                    wait: bool = False, progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Submit `template` (a YAML from `llmops pipeline compile`); returns the job (or schedule) name, its MLflow
    run and, with `wait`, its final state."""
    info = read_compiled(template)
    target = vertex_target(settings)
    unknown = sorted(set(explicit) - set(info["parameters"]))
    if unknown:
        raise ConfigError(f"{', '.join(unknown)}: not a parameter of {template}")
    tracking = info["tracking_uri"]
    if is_local_store(tracking):
        raise ConfigError(f"{template} was compiled for the tracking store {tracking}, which steps on Vertex AI cannot "
                          "reach: compile with pipeline.tracking_uri set to a tracking server (http(s)://...)")
    if schedule is not None and not _CRON.match(schedule.strip()):
        raise ConfigError(f"--schedule {schedule!r} is not a cron expression (five fields, e.g. '0 3 * * 1', "
                          "optionally after TZ=Area/City)")
    experiment = info["experiment_name"] or settings.mlflow.experiment_name
    values = {k: v for k, v in explicit.items() if v != ""}

    try:
        from google.cloud import aiplatform
    except ImportError as exc:
        raise ConfigError("submitting to Vertex AI needs the gcp extra: pip install -c requirements.lock -e "
                          "'.[gcp]'") from exc
    from mlflow.tracking import MlflowClient

    aiplatform.init(project=target["project"], location=target["region"],
                    api_endpoint=settings.pipeline.vertex.api_endpoint or None,
                    api_transport=settings.pipeline.vertex.api_transport)
    client = MlflowClient(tracking_uri=tracking, registry_uri=tracking)
    experiment_id = _experiment_id(client, experiment)
    tags = {"llmops.runner": "vertex", "llmops.definition_digest": info["definition_digest"],
            "llmops.code_digest": info["code_digest"], "llmops.vertex.project": target["project"],
            "llmops.vertex.region": target["region"], "llmops.vertex.pipeline_root": target["pipeline_root"]}
    display = settings.pipeline.vertex.display_name
    if schedule is not None:
        return _create_schedule(client, experiment_id, tags, template, values, target, display, schedule)

    run = client.create_run(experiment_id, run_name="pipeline vertex", tags=tags)
    job_id = f"{display}-{time.strftime('%Y%m%d%H%M%S')}-{run.info.run_id[:8]}"
    try:
        job = aiplatform.PipelineJob(
            display_name=display, template_path=str(template), job_id=job_id,
            pipeline_root=target["pipeline_root"], parameter_values={**values, "parent_run_id": run.info.run_id},
            enable_caching=None,  # the compiled per-task options: data, tune, evaluate cached on their step keys
            labels={"llmops-mlflow-run": run.info.run_id, "llmops-definition": info["definition_digest"]})
        job.submit(service_account=target["service_account"])
    except Exception as exc:  # the SDK raises google.api_core / auth errors: one line, the run marked FAILED
        client.set_tag(run.info.run_id, "llmops.error", _first_line(exc))
        client.set_terminated(run.info.run_id, "FAILED")
        raise BackendError(f"Vertex AI Pipelines refused the job: {_first_line(exc)}") from exc
    name = job.resource_name
    url = console_url(str(target["project"]), str(target["region"]), name.rsplit("/", 1)[-1])
    client.set_tag(run.info.run_id, JOB_TAG, name)
    client.set_tag(run.info.run_id, "llmops.vertex.console_url", url)
    progress(f"submitted {name}")
    result: dict[str, Any] = {"name": name, "run_id": run.info.run_id, "console_url": url,
                              "parameters": values, "target": "vertex"}
    if wait:
        result["state"] = _wait(job, client, run.info.run_id, settings, progress)
    return result


def _create_schedule(client: Any, experiment_id: str, tags: dict[str, str], template: Path, values: dict[str, str],
                     target: dict[str, str | None], display: str, cron: str) -> dict[str, Any]:
    """A schedule: each of its jobs opens its own parent run (no parent_run_id), this run records the schedule."""
    from google.cloud import aiplatform

    run = client.create_run(experiment_id, run_name="pipeline vertex schedule", tags={**tags, "llmops.cron": cron})
    try:
        job = aiplatform.PipelineJob(display_name=display, template_path=str(template),
                                     pipeline_root=target["pipeline_root"], parameter_values=values,
                                     enable_caching=None)
        created = job.create_schedule(cron=cron, display_name=f"{display}-schedule",
                                      service_account=target["service_account"])
    except Exception as exc:
        client.set_tag(run.info.run_id, "llmops.error", _first_line(exc))
        client.set_terminated(run.info.run_id, "FAILED")
        raise BackendError(f"Vertex AI Pipelines refused the schedule: {_first_line(exc)}") from exc
    client.set_tag(run.info.run_id, SCHEDULE_TAG, created.resource_name)
    client.set_terminated(run.info.run_id, "FINISHED")
    return {"name": created.resource_name, "run_id": run.info.run_id, "cron": cron, "parameters": values,
            "target": "vertex"}


def _wait(job: Any, client: Any, run_id: str, settings: Settings, progress: Callable[[str], None]) -> str:
    """Poll the job, one progress line per poll (its state and each task's); the job's end is the command's."""
    cfg = settings.pipeline.vertex
    started = time.monotonic()
    while True:
        state = job.state.name
        tasks = ", ".join(f"{t.task_name} {t.state.name}" for t in
                          job.gca_resource.job_detail.task_details if t.task_name)
        progress(f"{time.monotonic() - started:6.0f}s {state}" + (f" ({tasks})" if tasks else ""))
        if state in _DONE:
            break
        if time.monotonic() - started > cfg.timeout_s:
            raise BackendError(f"{job.resource_name} still {state} after {cfg.timeout_s:.0f} s "
                               "(pipeline.vertex.timeout_s); it keeps running on Vertex AI")
        time.sleep(cfg.poll_s)
    client.set_tag(run_id, "llmops.vertex.state", state)
    if state != "PIPELINE_STATE_SUCCEEDED":
        if client.get_run(run_id).info.status == "RUNNING":
            client.set_terminated(run_id, "FAILED")
        message = job.gca_resource.error.message or "no error message"
        raise BackendError(f"{job.resource_name} ended {state}: {message}")
    return state


def _experiment_id(client: Any, name: str) -> str:
    experiment = client.get_experiment_by_name(name)
    return experiment.experiment_id if experiment else client.create_experiment(name)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
