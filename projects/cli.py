"""`llmops pipeline run|compile|submit`: one pipeline definition, two runners (MLflow Projects here; Kubeflow /
Vertex AI Pipelines where the data is)."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import typer

from llmops.cli_support import TrackingUri, blank_to_none, echo, setting_option, start

pipeline_app = typer.Typer(no_args_is_help=True)

RUN_TARGETS = ("mlflow", "kfp-local")
COMPILE_TARGETS = ("kfp",)
SUBMIT_TARGETS = ("vertex",)
Params = typer.Option(None, "--param", "-P", metavar="NAME=VALUE",
                      help="A pipeline parameter (any parameter of an MLproject step; repeatable).")


def _target(value: str, allowed: tuple[str, ...]) -> str:
    from llmops.errors import ConfigError

    if value not in allowed:
        raise ConfigError(f"unknown target {value!r}: choose {' or '.join(allowed)}")
    return value


def _extra_params(args: list[str]) -> dict[str, str]:
    """`--name value` / `--name=value` for pipeline parameters without a flag of their own: `mlflow run . -P x=1`
    passes a parameter that `main` does not declare this way."""
    from projects.pipeline_definition import DefinitionError

    out, i = {}, 0
    while i < len(args):
        word = args[i]
        if not word.startswith("--") or len(word) < 3:
            raise DefinitionError(f"unexpected argument {word!r}")
        name, sep, value = word[2:].partition("=")
        if not sep:
            if i + 1 >= len(args):
                raise DefinitionError(f"{word} needs a value")
            value, i = args[i + 1], i + 1
        out[name.replace("-", "_")] = value
        i += 1
    return out


def _print(result: dict, as_json: bool, lines: list[str]) -> None:
    if as_json:
        echo(json.dumps(result, indent=2, sort_keys=True))
    else:
        for line in lines:
            echo(line)


@pipeline_app.command("run", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def pipeline_command(
    ctx: typer.Context,
    tag_pattern: str = setting_option("data.tag_pattern", "Regex over tags."),
    answer_date_cutoff: str = setting_option("data.answer_date_cutoff", "Answer date cutoff YYYY-MM-DD, or none."),
    limit: str = setting_option("data.limit", "Maximum pairs."),
    eval_percent: str = setting_option("data.eval_percent", "Eval split percent."),
    test_percent: str = setting_option("dataprep.test_percent", "Test split percent, 0-50."),
    backend: str = setting_option("tuning.backend", "Tuning backend: local, hf, vertex or openai_compat."),
    base_model: str = setting_option("tuning.hf.base_model_path, tuning.vertex.base_model",
                                     "hf: base model directory; vertex: Gemini id."),
    epochs: str = setting_option("tuning.hf.epochs, tuning.vertex.epochs", "hf/vertex: training epochs."),
    vectorizer: str = setting_option("backend.vectorizer", "tfidf or minilm."),
    abstain_value: str = setting_option("backend.abstain_value", "Utility of abstaining."),
    model_name: str = setting_option("model.registered_name", "Registered model name."),
    promote_to: str = typer.Option("staging", help="Alias to promote to when the gates pass."),
    params: list[str] = Params,
    target: str = typer.Option("mlflow", help="mlflow (child runs via MLflow Projects) or kfp-local (the compiled "
                               "KFP pipeline on this machine with kfp.local; needs the kfp extra)."),
    template: Path = typer.Option(None, help="kfp-local: a compiled pipeline YAML (default: compile one now)."),  # noqa: B008
    kfp_cache: bool = typer.Option(False, "--kfp-cache/--no-kfp-cache", help="kfp-local: use kfp.local's cache "
                                   "(keyed on the MLflow step keys of data, tune and evaluate)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON (stdout holds nothing else)."),
    tracking_uri: str = TrackingUri,
) -> None:
    """Run prepare_data -> tune -> evaluate -> register -> promote, reusing unchanged steps: as MLflow child runs
    (default), or as the compiled KFP pipeline with kfp.local (`--target kfp-local`)."""
    from llmops.cli_support import settings_for
    from projects.pipeline_definition import check_parameters, parse_assignments

    _target(target, RUN_TARGETS)
    explicit = check_parameters({**_extra_params(list(ctx.args)), **parse_assignments(params or [])})
    # --base-model and --epochs mean the chosen backend's keys; the backend may come from the settings.
    is_vertex = (blank_to_none(backend) or settings_for(**{"tuning.backend": None}).tuning.backend) == "vertex"
    settings = start(**{
        "data.tag_pattern": tag_pattern, "data.answer_date_cutoff": answer_date_cutoff, "data.limit": limit,
        "data.eval_percent": eval_percent, "dataprep.test_percent": test_percent, "tuning.backend": backend,
        "tuning.vertex.base_model" if is_vertex else "tuning.hf.base_model_path": base_model,
        "tuning.vertex.epochs" if is_vertex else "tuning.hf.epochs": epochs, "backend.vectorizer": vectorizer,
        "backend.abstain_value": abstain_value, "model.registered_name": model_name,
        "mlflow.tracking_uri": tracking_uri,
    })
    alias = blank_to_none(promote_to) or "staging"
    if target == "kfp-local":
        flags = {"tag_pattern": tag_pattern, "answer_date_cutoff": answer_date_cutoff, "limit": limit,
                 "eval_percent": eval_percent, "test_percent": test_percent, "backend": backend,
                 "base_model": base_model, "epochs": epochs, "vectorizer": vectorizer,
                 "abstain_value": abstain_value, "model_name": model_name}
        values = {**{k: v for k, v in flags.items() if blank_to_none(v) is not None}, **explicit,
                  "promote_to": alias}
        outcome = _run_kfp_local(settings, values, template, kfp_cache)
    else:
        from projects.pipeline import run_pipeline

        with _stdout_to_stderr(as_json):  # the steps' own output too: stdout keeps only the JSON
            outcome = run_pipeline(settings, promote_to=alias, log=echo if not as_json else _stderr, params=explicit)
    _print(outcome, as_json,
           [f"model: models:/{outcome['model_name']}@{outcome['alias']} (version {outcome['version']})"])


@contextlib.contextmanager
def _stdout_to_stderr(enabled: bool) -> Iterator[None]:
    """File descriptor 1 pointed at stderr while child processes (the steps) run."""
    if not enabled:
        yield
        return
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _stderr(message: str) -> None:
    typer.echo(message, err=True)


def _run_kfp_local(settings, values: dict[str, str], template: Path | None, cache: bool) -> dict:
    """The compiled pipeline under kfp.local; the flags given to `run` are its parameter values (its tasks are
    new processes: they read the settings from the environment, not from this command line). With the cache on,
    task outputs and the cache live in .llmops/kfp-local, so the next run can hit it."""
    import tempfile

    from llmops.settings import load_settings
    from projects.pipeline_kfp import compile_pipeline, run_local

    with tempfile.TemporaryDirectory(prefix="llmops-kfp-local-") as folder:
        if template is None:  # kfp.local runs every task with this interpreter: the image is only a name
            compiled = load_settings({"pipeline": {"image": settings.pipeline.image or "local",
                                                   "tracking_uri": settings.mlflow.tracking_uri}})
            template = Path(folder) / "pipeline.yaml"
            compile_pipeline(compiled, template)
        root = Path(".llmops") / "kfp-local" if cache else Path(folder) / "root"
        outputs = run_local(template, values, root, enable_caching=cache)
    return {"model_name": outputs["model_name"], "version": outputs["model_version"], "alias": outputs["alias"],
            "run_id": outputs["run_id"], "target": "kfp-local"}


@pipeline_app.command("compile")
def compile_command(
    target: str = typer.Option("kfp", help="kfp: a KFP v2 pipeline YAML (Kubeflow Pipelines, Vertex AI Pipelines)."),
    output: Path = typer.Option(Path("pipeline.yaml"), help="Where the compiled YAML is written."),  # noqa: B008
    image: str = setting_option("pipeline.image", "Container image every step runs in."),
    pipeline_tracking_uri: str = setting_option("pipeline.tracking_uri", "Tracking server the steps report to "
                                                "(default: mlflow.tracking_uri).", "--pipeline-tracking-uri"),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    tracking_uri: str = TrackingUri,
) -> None:
    """Compile the pipeline definition (steps and parameters from MLproject) to a KFP v2 YAML; nothing runs."""
    from llmops.cli_support import settings_for
    from projects.pipeline_kfp import compile_pipeline

    _target(target, COMPILE_TARGETS)
    settings = settings_for(**{"pipeline.image": image, "pipeline.tracking_uri": pipeline_tracking_uri,
                               "mlflow.tracking_uri": tracking_uri})
    result = compile_pipeline(settings, output)
    _print(result, as_json, [f"compiled {result['output']} (definition {result['definition_digest']}, code "
                             f"{result['code_digest']}, image {result['image']}, tracking {result['tracking_uri']})",
                             f"parameters: {', '.join(result['parameters'])}"])


@pipeline_app.command("submit")
def submit_command(
    target: str = typer.Option("vertex", help="vertex: Vertex AI Pipelines (project, region, pipeline_root and "
                               "service account from the settings pipeline.vertex.* and the environment)."),
    template: Path = typer.Option(Path("pipeline.yaml"), help="The compiled pipeline YAML."),  # noqa: B008
    params: list[str] = Params,
    schedule: str = typer.Option(None, help="A cron expression (e.g. '0 3 * * 1'): create a schedule that submits "
                                 "the pipeline at those times instead of one job now."),
    wait: bool = typer.Option(False, "--wait/--no-wait", help="Wait for the job, printing a progress line per poll."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Submit the compiled YAML to Vertex AI Pipelines (`google.cloud.aiplatform.PipelineJob`) and record the job
    as tags on the pipeline's MLflow parent run."""
    from llmops.cli_support import settings_for
    from projects.pipeline_definition import check_parameters, parse_assignments
    from projects.pipeline_vertex import submit_pipeline

    _target(target, SUBMIT_TARGETS)
    explicit = check_parameters(parse_assignments(params or []))
    settings = settings_for()
    result = submit_pipeline(settings, template, explicit, schedule=schedule, wait=wait,
                             progress=_stderr if as_json else echo)
    lines = [f"{'schedule' if schedule else 'pipeline job'}: {result['name']}",
             f"MLflow run: {result['run_id']} (tag llmops.vertex.{'schedule' if schedule else 'pipeline_job'})"]
    if result.get("state"):
        lines.append(f"state: {result['state']}")
    if result.get("console_url"):
        lines.append(f"console: {result['console_url']}")
    _print(result, as_json, lines)
