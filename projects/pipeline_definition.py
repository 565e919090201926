"""The pipeline, defined once: its steps (MLproject entry points, in order), where each step parameter's value comes
from, what each step hands to the next, and the key that decides whether a finished run of the step can be reused.

Both runners read this module and nothing else about the pipeline's shape: the MLflow driver (`projects/pipeline.py`,
child runs through `mlflow.projects.run`) and the KFP compiler (`projects/pipeline_kfp.py`, one task per step).

- **Step parameters** are read from `MLproject`, the one place they are declared. A parameter is either *wired* (the
  output of an earlier step, e.g. `tune.train_uri` <- `prepare_data.train_uri`) or a *pipeline parameter* of the same
  name (`promote.alias` is the pipeline's `promote_to`), whose default is the MLproject default. Adding a parameter to
  an entry point in MLproject makes it a pipeline parameter of both runners; nothing here changes.
- **Values.** A pipeline parameter given explicitly (`-P name=value`, a KFP/Vertex parameter value) wins; otherwise it
  is resolved from the settings (the map below, or the `setting_option` key of the step command's flag), otherwise
  the MLproject default is passed ('' = "the step reads its settings").
- **Outputs** are MLflow locations, never file contents: a run id, or a `runs:/` / `gs://` URI read from a run tag.
- **The step key** hashes the entry point, its resolved parameters, the code digest and the settings sections (and,
  for the data step, the local warehouse files) the step reads beyond its parameters. When the data step folds the
  feedback store in (`include_feedback`, or `feedback.include_in_dataset`), the key also hashes the store's
  fingerprint (`projects.data.feedback.feedback_fingerprint`) and the feedback settings: new feedback re-prepares the
  data instead of reusing a version without it. The MLflow driver and every KFP task compute it with `step_key`
  below, so a step run by one runner is reused by the other.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from llmops.errors import ConfigError
from llmops.settings import Settings, repo_root

STEP_KEY_TAG = "llmops.step_key"
LAUNCHER = "projects/run-llmops"  # how MLproject commands call `python -m llmops.cli`
CODE_DIRS = ("llmops", "projects", "prompts", "backends", "evaluation", "registry")
_CODE_SUFFIXES = {".py", ".sql", ".yaml", ".yml"}


@dataclass(frozen=True)
class Output:
    """A value a step hands on: its run id (`tag=None`) or a tag of its run."""

    name: str
    tag: str | None = None


@dataclass(frozen=True)
class Step:
    name: str  # the MLproject entry point
    wires: Mapping[str, tuple[str, str]] = field(default_factory=dict)  # parameter -> (earlier step, its output)
    outputs: tuple[Output, ...] = (Output("run_id"),)
    sections: tuple[str, ...] = ()  # settings sections read beyond the parameters: part of the reuse key
    fingerprint_warehouse: bool = False  # local warehouse files (size, mtime) are part of the reuse key
    still_valid: str | None = None  # "version": the registered version still exists; "alias": it still holds it
    renames: Mapping[str, str] = field(default_factory=dict)  # parameter -> the pipeline parameter it reads
    feedback_switch: str | None = None  # the parameter that folds the feedback store in: its content joins the key


STEPS: tuple[Step, ...] = (
    Step("prepare_data",
         outputs=(Output("run_id"), Output("train_uri", "llmops.train_uri"), Output("eval_uri", "llmops.eval_uri"),
                  Output("dataset_digest", "llmops.dataset_digest")),
         sections=("data", "dataprep", "warehouse", "prompt"), fingerprint_warehouse=True,
         feedback_switch="include_feedback"),
    Step("tune", wires={"train_uri": ("prepare_data", "train_uri"), "eval_uri": ("prepare_data", "eval_uri")},
         sections=("tuning", "backend", "chain")),
    Step("evaluate", wires={"tune_run_id": ("tune", "run_id"), "eval_uri": ("prepare_data", "eval_uri")},
         sections=("evaluation", "chain", "backend")),
    Step("register", wires={"tune_run_id": ("tune", "run_id"), "eval_run_id": ("evaluate", "run_id")},
         outputs=(Output("run_id"), Output("model_version", "llmops.model_version")),
         sections=("chain", "registry"), still_valid="version"),
    Step("promote", wires={"version": ("register", "model_version")}, renames={"alias": "promote_to"},
         still_valid="alias"),
)
STEP_NAMES = tuple(step.name for step in STEPS)


# Pipeline parameters resolved from the settings when not given explicitly. A callable returns the value to pass,
# or None for "pass the MLproject default" (a knob of another backend). Parameters missing here fall back to the
# settings key of the step command's flag (`setting_option`), then to the MLproject default.
def _backend_only(backend: str, value: Callable[[Settings], Any]) -> Callable[[Settings], Any]:
    return lambda s: value(s) if s.tuning.backend == backend else None


def _either(**by_backend: Callable[[Settings], Any]) -> Callable[[Settings], Any]:
    return lambda s: by_backend[s.tuning.backend](s) if s.tuning.backend in by_backend else None


SETTING_OF: dict[str, Callable[[Settings], Any]] = {
    "tag_pattern": lambda s: s.data.tag_pattern,
    "answer_date_cutoff": lambda s: s.data.answer_date_cutoff,
    "limit": lambda s: s.data.limit,
    "eval_percent": lambda s: s.data.eval_percent,
    "test_percent": lambda s: s.dataprep.test_percent,
    "question_date_from": lambda s: s.dataprep.question_date_from or "",
    "question_date_to": lambda s: s.dataprep.question_date_to or "",
    "backend": lambda s: s.tuning.backend,
    "vectorizer": _backend_only("local", lambda s: s.backend.vectorizer),
    "abstain_value": _backend_only("local", lambda s: s.backend.abstain_value),
    "base_model": _either(hf=lambda s: s.tuning.hf.base_model_path or "", vertex=lambda s: s.tuning.vertex.base_model),
    "epochs": _either(hf=lambda s: s.tuning.hf.epochs, vertex=lambda s: s.tuning.vertex.epochs),
    "seed": _backend_only("hf", lambda s: s.tuning.seed),
    "gcs_uri": _backend_only("vertex", lambda s: s.tuning.vertex.gcs_uri or ""),
    "model_name": lambda s: s.model.registered_name,
    "include_feedback": lambda s: str(s.feedback.include_in_dataset).lower(),
}


class DefinitionError(ConfigError):
    """The definition and MLproject disagree, or a pipeline parameter is unknown."""


@dataclass(frozen=True)
class Parameter:
    name: str
    default: str | None  # None: required (an MLproject parameter without a default)
    type: str = "string"


@dataclass(frozen=True)
class EntryPoint:
    name: str
    parameters: tuple[Parameter, ...]
    command: str

    def parameter(self, name: str) -> Parameter:
        return next(p for p in self.parameters if p.name == name)


def mlproject_path(root: Path | None = None) -> Path:
    return (root or repo_root()) / "MLproject"


@lru_cache(maxsize=8)
def _entry_points_of(text: str) -> dict[str, EntryPoint]:
    spec = yaml.safe_load(text) or {}
    out = {}
    for name, entry in (spec.get("entry_points") or {}).items():
        params = []
        for pname, pspec in (entry.get("parameters") or {}).items():
            if isinstance(pspec, dict):
                default = pspec.get("default")
                params.append(Parameter(pname, None if default is None else str(default), pspec.get("type", "string")))
            else:
                params.append(Parameter(pname, None, str(pspec)))
        out[name] = EntryPoint(name, tuple(params), " ".join(str(entry.get("command", "")).split()))
    return out


def entry_points(root: Path | None = None) -> dict[str, EntryPoint]:
    """MLproject's entry points with their parameters (in file order) and commands."""
    return _entry_points_of(mlproject_path(root).read_text(encoding="utf-8"))


def pipeline_name_of(step: Step, parameter: str) -> str:
    return step.renames.get(parameter, parameter)


def pipeline_parameters(root: Path | None = None) -> dict[str, Parameter]:
    """Every step parameter that is not wired, under its pipeline name, with its MLproject default. Checked: each
    step is an entry point, each wire names a declared parameter and an earlier step's output, and a name shared by
    two steps has one default (it is one value: `model_name` of register and promote)."""
    eps = entry_points(root)
    out: dict[str, Parameter] = {}
    produced: dict[str, set[str]] = {}
    for step in STEPS:
        if step.name not in eps:
            raise DefinitionError(f"the pipeline step {step.name} is not an entry point of MLproject")
        declared = {p.name for p in eps[step.name].parameters}
        for parameter, (source, output) in step.wires.items():
            if parameter not in declared:
                raise DefinitionError(f"{step.name}.{parameter} is wired but MLproject does not declare it")
            if output not in produced.get(source, set()):
                raise DefinitionError(f"{step.name}.{parameter} reads {source}.{output}, which no earlier step hands on")
        for p in eps[step.name].parameters:
            if p.name in step.wires:
                continue
            name = pipeline_name_of(step, p.name)
            if p.default is None:
                raise DefinitionError(f"{step.name}.{p.name} has no default in MLproject and no earlier step provides it")
            if name in out and out[name].default != p.default:
                raise DefinitionError(f"pipeline parameter {name} has two defaults in MLproject: "
                                      f"{out[name].default!r} and {p.default!r} ({step.name})")
            out.setdefault(name, Parameter(name, p.default, p.type))
        produced[step.name] = {o.name for o in step.outputs}
    return out


def check_parameters(values: Mapping[str, Any], root: Path | None = None) -> dict[str, str]:
    """Explicit pipeline parameter values, each checked against MLproject; one line naming an unknown one."""
    import difflib

    known = pipeline_parameters(root)
    for name in values:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise DefinitionError(f"{name} is not a parameter of the pipeline (MLproject declares: "
                                  f"{', '.join(sorted(known))}){hint}")
    checked = {k: "" if v is None else str(v) for k, v in values.items()}
    for step in STEPS:  # a switch the step would refuse is refused before anything is created or submitted
        if step.feedback_switch in checked:
            switch_value(step.feedback_switch, checked[step.feedback_switch])
    return checked


def parse_assignments(items: list[str] | tuple[str, ...]) -> dict[str, str]:
    """`-P name=value` pairs (as `mlflow run -P`)."""
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise DefinitionError(f"-P {item!r}: expected NAME=VALUE")
        out[name.strip()] = value
    return out


def definition_digest(root: Path | None = None) -> str:
    """What a compiled pipeline depends on: the steps, their wiring and outputs, and the MLproject entry points they
    run (parameters, defaults, commands). Stamped into a compiled YAML and checked before it is submitted."""
    eps = entry_points(root)
    payload = {
        "steps": [{"name": s.name, "wires": dict(s.wires), "outputs": [(o.name, o.tag) for o in s.outputs],
                   "sections": s.sections, "fingerprint_warehouse": s.fingerprint_warehouse,
                   "still_valid": s.still_valid, "renames": dict(s.renames), "feedback_switch": s.feedback_switch}
                  for s in STEPS],
        "entry_points": {s.name: {"parameters": [(p.name, p.default, p.type) for p in eps[s.name].parameters],
                                  "command": eps[s.name].command} for s in STEPS},
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


# --- values and keys ------------------------------------------------------------------------------------------------


_FLAG_KEYS: dict[str, dict[str, str]] = {}


def _flag_setting_keys(step: Step, root: Path | None = None) -> dict[str, str]:
    """{parameter: settings key} from the step command's flags: `--include-feedback {include_feedback}` in MLproject
    and `setting_option("data.include_feedback", ...)` on `llmops data prepare` -> data.include_feedback."""
    command = entry_points(root)[step.name].command
    if command not in _FLAG_KEYS:
        _FLAG_KEYS[command] = _read_flag_setting_keys(command)
    return _FLAG_KEYS[command]


def _read_flag_setting_keys(command: str) -> dict[str, str]:
    import typer

    from llmops.cli import _register_groups, app

    words = shlex.split(command)
    starts = [i + 1 for i, w in enumerate(words) if w in ("llmops.cli", LAUNCHER)]
    if not starts:
        return {}
    flags = {}
    for i, word in enumerate(words[:-1]):
        match = re.fullmatch(r"\{(\w+)\}", words[i + 1])
        if word.startswith("--") and match:
            flags[word] = match.group(1)
    path = [w for w in words[starts[0]:] if not w.startswith(("-", "{"))][:2]
    if not app.registered_groups:  # `llmops` itself has registered them already
        _register_groups()
    command_obj: Any = typer.main.get_command(app)
    for word in path:
        sub = getattr(command_obj, "commands", {}).get(word)
        if sub is None:
            break
        command_obj = sub
    out = {}
    for param in getattr(command_obj, "params", []):
        key = getattr(param.show_default, "key", None)
        if key and "," in key:  # one of several keys by backend (tune --epochs): SETTING_OF says which
            continue
        for opt in param.opts:
            if key and opt in flags:
                out[flags[opt]] = key
    return out


def _setting_value(settings: Settings, key: str) -> Any:
    value: Any = settings
    for part in key.split("."):
        value = getattr(value, part)
    return value


def step_values(step: Step, settings: Settings, explicit: Mapping[str, str], wired: Mapping[str, str],
                root: Path | None = None) -> dict[str, str]:
    """The parameters one step runs with: wired values, explicit pipeline values, values resolved from the settings;
    a parameter left at its MLproject default is not passed (MLflow fills it in, exactly as `mlflow run -e`)."""
    params: dict[str, str] = {}
    flag_keys: dict[str, str] | None = None
    backend = explicit.get("backend", "")
    if backend and backend != settings.tuning.backend:  # backend-specific knobs follow an explicit backend
        settings = settings.model_copy(update={"tuning": settings.tuning.model_copy(update={"backend": backend})})
    for p in entry_points(root)[step.name].parameters:
        if p.name in step.wires:
            params[p.name] = wired[p.name]
            continue
        name = pipeline_name_of(step, p.name)
        if explicit.get(name, "") != "":
            params[p.name] = explicit[name]
            continue
        if name in SETTING_OF:
            value = SETTING_OF[name](settings)
        else:
            if flag_keys is None:
                flag_keys = _flag_setting_keys(step, root)
            value = _setting_value(settings, flag_keys[p.name]) if p.name in flag_keys else None
        if value is not None:
            params[p.name] = str(value)
        elif p.default not in (None, ""):
            params[p.name] = p.default
    return params


def code_digest(root: Path | None = None) -> str:
    """Hash of the code and definitions the steps run; any edit invalidates reuse."""
    root = root or repo_root()
    hasher = hashlib.sha256(mlproject_path(root).read_bytes())
    for directory in CODE_DIRS:
        for path in sorted((root / directory).rglob("*")):
            if path.suffix in _CODE_SUFFIXES and "__pycache__" not in path.parts:
                hasher.update(str(path.relative_to(root)).encode())
                hasher.update(path.read_bytes())
    return hasher.hexdigest()[:16]


def warehouse_fingerprint(settings: Settings) -> str | None:
    """Size and mtime of each mapped local table; None for BigQuery, whose tables we cannot fingerprint."""
    if settings.warehouse.engine != "duckdb":
        return None
    parts = []
    for name in sorted(settings.warehouse.tables):
        for path in settings.warehouse.table_files(name):  # globs expanded: a new file matched changes it
            stat = path.stat() if path.exists() else None
            parts.append(f"{name}={path}:{stat and stat.st_size}:{stat and stat.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def section_digest(settings: Settings, *sections: str) -> str:
    """Hash of the settings sections a step reads beyond its parameters (e.g. LoRA rank from LLMOPS_* or
    llmops.yaml): changing one reruns the step instead of reusing a stale run."""
    dumped = {name: settings.model_dump(mode="json")[name] for name in sections}
    return hashlib.sha256(json.dumps(dumped, sort_keys=True, default=str).encode()).hexdigest()[:16]


def step_settings() -> Settings:
    """The settings a step process sees: this process's (exported) environment, read in the project directory,
    where MLflow Projects runs every step command. Keys hash these, not the caller's: a path setting resolved
    against the caller's working directory (e.g. the judge cache) would otherwise give the MLflow driver started
    by `mlflow run .` (in the project) and a KFP task (anywhere) different keys for the same step."""
    import contextlib

    from llmops.settings import load_settings

    with contextlib.chdir(repo_root()):
        return load_settings()


def switch_value(name: str, value: str) -> bool | None:
    """A true/false parameter as the step's setting parses it (pydantic's bool); None for '' (take the setting)."""
    value = str(value).strip()
    if value in ("", "''"):
        return None
    from pydantic import TypeAdapter, ValidationError

    try:
        return TypeAdapter(bool).validate_python(value)
    except ValidationError:
        raise DefinitionError(f"{name}={value!r}: expected true or false") from None


def feedback_included(step: Step, params: Mapping[str, str], settings: Settings) -> bool:
    """Whether this run of `step` folds the feedback store in: its switch parameter, else
    `feedback.include_in_dataset`."""
    if step.feedback_switch is None:
        return False
    given = switch_value(step.feedback_switch, params.get(step.feedback_switch, ""))
    return bool(settings.feedback.include_in_dataset) if given is None else given


def feedback_part(settings: Settings) -> str:
    """The feedback store's fingerprint (its part names: append-only, a new record is a new part) and the feedback
    settings the fold reads (where the store is, the rating rules, the conflict order)."""
    from projects.data.feedback import feedback_fingerprint

    return f"feedback={feedback_fingerprint(settings.feedback.store_uri)}:{section_digest(settings, 'feedback')}"


def step_extra(step: Step, settings: Settings, params: Mapping[str, str] | None = None) -> str:
    """What the key hashes beyond the parameters and the code."""
    extra = section_digest(settings, *step.sections) if step.sections else ""
    if step.fingerprint_warehouse:
        extra = f"{warehouse_fingerprint(settings)}:{extra}"
    if feedback_included(step, params or {}, settings):
        extra = f"{extra}:{feedback_part(settings)}"
    return extra


def step_key(entry_point: str, params: dict[str, Any], extra: str) -> str:
    payload = json.dumps({"entry_point": entry_point, "params": params, "extra": extra}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def key_of(step: Step, params: dict[str, str], settings: Settings, code: str) -> str:
    """The reuse key of `step` run with `params` under `settings` and code digest `code` (both runners)."""
    return step_key(step.name, params, f"{code}:{step_extra(step, settings, params)}")


def outputs_of(step: Step, run: Any) -> dict[str, str]:
    """What a finished run of `step` hands on, read from the run (its id, its tags)."""
    out = {}
    for o in step.outputs:
        value = run.info.run_id if o.tag is None else run.data.tags.get(o.tag)
        if not value:
            raise DefinitionError(f"step {step.name} finished without its output {o.name} (run tag {o.tag})")
        out[o.name] = value
    return out


def wired_values(step: Step, produced: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
    return {param: produced[source][output] for param, (source, output) in step.wires.items()}


def step_named(name: str) -> Step:
    return next(s for s in STEPS if s.name == name)
