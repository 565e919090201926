"""Quality gates as data: one YAML file, one function that checks a run's metrics against it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from llmops.errors import ConfigError, NotFoundError


class Gate(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: str
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _has_bound(self) -> Gate:
        if self.min is None and self.max is None:
            raise ValueError(f"gate on {self.metric!r} needs min or max")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"gate on {self.metric!r} has min > max")
        return self


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

    def line(self) -> str:
        shown = "missing" if self.value is None else f"{self.value:.4f}"
        return f"{'PASS' if self.passed else 'FAIL'}  {self.metric} = {shown}  (needs {self.bound})"


def load_gates(path: str | Path) -> GatesFile:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise NotFoundError(f"gates file not found: {path}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"gates file {path} is not valid YAML: {str(exc).splitlines()[0]}") from exc
    try:
        return GatesFile(**(raw or {}))
    except (ValidationError, TypeError) as exc:
        detail = exc.errors()[0] if isinstance(exc, ValidationError) else {"loc": (), "msg": str(exc)}
        where = ".".join(str(p) for p in detail["loc"]) or "file"
        raise ConfigError(f"gates file {path}: {where}: {detail['msg']}") from exc


def check_gates(metrics: dict[str, float], gates: GatesFile, target: str) -> list[GateResult]:
    """Check every gate of `target`; a metric the run lacks fails its gate."""
    if target not in gates.targets:
        raise ConfigError(f"no gates defined for target {target!r} (defined: {', '.join(sorted(gates.targets))})")
    results = []
    for gate in gates.targets[target]:
        value = metrics.get(gate.metric)
        bounds = []
        ok = value is not None
        if gate.min is not None:
            bounds.append(f">= {gate.min}")
            ok = ok and value >= gate.min
        if gate.max is not None:
            bounds.append(f"<= {gate.max}")
            ok = ok and value <= gate.max
        results.append(GateResult(gate.metric, value, " and ".join(bounds), bool(ok)))
    return results
