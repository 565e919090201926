"""One registration path for every provider kind: a pure plan, then an apply that logs, tags and aliases.

`plan_release` takes plain data (the tuning run, its eval run, the pinned prompt, the installed versions) and
decides everything: the release bundle (version tags promotion reads), the model's config (the same
`prompts.chain.chain_config` evaluation built the chain from), the artifacts, the pinned requirements, and the
consistency checks; any failed check raises before anything is written. `apply_release` then logs the pyfunc
from the one models-from-code file (`registry/model_code.py`), registers a version, tags its bundle and points
`dev` at it through the ledger; if anything after registration fails the version is deleted again.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmops.errors import ConfigError, DataError, NotFoundError
from llmops.provider_spec import ProviderSpec, parse_spec
from llmops.secrets import mask_text, mask_urls
from llmops.settings import repo_root
from prompts.registry import PinnedPrompt

log = logging.getLogger(__name__)

MODEL_CODE = Path("registry") / "model_code.py"
CODE_PACKAGES = ("llmops", "backends", "prompts", "registry")
# The release bundle: every key is a version tag `llmops.<key>`; promotion refuses a version missing any.
BUNDLE_KEYS = ("prompt_name", "prompt_version", "instruction_hash", "dataset_digest", "dataset_scope",
               "dataset_lineage", "dataset_feedback", "dataset_previous", "tune_run_id", "eval_run_id",
               "tuning_backend", "provider", "model_id", "chain", "chain_config", "provider_spec", "consistency",
               "requirements")
SMOKE_QUESTION = "How do I reverse a list in Python?"


@dataclass(frozen=True)
class RunView:
    """What the plan needs of an MLflow run, as plain data (tests build these directly)."""

    run_id: str
    status: str
    params: Mapping[str, str]
    tags: Mapping[str, str]

    @classmethod
    def of(cls, run: Any) -> RunView:
        return cls(run.info.run_id, run.info.status, dict(run.data.params), dict(run.data.tags))


@dataclass(frozen=True)
class Consistency:
    """Training/serving check: does the served prompt carry the instruction the training data was built with?"""

    outcome: str  # match | mismatch-warned
    serving_hash: str
    training_hash: str


@dataclass(frozen=True)
class ReleasePlan:
    model_name: str
    spec: ProviderSpec
    prompt: PinnedPrompt
    bundle: dict[str, str]
    model_config: dict[str, Any]
    artifacts: dict[str, str]  # name -> URI or local path, downloaded at apply
    requirements: list[str]  # pip lines, exact versions
    consistency: Consistency
    input_example: bool = False  # only a local model may be called at log time
    notes: list[str] = field(default_factory=list)


def check_consistency(prompt: PinnedPrompt, training_hash: str, mode: str) -> Consistency:
    """Raise (mode `error`) or warn (mode `warn`) when the instruction hashes differ."""
    if not training_hash:
        raise ConfigError("the tune run records no instruction_hash for its training data; cannot check consistency")
    if prompt.instruction_hash == training_hash:
        return Consistency("match", prompt.instruction_hash, training_hash)
    message = (f"prompt {prompt.uri} has instruction hash {prompt.instruction_hash} but the training data was built "
               f"with {training_hash}: serving would not match tuning")
    if mode == "error":
        raise ConfigError(message + " (set chain.consistency=warn to log anyway)")
    log.warning("%s; logging anyway (chain.consistency=warn)", message)
    return Consistency("mismatch-warned", prompt.instruction_hash, training_hash)


def pin_requirements(names: list[str], installed: Callable[[str], str | None]) -> list[str]:
    """`name==version` for each distribution the model imports, as installed now (built and tested with)."""
    pins, missing = [], []
    for name in names:
        version = installed(name)
        if version is None:
            missing.append(name)
        else:
            pins.append(f"{name}=={version}")
    if missing:
        raise ConfigError(f"cannot pin the model's requirements: {', '.join(missing)} not installed here")
    return pins


def installed_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _require_finished(run: RunView, what: str) -> None:
    if run.status != "FINISHED":
        raise ConfigError(f"{what} run {run.run_id} is {run.status}, not FINISHED")


def check_eval_of(tune: RunView, evaluation: RunView, config_fingerprint: str) -> None:
    """The eval run scored this tuning run's chain, as it is about to be registered, on the same dataset."""
    evaluated = evaluation.params.get("tune_run_id") or evaluation.tags.get("llmops.tune_run_id")
    if evaluated != tune.run_id:
        raise ConfigError(f"eval run {evaluation.run_id} evaluated tuning run {evaluated or 'none'}, not "
                          f"{tune.run_id}")
    for key in ("dataset_lineage", "dataset_digest"):
        want, got = tune.params.get(key), evaluation.params.get(key)
        if want != got:
            what = "lineage" if key == "dataset_lineage" else "version"
            hint = ("; split files without a manifest.json cannot be tied to one dataset: write one with "
                    "`llmops data manifest`") if "none" in (want, got) or got is None else \
                "; evaluate on that dataset's eval split"
            raise DataError(f"eval run {evaluation.run_id} scored a dataset of another {what} ({key} {got}) than "
                            f"tuning run {tune.run_id} was trained on ({want}){hint}")
    scored = evaluation.params.get("chain_config")
    if scored != config_fingerprint:
        raise ConfigError(f"eval run {evaluation.run_id} scored chain config {scored}, but the chain to register "
                          f"is {config_fingerprint} (chain settings or prompt changed since): evaluate again")


def plan_release(*, model_name: str, tune: RunView, evaluation: RunView, prompt: PinnedPrompt, chain_settings: Any,
                 consistency_mode: str, installed: Callable[[str], str | None],
                 bundle_base_model: bool = True) -> ReleasePlan:
    """Pure: every decision and check of a registration, from plain inputs."""
    from backends.providers import check_artifacts, kind_of, requirements_of
    from prompts.chain import chain_config, config_fingerprint

    _require_finished(tune, "tuning")
    _require_finished(evaluation, "eval")
    text = tune.tags.get("llmops.provider_spec")
    if not text:
        raise ConfigError(f"run {tune.run_id} records no provider spec (tag llmops.provider_spec): it is not a "
                          "tuning run of this platform; run `llmops tune` first")
    spec = parse_spec(text, f"tuning run {tune.run_id}")
    check_artifacts(spec, f"tuning run {tune.run_id}")
    missing = [k for k in ("prompt_name", "prompt_version", "dataset_digest", "dataset_lineage", "instruction_hash")
               if k not in tune.params]
    if missing:
        raise NotFoundError(f"tuning run {tune.run_id} lacks param(s) {', '.join(missing)}")
    consistency = check_consistency(prompt, tune.params["instruction_hash"], consistency_mode)
    config = chain_config(spec, prompt, chain_settings, model_name)
    fingerprint = config_fingerprint(config)
    check_eval_of(tune, evaluation, fingerprint)
    artifacts = dict(spec.artifacts)
    if spec.kind == "hf" and bundle_base_model:
        if not spec.base_model:
            raise ConfigError(f"hf tuning run {tune.run_id} names no base model to bundle")
        artifacts["base_model"] = spec.base_model
    requirements = pin_requirements(requirements_of(spec), installed)
    kind = kind_of(spec)
    bundle = {
        "prompt_name": prompt.name, "prompt_version": str(prompt.version), "instruction_hash": prompt.instruction_hash,
        "dataset_digest": tune.params["dataset_digest"], "dataset_scope": tune.params.get("dataset_scope", ""),
        "dataset_lineage": tune.params["dataset_lineage"],
        # "previous version + feedback set F" (docs/feedback.md); "none" for a version prepared without feedback
        "dataset_feedback": tune.params.get("dataset_feedback", "none"),
        "dataset_previous": tune.params.get("dataset_previous", "none"), "tune_run_id": tune.run_id,
        "eval_run_id": evaluation.run_id, "tuning_backend": tune.params.get("tuning.backend", spec.kind),
        "provider": spec.kind, "model_id": config["model_id"], "chain": kind.chain_name,
        "chain_config": fingerprint, "provider_spec": spec.to_json(), "consistency": consistency.outcome,
        "requirements": ",".join(requirements),
    }
    assert set(bundle) == set(BUNDLE_KEYS)
    return ReleasePlan(model_name, spec, prompt, bundle, config, artifacts, requirements, consistency,
                       input_example=spec.kind == "retrieval")


def plan_from_runs(settings: Any, model_name: str, tune_run_id: str, eval_run_id: str) -> ReleasePlan:
    """Gather the plan's inputs from the tracking store (the I/O half of planning)."""
    from llmops.tracking import get_run
    from prompts.registry import load_pinned

    tune = RunView.of(get_run(tune_run_id))
    evaluation = RunView.of(get_run(eval_run_id))
    if "prompt_name" not in tune.params:
        raise ConfigError(f"run {tune_run_id} is not a tuning run (no prompt_name param)")
    prompt_uri = settings.chain.prompt_uri or f"prompts:/{tune.params['prompt_name']}/{tune.params['prompt_version']}"
    return plan_release(model_name=model_name, tune=tune, evaluation=evaluation, prompt=load_pinned(prompt_uri),
                        chain_settings=settings.chain, consistency_mode=settings.chain.consistency,
                        installed=installed_version, bundle_base_model=settings.tuning.hf.bundle_base_model)


def apply_release(plan: ReleasePlan, *, ledger_uri: str | None = None, actor: str | None = None,
                  alias: str = "dev") -> str:
    """Log, register, tag and alias the planned version into the active run; returns the version."""
    import mlflow
    import mlflow.pyfunc
    import pandas as pd
    from mlflow.models import ModelSignature
    from mlflow.tracking import MlflowClient
    from mlflow.types import ColSpec, Schema

    from llmops.tracking import download
    from registry.ledger import point_new_version

    root = repo_root()
    client = MlflowClient()
    mlflow.log_params(mask_urls({f"bundle.{k}": v for k, v in plan.bundle.items()
                                 if k not in ("provider_spec", "requirements")}))
    mlflow.log_text(mask_text(plan.bundle["provider_spec"]), "provider_spec.json")
    with tempfile.TemporaryDirectory() as tmp:
        local = {}
        for name, uri in plan.artifacts.items():
            path = Path(uri)
            local[name] = str(path) if path.is_absolute() and path.exists() else str(download(uri, Path(tmp) / name))
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(root / MODEL_CODE),
            artifacts=local,
            model_config=mask_urls(plan.model_config),  # a provider URL's credentials never reach MLmodel
            code_paths=[str(root / pkg) for pkg in CODE_PACKAGES],
            pip_requirements=plan.requirements,
            signature=ModelSignature(inputs=Schema([ColSpec("string", "question")])),
            input_example=pd.DataFrame({"question": [SMOKE_QUESTION]}) if plan.input_example else None,
            prompts=[plan.prompt.uri],
            registered_model_name=plan.model_name,
        )
    version = str(info.registered_model_version)
    try:
        for key, value in plan.bundle.items():
            client.set_model_version_tag(plan.model_name, version, f"llmops.{key}", mask_text(value))
        point_new_version(plan.model_name, alias, version, ledger_uri, actor)
    except Exception:
        client.delete_model_version(plan.model_name, version)
        raise
    mlflow.set_tags({"llmops.step": "register", "llmops.model_name": plan.model_name,
                     "llmops.model_version": version, "llmops.model_uri": f"models:/{plan.model_name}/{version}",
                     "llmops.consistency": plan.consistency.outcome})
    return version


def register(settings: Any, model_name: str, tune_run_id: str, eval_run_id: str, alias: str = "dev") -> str:
    """Plan, then apply (the register step and `llmops registry register`)."""
    plan = plan_from_runs(settings, model_name, tune_run_id, eval_run_id)
    return apply_release(plan, ledger_uri=settings.registry.ledger_uri, actor=settings.registry.actor, alias=alias)
