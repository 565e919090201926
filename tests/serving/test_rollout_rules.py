"""The pure rules behind rollout and rollback: the canary split (exact per block of 100, sticky per session) and
the watch verdict on error rate and p99. The live server applies them in test_rollout.py / test_follow.py."""

from __future__ import annotations

import pytest

from serving.rollout import CanarySplitter, session_hash, sticky_bucket
from serving.watch import judge, p99


@pytest.mark.parametrize("percent", [1, 12.5, 20, 50, 99])
def test_per_request_split_is_exact_over_every_block_and_random_within(percent: float) -> None:
    splitter = CanarySplitter(percent, seed=1)
    picks = [splitter.choose() for _ in range(1000)]
    assert abs(sum(picks) - percent * 10) <= 1  # 1,000 requests: within one request of P percent
    for start in range(0, 1000, 200):  # every two blocks of 100: exact up to the carried fraction
        assert abs(sum(picks[start:start + 200]) - 2 * percent) <= 1
    if percent in (12.5, 20, 50):  # positions are random, not a fixed pattern a client could align with
        assert picks[:100] != [CanarySplitter(percent, seed=2).choose() for _ in range(100)]


def test_sticky_sessions_always_meet_the_same_version_and_split_near_p() -> None:
    splitter = CanarySplitter(20, seed=0)
    sessions = [f"user-{i}" for i in range(5000)]
    first = [splitter.choose(s) for s in sessions]
    assert first == [splitter.choose(s) for s in sessions]  # sticky
    assert abs(sum(first) / len(first) - 0.20) < 0.02
    assert CanarySplitter(0).choose("user-1") is False and CanarySplitter(100).choose() is True
    assert sticky_bucket("user-1") == sticky_bucket("user-1") and len(session_hash("user-1")) == 16
    with pytest.raises(ValueError):
        CanarySplitter(101)


def test_p99_is_the_nearest_rank() -> None:
    assert p99([]) is None
    assert p99([5.0]) == 5.0
    assert p99(list(range(1, 101))) == 99
    assert p99(list(range(1, 1001))) == 990


def test_the_verdict_waits_for_enough_requests_then_judges_errors_and_tail() -> None:
    thresholds = {"min_requests": 20, "max_error_rate": 0.05, "max_p99_ms": 1000.0}
    assert not judge([10.0] * 19, 19, **thresholds).rollback  # too few to judge, even all failing
    healthy = judge([10.0] * 100, 5, **thresholds)
    assert not healthy.rollback and healthy.error_rate == 0.05  # at the threshold is not over it
    errors = judge([10.0] * 100, 6, **thresholds)
    assert errors.rollback and errors.reason == "error rate 0.06 (6/100) > 0.05"
    slow = judge([10.0] * 98 + [1500.0, 1600.0], 0, **thresholds)
    assert slow.rollback and "p99 latency 1500 ms over 100 requests > 1000 ms" == slow.reason
    one_slow = judge([10.0] * 99 + [5000.0], 0, **thresholds)
    assert not one_slow.rollback  # one outlier in 100 is the 1% p99 ignores
    assert slow.numbers() == {"requests": 100, "errors": 0, "error_rate": 0.0, "p99_ms": 1500.0}
