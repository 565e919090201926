"""Quality gates as data: one YAML file, one function that checks a run's metrics against it.

Three kinds of gate, each on one logged metric:
- an absolute bound: `min` and/or `max`;
- a lead over a baseline on the same rows: `beats: random_answer | always_abstain | champion` with `margin`: the
  lower bound of the paired-bootstrap CI of (model - baseline) must be >= margin (a negative margin is a
  non-inferiority check: "at most this much worse than the champion");
- a non-regression tolerance `max_regression` against the champion's mean (unpaired; for champions scored on
  other rows).
`llmops eval gate` and the registry's promotion call the same `check_gates`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from evaluation.baselines import BASELINES, CHAMPION, RELATIVE_METRICS, interval_from_metrics
from evaluation.stats import Interval
from llmops.errors import ConfigError
from llmops.yamlfile import load_yaml_model

KNOWN_BASELINES = (*BASELINES, CHAMPION)


class Gate(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: str
    min: float | None = None
    max: float | None = None
    max_regression: float | None = Field(default=None, ge=0.0)
    beats: str | None = Field(default=None, description="random_answer, always_abstain or champion")
    margin: float | None = Field(default=None, description="lower CI bound of (model - baseline) must be >= this")

    @field_validator("min", "max", "max_regression", "margin")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError(f"must be a finite number, got {value}")
        return value

    @model_validator(mode="after")
    def _has_bound(self) -> Gate:
        if self.beats is not None:
            if self.beats not in KNOWN_BASELINES:
                raise ValueError(f"gate on {self.metric!r} names unknown baseline {self.beats!r} "
                                 f"(known: {', '.join(KNOWN_BASELINES)})")
            if self.metric not in RELATIVE_METRICS:
                raise ValueError(f"gate on {self.metric!r} cannot compare with a baseline "
                                 f"(comparable: {', '.join(RELATIVE_METRICS)})")
            if self.margin is None:
                raise ValueError(f"gate on {self.metric!r} beats {self.beats!r} needs a margin")
            if self.min is not None or self.max is not None or self.max_regression is not None:
                raise ValueError(f"gate on {self.metric!r} beats {self.beats!r}: write bounds as a gate of their own")
            return self
        if self.margin is not None:
            raise ValueError(f"gate on {self.metric!r} has a margin but no `beats` baseline")
        if self.min is None and self.max is None:
            raise ValueError(f"gate on {self.metric!r} needs min or max (or beats + margin)")
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

    @model_validator(mode="after")
    def _non_empty(self) -> GatesFile:
        if not self.targets:
            raise ValueError("targets is empty: a gates file with no gates would pass anything")
        for target, gates in self.targets.items():
            if not gates:
                raise ValueError(f"targets.{target} has no gates (remove the target, or set mode: disabled)")
        return self


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


def _lead_check(gate: Gate, interval: Interval | None, champion_note: str | None,
                champion_absent: str = "no champion yet; not checked") -> GateResult:
    name = f"{gate.metric} vs {gate.beats}"
    bound = f"lower bound >= {gate.margin:+.3f}"
    if interval is None:
        if gate.beats == CHAMPION:
            return GateResult(name, None, bound, champion_note is None, note=champion_note or champion_absent)
        return GateResult(name, None, bound, False, note=f"baseline {gate.beats} was not computed by this "
                                                          "evaluation (no training answers known)")
    if interval.n == 0 or not math.isfinite(interval.low):
        return GateResult(name, None, bound, False, note="no rows to compare")
    ok = interval.low >= gate.margin - 1e-12
    note = (f"model - {gate.beats} = {interval.estimate:+.3f}, CI {interval.low:+.3f}..{interval.high:+.3f} "
            f"over {interval.n} rows")
    return GateResult(name, interval.estimate, bound, ok, note=note)


def check_gates(metrics: Mapping[str, float], gates: GatesFile, target: str,
                champion_metrics: Mapping[str, float] | None = None,
                champion_leads: Mapping[str, Interval] | None = None,
                champion_note: str | None = None,
                champion_absent: str = "no champion yet; not checked") -> list[GateResult]:
    """Check every gate of `target`; a metric the run lacks fails its gate.

    Baseline leads are read from the run's own `vs/<baseline>/...` metrics. For the champion: `champion_leads`
    (metric -> paired interval, computed on the same rows by the caller) serve `beats: champion` gates, and
    `champion_metrics` (its eval run's metrics) serve `max_regression` gates. `champion_note` says why there is
    no paired comparison (a failure); with neither, there is no champion and the gate passes, saying
    `champion_absent`.
    """
    if target not in gates.targets:
        raise ConfigError(f"no gates defined for target {target!r} (defined: {', '.join(sorted(gates.targets))})")
    results = []
    for gate in gates.targets[target]:
        if gate.beats == CHAMPION:
            results.append(_lead_check(gate, (champion_leads or {}).get(gate.metric), champion_note,
                                       champion_absent))
            continue
        if gate.beats is not None:
            results.append(_lead_check(gate, interval_from_metrics(dict(metrics), gate.beats, gate.metric), None))
            continue
        value = metrics.get(gate.metric)
        results.append(_bound_check(gate, value))
        if champion_metrics is not None and gate.max_regression is not None:
            results.append(_regression_check(gate, value, champion_metrics.get(gate.metric)))
    return results
