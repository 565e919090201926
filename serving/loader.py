"""Resolve `models:/NAME@ALIAS` to a version and load it ready to serve: checked, smoke-tested, described.

A version is only ever served after `prepare` passed: it loads (its logged requirements are checked against this
environment), its prompt still has the instruction hash its release bundle recorded (training/serving
consistency), and it answers the smoke questions within budget. Any failure is a `RefusedVersion` naming the
stage, so the server can keep what it serves and say why.

Fast path: the registry alone is asked (`llmops.registry_client`: no tracking-store set-up), the
artifacts of a local store are used in place, and MLflow's per-load requirement scan (which walks every installed
distribution) is replaced by the same check on the model's own `requirements.txt`.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The chain's code is this installation's, imported before any model is loaded: a model's logged `code/` copy
# only fills modules not yet imported, so without this the first version loaded would decide which copy every
# later version runs (one module per name per process).
import prompts.chain  # noqa: F401
from llmops.errors import ConfigError, LlmopsError, NotFoundError

log = logging.getLogger(__name__)

_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))$")
BUNDLE_PREFIX = "llmops."


class RefusedVersion(LlmopsError):
    """A version that must not serve: `stage` is load | consistency | smoke."""

    def __init__(self, stage: str, message: str) -> None:
        super().__init__(message)
        self.stage = stage


@dataclass(frozen=True)
class ModelRef:
    """`models:/NAME@ALIAS` (followed) or `models:/NAME/VERSION` (fixed)."""

    name: str
    alias: str | None = None
    version: str | None = None

    @property
    def uri(self) -> str:
        return f"models:/{self.name}@{self.alias}" if self.alias else f"models:/{self.name}/{self.version}"

    @property
    def label(self) -> str:
        """What the OpenAI endpoint calls it: `NAME@alias` (or `NAME/version`)."""
        return self.uri.removeprefix("models:/")


def parse_model_uri(uri: str, what: str = "--model") -> ModelRef:
    match = _URI.match(uri.strip()) if isinstance(uri, str) else None
    if not match:
        raise ConfigError(f"{what} must look like models:/NAME@ALIAS or models:/NAME/VERSION, got {uri!r}")
    return ModelRef(match["name"], match["alias"], match["version"])


def resolve_version(ref: ModelRef, client: Any = None) -> str:
    """The version `ref` names now (an alias is looked up in the registry)."""
    from mlflow.exceptions import MlflowException

    from llmops.registry_client import registry_client

    if ref.version is not None:
        return ref.version
    client = client or registry_client()
    try:
        return str(client.get_model_version_by_alias(ref.name, ref.alias).version)
    except MlflowException as exc:
        raise NotFoundError(f"cannot resolve {ref.uri}: {exc.message.splitlines()[0]}") from exc


@dataclass
class LoadedVersion:
    """A loaded version: the pyfunc, its chain (what requests call) and its release bundle."""

    name: str
    version: str
    alias: str | None
    bundle: dict[str, str]
    chain: Any
    model: Any
    load_s: float
    unsatisfied: list[str] = field(default_factory=list)
    smoke_ms: list[float] = field(default_factory=list)
    loaded_at: float = field(default_factory=time.time)

    @property
    def label(self) -> str:
        return f"{self.name}/{self.version}"

    def describe(self) -> dict[str, Any]:
        """What `/version` says about it."""
        return {
            "model_name": self.name, "model_version": self.version, "alias": self.alias,
            "prompt_name": self.bundle.get("prompt_name"),
            "prompt_version": int(self.bundle["prompt_version"]) if self.bundle.get("prompt_version") else None,
            "instruction_hash": self.bundle.get("instruction_hash"),
            "dataset_digest": self.bundle.get("dataset_digest"), "provider": self.bundle.get("provider"),
            "model_id": self.bundle.get("model_id"), "chain": self.bundle.get("chain"),
            "load_s": round(self.load_s, 3), "smoke_ms": [round(v, 1) for v in self.smoke_ms],
            "requirements_unsatisfied": self.unsatisfied,
        }


def download_version(name: str, version: str, client: Any = None) -> tuple[Any, Path]:
    """(model version entity, local model folder); a local artifact store is used in place."""
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    from llmops.registry_client import registry_client

    client = client or registry_client()
    try:
        mv = client.get_model_version(name, version)
        uri = client.get_model_version_download_uri(name, version)
        return mv, Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    except MlflowException as exc:
        raise NotFoundError(f"cannot load models:/{name}/{version}: {exc.message.splitlines()[0]}") from exc
    except OSError as exc:
        raise NotFoundError(f"cannot load models:/{name}/{version}: {exc}") from exc


def load_version(name: str, version: str, alias: str | None = None, client: Any = None) -> LoadedVersion:
    """Download and load; any failure is RefusedVersion('load', ...)."""
    import mlflow.pyfunc

    from registry.infra import unsatisfied_requirements

    started = time.perf_counter()
    try:
        mv, local = download_version(name, version, client)
        requirements = local / "requirements.txt"
        lines = requirements.read_text(encoding="utf-8").splitlines() if requirements.exists() else []
        _, unsatisfied = unsatisfied_requirements(lines)
        if unsatisfied:
            log.warning("models:/%s/%s: requirements not satisfied here: %s", name, version, ", ".join(unsatisfied))
        model = mlflow.pyfunc.load_model(str(local), suppress_warnings=True)
        chain = getattr(model.unwrap_python_model(), "chain", None)
    except RefusedVersion:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever breaks a load, the version is refused with the reason
        raise RefusedVersion("load", f"models:/{name}/{version} cannot load: {_one_line(exc)}") from exc
    if chain is None or not hasattr(chain, "answer_many"):
        raise RefusedVersion("load", f"models:/{name}/{version} is not a QA chain model (no .chain)")
    if getattr(chain, "model_version", None) is None:  # versions whose own lookup found nothing (offline)
        chain.model_version = str(version)
    if getattr(chain, "model_name", None) is None:
        chain.model_name = name
    bundle = {k.removeprefix(BUNDLE_PREFIX): v for k, v in (mv.tags or {}).items() if k.startswith(BUNDLE_PREFIX)}
    return LoadedVersion(name, str(version), alias, bundle, chain, model, time.perf_counter() - started, unsatisfied)


def check_consistency(loaded: LoadedVersion, client: Any = None) -> None:
    """The prompt version the model was built with must still carry the instruction hash its bundle recorded, and
    the chain must render that same prompt: else serving would not match training."""
    from mlflow.exceptions import MlflowException

    from llmops.registry_client import registry_client
    from prompts.registry import INSTRUCTION_HASH_TAG

    where = f"models:/{loaded.name}/{loaded.version}"
    bundle = loaded.bundle
    missing = [k for k in ("prompt_name", "prompt_version", "instruction_hash") if not bundle.get(k)]
    if missing:
        raise RefusedVersion("consistency", f"{where} has no release bundle tag(s) "
                                            f"{', '.join('llmops.' + k for k in missing)}")
    prompt = loaded.chain.prompt
    if (prompt.name, str(prompt.version), prompt.instruction_hash) != \
            (bundle["prompt_name"], str(bundle["prompt_version"]), bundle["instruction_hash"]):
        raise RefusedVersion("consistency", f"{where} renders prompt {prompt.name} v{prompt.version} (instruction "
                                            f"hash {prompt.instruction_hash}) but its bundle records "
                                            f"{bundle['prompt_name']} v{bundle['prompt_version']} "
                                            f"({bundle['instruction_hash']})")
    client = client or registry_client()
    try:
        registered = client.get_prompt_version(bundle["prompt_name"], str(bundle["prompt_version"]))
    except MlflowException as exc:
        raise RefusedVersion("consistency", f"{where}: prompt {bundle['prompt_name']} v{bundle['prompt_version']} "
                                            f"is not in the Prompt Registry: {exc.message.splitlines()[0]}") from exc
    recorded = (getattr(registered, "tags", None) or {}).get(INSTRUCTION_HASH_TAG)
    if recorded != bundle["instruction_hash"]:
        raise RefusedVersion("consistency", f"{where}: prompt {bundle['prompt_name']} v{bundle['prompt_version']} "
                                            f"now has instruction hash {recorded or 'none'}, but the model was "
                                            f"built and trained with {bundle['instruction_hash']}")


def smoke(loaded: LoadedVersion, questions: list[str], budget_ms: float) -> None:
    """Each smoke question answered in the response schema, by this version, within budget."""
    from prompts.chain import ChainResponse

    where = f"models:/{loaded.name}/{loaded.version}"
    latencies = []
    for question in questions:
        started = time.perf_counter()
        try:
            [answer] = answer_questions(loaded.chain, [question])
            ChainResponse.model_validate(answer)
        except Exception as exc:  # noqa: BLE001 - any failure refuses the version, with the reason
            raise RefusedVersion("smoke", f"{where} failed the smoke question {question!r}: {_one_line(exc)}") \
                from exc
        elapsed = (time.perf_counter() - started) * 1000
        latencies.append(elapsed)
        if elapsed > budget_ms:
            raise RefusedVersion("smoke", f"{where} took {elapsed:.0f} ms on the smoke question {question!r} "
                                          f"(budget {budget_ms:.0f} ms)")
    loaded.smoke_ms = latencies


def prepare(name: str, version: str, alias: str | None, questions: list[str], budget_ms: float,
            client: Any = None) -> LoadedVersion:
    """Load, check consistency, smoke-test: a version ready to serve, or RefusedVersion."""
    loaded = load_version(name, version, alias, client)
    check_consistency(loaded, client)
    smoke(loaded, questions, budget_ms)
    return loaded


def smoke_questions(settings: Any) -> list[str]:
    """serving.smoke_questions, else the promotion policy's smoke questions (the ones staging was validated on)."""
    if settings.serving.smoke_questions:
        return list(settings.serving.smoke_questions)
    from registry.policy import load_policy

    return list(load_policy(settings.registry.policy_file).smoke.questions)


def answer_questions(chain: Any, questions: list[str]) -> list[dict[str, Any]]:
    """What every serving path calls: the chain's stages as plain calls (`direct`: half the CPU of the LCEL
    runnable, the same answers), all questions checked before any is answered."""
    return chain.answer_many(questions, direct=True)


def answer_traced(chain: Any, questions: list[str]) -> tuple[list[dict[str, Any]], list[str | None]]:
    """`answer_questions` when tracing is on: one question at a time, each with the id of the MLflow trace it made
    (None when the sampler skipped it), so the log record can name its trace and feedback can be logged on it."""
    import mlflow

    from prompts.chain import preprocess

    for question in questions:  # all checked before any is answered, as answer_questions does
        preprocess(question, chain.max_question_chars)
    answers, trace_ids = [], []
    for question in questions:
        before = mlflow.get_last_active_trace_id(thread_local=True)
        answers.extend(chain.answer_many([question], direct=True))
        after = mlflow.get_last_active_trace_id(thread_local=True)
        trace_ids.append(after if after != before else None)
    return answers, trace_ids


def _one_line(exc: BaseException) -> str:
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())[:500]
