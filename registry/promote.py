"""Promotion: move an alias to a version only when the gates pass on that version's own eval run."""

from __future__ import annotations

from dataclasses import dataclass

from evaluation.gates import GateResult, check_gates, load_gates
from llmops.errors import ConfigError, GateFailedError, NotFoundError
from llmops.tracking import get_run

ALIASES = ("dev", "staging", "production")


@dataclass(frozen=True)
class PromotionOutcome:
    name: str
    version: str
    alias: str
    moved: bool
    mode: str
    results: list[GateResult]

    def report(self) -> str:
        lines = [f"{r.line()}" for r in self.results]
        verdict = "moved" if self.moved else "not moved"
        lines.append(f"{self.name} v{self.version} -> @{self.alias}: {verdict} (gates {self.mode})")
        return "\n".join(lines)


def get_version(client, name: str, version: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version(name, str(version))
    except MlflowException as exc:
        raise NotFoundError(f"model {name!r} version {version} not found") from exc


def promote(name: str, version: str, alias: str, gates_file: str, dry_run: bool = False) -> PromotionOutcome:
    from mlflow.tracking import MlflowClient

    if alias not in ALIASES:
        raise ConfigError(f"unknown alias {alias!r} (expected one of {', '.join(ALIASES)})")
    client = MlflowClient()
    model_version = get_version(client, name, version)
    eval_run_id = model_version.tags.get("llmops.eval_run_id")
    if not eval_run_id:
        raise NotFoundError(f"{name} v{version} has no llmops.eval_run_id tag: register it with `llmops registry register`")
    metrics = get_run(eval_run_id).data.metrics
    gates = load_gates(gates_file)
    results = [] if gates.mode == "disabled" else check_gates(metrics, gates, alias)
    passed = all(r.passed for r in results)
    blocked = gates.mode == "enforced" and not passed
    moved = not dry_run and not blocked
    if moved:
        client.set_registered_model_alias(name, alias, str(version))
        client.set_model_version_tag(name, str(version), f"llmops.gates.{alias}", "passed" if passed else "failed")
    outcome = PromotionOutcome(name, str(version), alias, moved, gates.mode, results)
    if blocked:
        raise GateFailedError(outcome.report() + f"\ngates failed: {name} v{version} stays off @{alias}")
    return outcome
