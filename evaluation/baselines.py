"""Baselines a reviewer asks for, scored on the same rows as the model, and the model's paired lead over them.

- `random_answer`: each eval question answered with a random *training* answer (seeded; the mean of `draws`
  draws per row). On long prose answers this scores far above zero: every answer shares common words. A model
  that does not beat it has learned nothing about the question.
- `always_abstain`: never answers. It has no answered quality; its `utility` is the value credited to an
  abstention, which a model must beat to be worth answering at all.

`utility` (the quantity the retriever's threshold maximises) is per row the answer's token F1 when it answered,
else `abstain_value`. A comparison ("model vs baseline on metric M") pairs rows: for `answered_*` metrics the
rows the model answered, otherwise every row; the per-row difference is bootstrapped (seeded) into a CI. Those
intervals are logged as `vs/<baseline>/<metric>/{delta,ci_low,ci_high,n}` and gates read them; the champion is
compared the same way from its own eval run's rows (registry promotion).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from evaluation.metrics import rouge_l, token_f1
from evaluation.stats import Interval, bootstrap_mean

BASELINES = ("random_answer", "always_abstain")
CHAMPION = "champion"
# Metric -> (per-row column in the rows table, whether only rows the candidate answered count).
RELATIVE_METRICS: dict[str, tuple[str, bool]] = {
    "answered_token_f1": ("token_f1", True),
    "answered_rouge_l": ("rouge_l", True),
    "token_f1/mean": ("token_f1", False),
    "rouge_l/mean": ("rouge_l", False),
    "utility": ("utility", False),
}
BASELINE_COLUMN = "baseline.{baseline}.{column}"


def utility_rows(quality: np.ndarray, abstained: np.ndarray, abstain_value: float) -> np.ndarray:
    return np.where(abstained, abstain_value, quality)


@dataclass(frozen=True)
class BaselineRows:
    """Per-row scores of one baseline, aligned with the eval rows."""

    name: str
    token_f1: np.ndarray
    rouge_l: np.ndarray
    abstained: np.ndarray
    utility: np.ndarray

    def column(self, column: str) -> np.ndarray:
        return getattr(self, column)


def random_answer(references: list[str], train_answers: list[str], abstain_value: float, draws: int = 5,
                  seed: int = 0) -> BaselineRows:
    """Each row answered by `draws` random training answers; per-row scores are the mean over the draws."""
    if not train_answers:
        raise ValueError("random_answer needs training answers")
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(train_answers), size=(len(references), draws))
    f1 = np.array([np.mean([token_f1(train_answers[j], ref) for j in row]) for row, ref in zip(picks, references,
                                                                                              strict=True)])
    rouge = np.array([np.mean([rouge_l(train_answers[j], ref) for j in row]) for row, ref in zip(picks, references,
                                                                                                strict=True)])
    abstained = np.zeros(len(references), dtype=bool)
    return BaselineRows("random_answer", f1, rouge, abstained, utility_rows(f1, abstained, abstain_value))


def always_abstain(n: int, abstain_value: float) -> BaselineRows:
    zeros = np.zeros(n)
    abstained = np.ones(n, dtype=bool)
    return BaselineRows("always_abstain", zeros, zeros, abstained, utility_rows(zeros, abstained, abstain_value))


def summary(rows: BaselineRows) -> dict[str, float]:
    """The baseline's own headline metrics, as the model's are logged."""
    answered = ~rows.abstained
    out = {"coverage": float(answered.mean()) if len(answered) else 0.0, "utility": float(rows.utility.mean()),
           "token_f1/mean": float(rows.token_f1.mean()), "rouge_l/mean": float(rows.rouge_l.mean())}
    if answered.any():
        out["answered_token_f1"] = float(rows.token_f1[answered].mean())
        out["answered_rouge_l"] = float(rows.rouge_l[answered].mean())
    return out


def paired_delta(candidate: np.ndarray, baseline: np.ndarray, candidate_abstained: np.ndarray, metric: str, *,
                 samples: int, confidence: float, seed: int) -> Interval:
    """CI of mean(candidate - baseline) over the rows `metric` is defined on (pairs stay together)."""
    _column, answered_only = RELATIVE_METRICS[metric]
    keep = ~candidate_abstained if answered_only else np.ones(len(candidate), dtype=bool)
    diff = np.asarray(candidate, dtype=float)[keep] - np.asarray(baseline, dtype=float)[keep]
    return bootstrap_mean(diff, samples=samples, confidence=confidence, seed=seed)


def relative_metrics(model_rows: Any, baselines: list[BaselineRows], abstain_value: float, *, samples: int,
                     confidence: float, seed: int) -> dict[str, float]:
    """`vs/<baseline>/<metric>/{delta,ci_low,ci_high,n}` and `baseline/<baseline>/<metric>` for every baseline.

    `model_rows` is the per-row table (columns token_f1, rouge_l, response_abstained, utility)."""
    abstained = model_rows["response_abstained"].to_numpy(dtype=bool)
    out: dict[str, float] = {}
    for base in baselines:
        out.update({f"baseline/{base.name}/{k}": v for k, v in summary(base).items()})
        for offset, (metric, (column, _answered)) in enumerate(sorted(RELATIVE_METRICS.items())):
            interval = paired_delta(model_rows[column].to_numpy(dtype=float), base.column(column), abstained, metric,
                                    samples=samples, confidence=confidence, seed=seed + offset)
            out.update(interval_metrics(f"vs/{base.name}/{metric}", interval))
    return out


def interval_metrics(prefix: str, interval: Interval) -> dict[str, float]:
    values = {f"{prefix}/delta": interval.estimate, f"{prefix}/ci_low": interval.low,
              f"{prefix}/ci_high": interval.high, f"{prefix}/n": float(interval.n)}
    return {k: v for k, v in values.items() if math.isfinite(v)}


def interval_from_metrics(metrics: dict[str, float], baseline: str, metric: str) -> Interval | None:
    """The logged comparison read back; None when the run has none (baseline not computed)."""
    prefix = f"vs/{baseline}/{metric}"
    if f"{prefix}/n" not in metrics:
        return None
    nan = float("nan")
    return Interval(metrics.get(f"{prefix}/delta", nan), metrics.get(f"{prefix}/ci_low", nan),
                    metrics.get(f"{prefix}/ci_high", nan), int(metrics[f"{prefix}/n"]))
