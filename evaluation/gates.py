"""Quality gates as data: one YAML file, one function that checks a run's metrics against it.

A gate bounds one logged metric (`min` and/or `max`) and may add a non-regression tolerance
(`max_regression`) checked against the current champion's metrics when they are given: the candidate may
be at most that much worse than the champion, "worse" read from the bound (a `min` gate: higher is better;
a `max`-only gate: lower is better). The registry's promotion calls the same `check_gates`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from llmops.errors import ConfigError, NotFoundError
from llmops.yamlfile import load_yaml_model


class Gate(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: str
    min: float | None = None
    max: float | None = None
    max_regression: float | None = Field(default=None, ge=0.0)

    @model_validator(mode="after")
    def _has_bound(self) -> Gate:
        if self.min is None and self.max is None:
            raise ValueError(f"gate on {self.metric!r} needs min or max")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"gate on {self.metric!r} has min > max")
        return self

    @property
    def higher_is_better(self) -> bool:
        return self.min is not None


class GatesFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["disabled", "dry-run", "enforced"] = "enforced"
    targets: dict[str, list[Gate]]


@dataclass(frozen=True)
class GateResult:
    metric: str
    value: float | None
    bound: str
    passed: bool
    note: str = ""

    def line(self) -> str:
        shown = "missing" if self.value is None else f"{self.value:.4f}"
        note = f"  [{self.note}]" if self.note else ""
        return f"{'PASS' if self.passed else 'FAIL'}  {self.metric} = {shown}  (needs {self.bound}){note}"


def load_gates(path: str | Path, known_metrics: set[str] | None = None) -> GatesFile:
    """Parse and validate the gates file; an unknown metric name or a malformed threshold is a ConfigError."""
    path = Path(path)
    gates = load_yaml_model(path, GatesFile, "gates file")
    if known_metrics is None:
        from evaluation.scorers import known_metric_names

        known_metrics = set(known_metric_names())
    for target, target_gates in gates.targets.items():
        for index, gate in enumerate(target_gates):
            if gate.metric not in known_metrics:
                raise ConfigError(f"gates file {path}: targets.{target}.{index}: unknown metric {gate.metric!r} "
                                  "(see `llmops eval metrics` for the names evaluation logs)")
    return gates


def _bound_check(gate: Gate, value: float | None) -> GateResult:
    bounds = []
    ok = value is not None
    if gate.min is not None:
        bounds.append(f">= {gate.min}")
        ok = ok and value >= gate.min
    if gate.max is not None:
        bounds.append(f"<= {gate.max}")
        ok = ok and value <= gate.max
    return GateResult(gate.metric, value, " and ".join(bounds), bool(ok))


def _regression_check(gate: Gate, value: float | None, champion: float | None) -> GateResult:
    name = f"{gate.metric} vs champion"
    tolerance = gate.max_regression or 0.0
    if champion is None:
        return GateResult(name, value, "champion value", True, note="champion has no value; not checked")
    if gate.higher_is_better:
        limit, bound = champion - tolerance, f">= {champion - tolerance:.4f} = champion {champion:.4f} - {tolerance}"
        ok = value is not None and value >= limit - 1e-12
    else:
        limit, bound = champion + tolerance, f"<= {champion + tolerance:.4f} = champion {champion:.4f} + {tolerance}"
        ok = value is not None and value <= limit + 1e-12
    return GateResult(name, value, bound, bool(ok))


def check_gates(metrics: dict[str, float], gates: GatesFile, target: str,
                champion_metrics: dict[str, float] | None = None) -> list[GateResult]:
    """Check every gate of `target`; a metric the run lacks fails its gate.

    With `champion_metrics` (the current holder of the alias), gates that set `max_regression` also check
    that the candidate is no more than that much worse than the champion.
    """
    if target not in gates.targets:
        raise ConfigError(f"no gates defined for target {target!r} (defined: {', '.join(sorted(gates.targets))})")
    results = []
    for gate in gates.targets[target]:
        value = metrics.get(gate.metric)
        results.append(_bound_check(gate, value))
        if champion_metrics is not None and gate.max_regression is not None:
            results.append(_regression_check(gate, value, champion_metrics.get(gate.metric)))
    return results


def champion_metrics(model_uri: str) -> tuple[str, dict[str, float]] | None:
    """Metrics of the eval run behind `models:/name@alias` (its `llmops.eval_run_id` tag); None if no champion.

    A missing alias means there is no champion yet (the first promotion); a version without an eval run is an
    error, since its quality cannot be compared.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from llmops.tracking import get_run

    if not model_uri.startswith("models:/") or "@" not in model_uri:
        raise ConfigError(f"--against needs a model alias URI like models:/name@production, got {model_uri!r}")
    name, alias = model_uri.removeprefix("models:/").split("@", 1)
    try:
        version = MlflowClient().get_model_version_by_alias(name, alias)
    except MlflowException:
        return None
    eval_run_id = version.tags.get("llmops.eval_run_id")
    if not eval_run_id:
        raise NotFoundError(f"champion {name} v{version.version} (@{alias}) has no llmops.eval_run_id tag")
    return f"{name} v{version.version} (eval run {eval_run_id})", dict(get_run(eval_run_id).data.metrics)
