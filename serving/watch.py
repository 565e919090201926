"""The watch after a swap: the new version's error rate and p99 latency against the thresholds in settings.

`VersionWatch` collects what the new version answered since the swap (thread-safe, bounded); `judge` is the pure
decision, so the rule is tested on numbers, not on timing.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

MAX_SAMPLES = 50_000


@dataclass(frozen=True)
class Verdict:
    rollback: bool
    reason: str
    requests: int
    errors: int
    error_rate: float
    p99_ms: float | None

    def numbers(self) -> dict[str, float | int | None]:
        return {"requests": self.requests, "errors": self.errors, "error_rate": round(self.error_rate, 4),
                "p99_ms": None if self.p99_ms is None else round(self.p99_ms, 1)}


def p99(latencies: list[float]) -> float | None:
    """The 99th percentile (nearest rank): the value 99% of requests were at or below."""
    if not latencies:
        return None
    ordered = sorted(latencies)
    rank = max(1, -(-99 * len(ordered) // 100))  # ceil(0.99 n)
    return ordered[rank - 1]


def judge(latencies_ms: list[float], errors: int, *, min_requests: int, max_error_rate: float,
          max_p99_ms: float) -> Verdict:
    """Roll back when, after at least `min_requests`, the 5xx share exceeds `max_error_rate` or p99 exceeds
    `max_p99_ms`. Failed requests count with their latency (a timeout is slow and an error)."""
    n = len(latencies_ms)
    rate = errors / n if n else 0.0
    tail = p99(latencies_ms)
    if n < min_requests:
        return Verdict(False, f"watching: {n} of {min_requests} requests", n, errors, rate, tail)
    if rate > max_error_rate:
        return Verdict(True, f"error rate {rate:.2f} ({errors}/{n}) > {max_error_rate:.2f}", n, errors, rate, tail)
    if tail is not None and tail > max_p99_ms:
        return Verdict(True, f"p99 latency {tail:.0f} ms over {n} requests > {max_p99_ms:.0f} ms", n, errors, rate,
                       tail)
    return Verdict(False, f"healthy: error rate {rate:.2f}, p99 {tail or 0:.0f} ms over {n} requests", n, errors,
                   rate, tail)


@dataclass
class VersionWatch:
    """What one version answered during its watch window."""

    version: str
    previous: str | None
    started: float = field(default_factory=time.monotonic)
    window_s: float = 300.0
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def observe(self, latency_ms: float, server_error: bool) -> None:
        with self._lock:
            if len(self.latencies_ms) < MAX_SAMPLES:
                self.latencies_ms.append(latency_ms)
                self.errors += bool(server_error)

    @property
    def over(self) -> bool:
        return time.monotonic() - self.started >= self.window_s

    def snapshot(self) -> tuple[list[float], int]:
        with self._lock:
            return list(self.latencies_ms), self.errors
