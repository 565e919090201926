"""Seeded bootstrap confidence intervals: one mean, and the paired difference of two runs on the same rows."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float
    n: int


def _clean(values) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    return array[np.isfinite(array)]


def bootstrap_mean(values, *, samples: int = 1000, confidence: float = 0.95, seed: int = 0) -> Interval:
    """Percentile bootstrap of the mean; NaN (no assessment) rows are left out."""
    data = _clean(values)
    if data.size == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, data.size, size=(samples, data.size))
    means = data[idx].mean(axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return Interval(float(data.mean()), float(low), float(high), int(data.size))


def paired_bootstrap(a, b, *, samples: int = 1000, confidence: float = 0.95, seed: int = 0) -> Interval:
    """CI of mean(b - a) over rows scored in both runs, resampling rows (pairs stay together)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError("paired samples must have the same length")
    both = np.isfinite(a) & np.isfinite(b)
    return bootstrap_mean(b[both] - a[both], samples=samples, confidence=confidence, seed=seed)


def verdict(diff: Interval, direction: str | None) -> str:
    """better / worse when the CI of B - A excludes 0 (per the metric's direction), else not distinguishable."""
    if diff.n == 0 or not np.isfinite(diff.low):
        return "no data"
    if diff.low <= 0 <= diff.high:
        return "not distinguishable"
    higher = diff.low > 0
    if direction is None:
        return "higher" if higher else "lower"
    return "better" if higher == (direction == "higher") else "worse"
