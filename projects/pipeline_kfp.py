"""The KFP v2 runner of the pipeline definition: `llmops pipeline compile --target kfp` writes a pipeline YAML that
Kubeflow Pipelines, Vertex AI Pipelines and `kfp.local` run, with one lightweight Python component per step.

Every task runs the same code as `mlflow run .`: the step is the MLproject entry point, started through
`projects.pipeline.Driver.step` (an MLflow run of the step, reused when a FINISHED run has the same key). Steps hand
over MLflow run ids and `runs:/` / `gs://` URIs, never file contents. The image every task runs in, the tracking server
they report to and extra environment are settings (`pipeline.*`), written into the YAML; credentials never are.

Caching agrees with MLflow's step reuse: a cached step (data, tune, evaluate) takes its MLflow step key as an input,
computed by a small uncached `<step>-key` task from the step's inputs, the settings sections it reads and the code
digest, so KFP's cache key changes exactly when the step key does (a settings change reruns the step on KFP too; a
rerun with the same key is a cache hit). register and promote are never cached: whether a finished run still counts
depends on the registry (the version still exists, the alias still points at it), which MLflow's reuse checks.

The compiled file is stamped with the definition digest (pipeline description) and the code digest; `submit`
refuses a file from another version of the definition, and the tasks refuse an image holding other code.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from llmops.errors import ConfigError
from llmops.settings import Settings
from projects.pipeline_definition import (
    STEPS,
    Step,
    definition_digest,
    entry_points,
    pipeline_name_of,
    pipeline_parameters,
    step_named,
)

PIPELINE_NAME = "llmops"
CACHED_STEPS = ("prepare_data", "tune", "evaluate")  # outputs depend only on the step key
_STAMP = re.compile(r"definition ([0-9a-f]{16}), code ([0-9a-f]{16})")
_LOCAL_SCHEMES = ("sqlite:", "file:")


class CompiledFileError(ConfigError):
    """A compiled pipeline file that is missing, not ours, or from another version of the definition."""


def _ident(name: str) -> str:
    return re.sub(r"\W", "_", name)


def _task_name(step: str) -> str:
    return step.replace("_", "-")


def component_source(image: str, digest: str, code: str) -> str:
    """Python source of the components and the pipeline function, generated from the definition: a parameter
    added to MLproject becomes a component input and a pipeline parameter without an edit here."""
    eps = entry_points()
    params = pipeline_parameters()
    lines = ["from typing import NamedTuple", "", "from kfp import dsl", "",
             "from projects.pipeline_kfp import configure_task", "", f"IMAGE = {image!r}", ""]

    def component(name: str, args: list[str], returns: str, body: list[str]) -> None:
        lines.extend(["@dsl.component(base_image=IMAGE, install_kfp_package=False)",
                      f"def {name}({', '.join(f'{a}: str' for a in args)}) -> {returns}:",
                      *[f"    {line}" for line in body], "", ""])

    def outputs_type(names: list[str]) -> str:
        return "NamedTuple('Outputs', [" + ", ".join(f"({n!r}, str)" for n in names) + "])"

    component("start", ["parent_run_id", "definition_digest", "code_digest"], "str",
              ["from projects.pipeline_kfp import start_task",
               "return start_task(parent_run_id, definition_digest, code_digest)"])
    for step in STEPS:
        args = [p.name for p in eps[step.name].parameters]
        values = "{" + ", ".join(f"{a!r}: {a}" for a in args) + "}"
        fields = [o.name for o in step.outputs] + ["step_key"]
        if step.name in CACHED_STEPS:
            component(f"{step.name}_key", [*args, "parent_run_id"], "str",
                      ["from projects.pipeline_kfp import key_task",
                       f"return key_task({step.name!r}, {values}, parent_run_id)"])
            extra, extra_value = "step_key", "step_key=step_key"
        else:
            extra, extra_value = "parent_run_id", "parent_run_id=parent_run_id"
        component(step.name, [*args, extra], outputs_type(fields),
                  ["from projects.pipeline_kfp import step_task",
                   f"out = step_task({step.name!r}, {values}, {extra_value})",
                   f"return tuple(out[name] for name in {fields!r})"])
    run_args = [f"{s.name}_run_id" for s in STEPS]
    component("finish", ["parent_run_id", *run_args],
              outputs_type(["model_name", "model_version", "alias", "run_id"]),
              ["from projects.pipeline_kfp import finish_task",
               "out = finish_task(parent_run_id, {" + ", ".join(f"{s.name!r}: {s.name}_run_id" for s in STEPS) + "})",
               "return out['model_name'], out['model_version'], out['alias'], out['run_id']"])

    signature = ", ".join(f"{_ident(n)}: str = {p.default!r}" for n, p in params.items())
    lines.extend([f"@dsl.pipeline(name={PIPELINE_NAME!r}, description={description(digest, code)!r})",
                  f"def pipeline({signature}, parent_run_id: str = '') -> "
                  f"{outputs_type(['model_name', 'model_version', 'alias', 'run_id'])}:",
                  f"    start_ = start(parent_run_id=parent_run_id, definition_digest={digest!r}, "
                  f"code_digest={code!r})",
                  "    configure_task(start_, cache=False)"])
    for step in STEPS:
        args = []
        for p in eps[step.name].parameters:
            if p.name in step.wires:
                source, output = step.wires[p.name]
                args.append(f"{p.name}={source}_.outputs[{output!r}]")
            else:
                args.append(f"{p.name}={_ident(pipeline_name_of(step, p.name))}")
        if step.name in CACHED_STEPS:
            lines.append(f"    {step.name}_key_ = {step.name}_key({', '.join(args)}, parent_run_id=start_.output)")
            lines.append(f"    configure_task({step.name}_key_, cache=False, name={_task_name(step.name) + '-key'!r})")
            lines.append(f"    {step.name}_ = {step.name}({', '.join(args)}, step_key={step.name}_key_.output)")
            lines.append(f"    configure_task({step.name}_, cache=True, name={_task_name(step.name)!r})")
        else:
            lines.append(f"    {step.name}_ = {step.name}({', '.join(args)}, parent_run_id=start_.output)")
            lines.append(f"    configure_task({step.name}_, cache=False, name={_task_name(step.name)!r})")
    finish_args = ", ".join(f"{s.name}_run_id={s.name}_.outputs['run_id']" for s in STEPS)
    lines.extend([f"    finish_ = finish(parent_run_id=start_.output, {finish_args})",
                  "    configure_task(finish_, cache=False)",
                  "    return finish_.outputs", ""])
    return "\n".join(lines)


def description(digest: str, code: str) -> str:
    return (f"The llmops loop (prepare_data -> tune -> evaluate -> register -> promote), compiled by `llmops pipeline "
            f"compile`: definition {digest}, code {code}.")


# Environment every task gets, set by `compile` (module state: the generated pipeline function reads it).
_TASK_ENV: dict[str, str] = {}


def configure_task(task: Any, cache: bool, name: str | None = None) -> None:
    """Caching, display name and the compiled environment of one task."""
    task.set_caching_options(cache)
    if name:
        task.set_display_name(name)
    for key, value in _TASK_ENV.items():
        task.set_env_variable(key, value)


def task_environment(settings: Settings) -> dict[str, str]:
    """What the tasks need to find the tracking server and experiment; refuses credentials (they would be written
    into the YAML): tracking servers take them from the task's environment (MLFLOW_TRACKING_USERNAME / _PASSWORD
    from a secret) or the service account's identity."""
    from llmops.secrets import is_secret_name, mask_url

    uri = settings.pipeline.tracking_uri or settings.mlflow.tracking_uri
    if mask_url(uri) != uri:
        raise ConfigError(f"pipeline.tracking_uri {mask_url(uri)} holds credentials, which would be written into the "
                          "compiled YAML: give the steps MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD from a "
                          "secret instead")
    for key in settings.pipeline.env:
        if is_secret_name(key) or mask_url(settings.pipeline.env[key]) != settings.pipeline.env[key]:
            raise ConfigError(f"pipeline.env.{key} looks like a secret, which would be written into the compiled YAML")
    env = {"MLFLOW_TRACKING_URI": uri, "LLMOPS_MLFLOW__TRACKING_URI": uri,
           "LLMOPS_MLFLOW__EXPERIMENT_NAME": settings.mlflow.experiment_name}
    if settings.mlflow.registry_uri:
        env["MLFLOW_REGISTRY_URI"] = settings.mlflow.registry_uri
    return {**env, **settings.pipeline.env}


def _kfp():
    try:
        import kfp
    except ImportError as exc:
        raise ConfigError("the KFP runner needs the kfp extra: pip install -c requirements.lock -e '.[kfp]'") from exc
    return kfp


def compile_pipeline(settings: Settings, output: Path) -> dict[str, Any]:
    """Compile the definition to a KFP v2 YAML at `output` (written to a temporary file, then renamed)."""
    _kfp()
    from kfp import compiler

    from projects.pipeline_definition import code_digest

    image = settings.pipeline.image
    if not image:
        raise ConfigError("pipeline.image is not set: the container image every step runs in (this repository with "
                          "the kfp extra, see docs/pipeline.md); set it in llmops.yaml or LLMOPS_PIPELINE__IMAGE")
    env = task_environment(settings)
    digest, code = definition_digest(), code_digest()
    output = Path(output)
    if output.is_dir():
        raise ConfigError(f"--output {output} is a directory: give a file name such as pipeline.yaml")
    if not output.parent.exists():
        raise ConfigError(f"--output {output}: folder {output.parent} does not exist")
    with tempfile.TemporaryDirectory(prefix="llmops-kfp-") as folder:
        module_path = Path(folder) / "llmops_pipeline_components.py"
        module_path.write_text(component_source(image, digest, code), encoding="utf-8")
        spec = importlib.util.spec_from_file_location("llmops_pipeline_components", module_path)
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        _TASK_ENV.clear()
        _TASK_ENV.update(env)
        try:
            spec.loader.exec_module(module)  # type: ignore[union-attr]
            tmp = output.with_name(f".{output.stem}.{os.getpid()}.tmp.yaml")
            compiler.Compiler().compile(module.pipeline, str(tmp))
        finally:
            _TASK_ENV.clear()
        os.replace(tmp, output)
    return {"output": str(output), "target": "kfp", "definition_digest": digest, "code_digest": code,
            "image": image, "tracking_uri": env["MLFLOW_TRACKING_URI"],
            "parameters": {name: p.default for name, p in pipeline_parameters().items()}}


def read_compiled(path: Path) -> dict[str, Any]:
    """A compiled pipeline file, checked to be ours and from this version of the definition."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise CompiledFileError(f"compiled pipeline {path} does not exist: run `llmops pipeline compile --target kfp "
                                f"--output {path}` first")
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise CompiledFileError(f"{path} is not a pipeline YAML: {str(exc).splitlines()[0]}") from exc
    info = (spec or {}).get("pipelineInfo") if isinstance(spec, dict) else None
    match = _STAMP.search(str((info or {}).get("description", "")))
    if not info or info.get("name") != PIPELINE_NAME or not match:
        raise CompiledFileError(f"{path} was not compiled by `llmops pipeline compile` (no definition stamp)")
    compiled, current = match.group(1), definition_digest()
    if compiled != current:
        raise CompiledFileError(f"{path} was compiled from another version of the pipeline definition (definition "
                                f"{compiled}, this checkout {current}): compile it again")
    return {"spec": spec, "definition_digest": compiled, "code_digest": match.group(2),
            "parameters": {name: value.get("defaultValue") for name, value in
                           spec["root"]["inputDefinitions"]["parameters"].items()},
            "tracking_uri": _compiled_env(spec).get("MLFLOW_TRACKING_URI"),
            "experiment_name": _compiled_env(spec).get("LLMOPS_MLFLOW__EXPERIMENT_NAME")}


def _compiled_env(spec: dict[str, Any]) -> dict[str, str]:
    executor = spec["deploymentSpec"]["executors"].get("exec-start", {})
    return {e["name"]: e["value"] for e in executor.get("container", {}).get("env", [])}


def is_local_store(uri: str | None) -> bool:
    from llmops.cli_support import local_store_path

    return not uri or uri.startswith(_LOCAL_SCHEMES) or local_store_path(uri) is not None


# --- what runs inside each task -------------------------------------------------------------------------------------


def _task_context():
    """Settings, experiment and a driver, as `mlflow run .` would set them up for a step."""
    from llmops.settings import load_settings
    from llmops.tracking import configure_mlflow
    from projects.pipeline import Driver, export_settings

    settings = load_settings()
    experiment_id = configure_mlflow(settings)
    export_settings(settings)
    return settings, experiment_id, Driver


def _split(step: Step, values: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    explicit = {pipeline_name_of(step, k): v for k, v in values.items() if k not in step.wires}
    wired = {k: v for k, v in values.items() if k in step.wires}
    return explicit, wired


def start_task(parent_run_id: str, compiled_definition: str, compiled_code: str) -> str:
    """First task: refuse an image holding another definition or other code, then open (or adopt) the pipeline's
    parent run. It carries no owner process (its tasks run in many containers), so `llmops gc` leaves it alone."""
    from mlflow.tracking import MlflowClient

    from projects.pipeline_definition import code_digest

    if definition_digest() != compiled_definition or code_digest() != compiled_code:
        raise ConfigError(f"this image holds definition {definition_digest()} / code {code_digest()}, the pipeline "
                          f"was compiled from definition {compiled_definition} / code {compiled_code}: build the "
                          "image from the commit you compile, or compile again")
    settings, experiment_id, _ = _task_context()
    client = MlflowClient()
    if parent_run_id:
        client.get_run(parent_run_id)  # exists (submit created it), else MLflow says so
        return parent_run_id
    run = client.create_run(experiment_id, run_name="pipeline kfp",
                            tags={"llmops.runner": "kfp", "llmops.definition_digest": compiled_definition})
    print(f"parent run {run.info.run_id}")
    return run.info.run_id


def key_task(step_name: str, values: Mapping[str, str], parent_run_id: str) -> str:
    """The MLflow step key of a cached step, computed where it runs (the settings of its container), so that KFP's
    cache key, which includes it, changes exactly when MLflow's reuse key does."""
    from projects.pipeline_definition import code_digest, key_of, step_settings, step_values

    step = step_named(step_name)
    settings, _, _ = _task_context()
    explicit, wired = _split(step, values)
    key = key_of(step, step_values(step, settings, explicit, wired), step_settings(), code_digest())
    print(f"[{step_name}] step key {key}")
    return key


def step_task(step_name: str, values: Mapping[str, str], step_key: str = "", parent_run_id: str = "") -> dict:
    """One step, as the MLflow runner runs it: reuse a FINISHED run with the key, else `mlflow.projects.run`."""
    step = step_named(step_name)
    settings, experiment_id, driver_cls = _task_context()
    driver = driver_cls(settings, experiment_id, log=print, parent_run_id=parent_run_id or None)
    explicit, wired = _split(step, values)
    try:
        run, outputs, params = driver.run_defined(step, explicit, wired)
    except Exception:
        if parent_run_id:
            from mlflow.tracking import MlflowClient

            MlflowClient().set_terminated(parent_run_id, "FAILED")
        raise
    if step_key and outputs["step_key"] != step_key:
        raise ConfigError(f"[{step_name}] step key {outputs['step_key']} differs from its key task's {step_key}: the "
                          "two tasks saw different settings")
    for name, value in outputs.items():
        print(f"[{step_name}] {name}: {value}")
    return outputs


def finish_task(parent_run_id: str, run_ids: Mapping[str, str]) -> dict[str, str]:
    """Last task: the parent run gets the tags `mlflow run .` ends with; step runs made by this pipeline run are
    nested under it, reused ones recorded as `llmops.reused.<step>`."""
    from mlflow.tracking import MlflowClient

    from projects.pipeline import PARENT_RUN_TAG, summary_tags
    from projects.pipeline_definition import outputs_of

    _task_context()
    client = MlflowClient()
    produced, resolved = {}, {}
    for step in STEPS:
        run = client.get_run(run_ids[step.name])
        produced[step.name] = outputs_of(step, run)
        resolved[step.name] = dict(run.data.params)
        owner = run.data.tags.get(PARENT_RUN_TAG)
        if owner is None:
            client.set_tag(run.info.run_id, PARENT_RUN_TAG, parent_run_id)
        elif owner != parent_run_id:
            client.set_tag(parent_run_id, f"llmops.reused.{step.name}", run.info.run_id)
    tags = summary_tags(produced, resolved)
    for key, value in tags.items():
        client.set_tag(parent_run_id, key, value)
    client.set_terminated(parent_run_id, "FINISHED")
    return {"model_name": tags["llmops.model_name"], "model_version": tags["llmops.model_version"],
            "alias": resolved["promote"]["alias"], "run_id": parent_run_id}


# --- kfp.local ------------------------------------------------------------------------------------------------------


def run_local(template: Path, parameter_values: Mapping[str, str], pipeline_root: Path,
              enable_caching: bool = False) -> dict[str, str]:
    """Run a compiled pipeline YAML on this machine with `kfp.local`'s SubprocessRunner (each task a subprocess of
    this interpreter; no cluster, no Docker)."""
    _kfp()
    import kfp.local
    from kfp import components

    info = read_compiled(template)
    unknown = set(parameter_values) - set(info["parameters"])
    if unknown:
        raise ConfigError(f"{', '.join(sorted(unknown))}: not a parameter of {template}")
    kfp.local.init(runner=kfp.local.SubprocessRunner(use_venv=False), pipeline_root=str(pipeline_root),
                   raise_on_error=True, enable_caching=enable_caching,
                   cache_root=str(Path(pipeline_root) / ".kfp_cache"))
    pipeline = components.load_component_from_file(str(template))
    bin_dir = str(Path(sys.executable).parent)  # lightweight components call `python3`: this interpreter's
    if os.environ.get("PATH", "").split(os.pathsep)[0] != bin_dir:
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    import contextlib

    try:
        with contextlib.redirect_stdout(sys.stderr):  # the tasks' logs are progress: stdout keeps the result
            task = pipeline(**dict(parameter_values))
    except RuntimeError as exc:
        from projects.pipeline import StepFailedError

        raise StepFailedError(f"kfp.local: {str(exc).splitlines()[0]}") from exc
    return dict(task.outputs)
