"""Calibration of the alarm rule, seeded: false alarms on same-distribution window pairs of real questions, and
power against the shifts a production log shows (another site or topic, a length shift, another language).

Features are computed once per pool (its feature space fitted on the whole pool, which knows nothing of which row
lands in which window, so every test stays exact) and windows are row draws with replacement; each comparison then
runs the same `compare_frames` as `llmops monitor run`. At 50 rows a comparison costs ~10 ms, so 600 pairs are
drawn there (standard error of the rate ~0.008 instead of ~0.013 with 200); 200 pairs at 500 and 5,000 rows.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest
from helpers import other_language
from pools import sample_questions, sample_rows, shared_questions

from monitoring.compare import compare_frames
from monitoring.features import FeatureFrame, FeatureSpace
from monitoring.rules import load_rules

RULES = load_rules()
PAIRS = {50: 600, 500: 200, 5000: 200}


@lru_cache(maxsize=None)
def pool_frame(name: str) -> tuple[FeatureFrame, int]:
    pool = list(sample_questions() if name == "sample" else shared_questions())
    space = FeatureSpace.fit(pool, seed=0)
    return space.transform(pool), len(pool)


def false_alarm_rate(name: str, size: int, pairs: int) -> tuple[float, dict[str, int]]:
    frame, n = pool_frame(name)
    rng = np.random.default_rng(size)
    alarms, by_feature = 0, {}
    for trial in range(pairs):
        reference = frame.take(rng.integers(0, n, size))
        current = frame.take(rng.integers(0, n, size))
        comparison = compare_frames(reference, current, RULES, seed=trial)
        assert comparison.status == "ok"
        alarms += comparison.drift
        for feature in comparison.alarms:
            by_feature[feature.name] = by_feature.get(feature.name, 0) + 1
    return alarms / pairs, by_feature


@pytest.mark.parametrize("size", [50, 500, 5000])
def test_false_alarm_rate_on_the_sample_pool(size: int) -> None:
    rate, by_feature = false_alarm_rate("sample", size, PAIRS[size])
    print(f"sample pool, {size} rows per side: false-alarm rate {rate:.3f} over {PAIRS[size]} pairs {by_feature}")
    assert RULES.alpha - 0.03 <= rate <= RULES.alpha + 0.03


@pytest.mark.parametrize("size", [50, 500, 5000])
def test_false_alarm_rate_on_the_shared_pool(size: int, shared_data) -> None:
    rate, by_feature = false_alarm_rate("shared", size, PAIRS[size])
    print(f"shared pool, {size} rows per side: false-alarm rate {rate:.3f} over {PAIRS[size]} pairs {by_feature}")
    assert RULES.alpha - 0.03 <= rate <= RULES.alpha + 0.03


def truncated(question: str, keep: float) -> str:
    """A client bug that cuts questions: the first `keep` of the characters, at a word boundary."""
    cut = question[: int(len(question) * keep)]
    return cut.rsplit(None, 1)[0] if " " in cut else cut


def power(base: list[str], shifted: list[str], share: float, right: set[str], trials: int = 40,
          size: int = 500) -> tuple[float, dict[str, int]]:
    """Windows of `size` with `share` of rows from `shifted` (1.0: all) vs windows of `base` only. Returns the
    share of trials that alarm with one of `right` among the alarms, and the most significant feature's counts."""
    space = FeatureSpace.fit(base, seed=0)  # the basis is the version's training-like pool, as in production
    frame = space.transform(list(base) + list(shifted))
    nb, ns = len(base), len(shifted)
    rng = np.random.default_rng(11)
    named, top = 0, {}
    k = int(round(size * share))
    for trial in range(trials):
        reference = frame.take(rng.integers(0, nb, size))
        rows = np.concatenate([rng.integers(0, nb, size - k), nb + rng.integers(0, ns, k)])
        comparison = compare_frames(reference, frame.take(rows), RULES, seed=trial)
        alarmed = {f.name for f in comparison.alarms}
        named += bool(alarmed & right)
        if comparison.alarms:
            best = min(comparison.alarms, key=lambda f: f.adjusted_p_value).name
            top[best] = top.get(best, 0) + 1
        if trial == 0 and alarmed & right:
            explanation = "\n".join(comparison.explanation())
            assert any(name in explanation for name in right)
    return named / trials, top


TOPIC = {"new_terms", "embedding", "oov_rate"}
LANGUAGE = {"script_share", "oov_rate", "new_terms", "common_word_share"}


def test_power_on_the_sample_pool() -> None:
    rows, questions = sample_rows(), list(sample_questions())
    python = [q for q, r in zip(questions, rows, strict=True) if "python" in r["tags"]]
    other = [q for q, r in zip(questions, rows, strict=True) if "python" not in r["tags"]]
    cases = {
        "20% another topic (non-python tags)": (python, other, 0.2, TOPIC),
        "length shift (questions cut to 2/3)": (questions, [truncated(q, 2 / 3) for q in questions], 1.0,
                                                {"question_chars"}),
        "20% Spanish": (questions, other_language("es"), 0.2, LANGUAGE),
        "20% Russian": (questions, other_language("ru"), 0.2, {"script_share"}),
    }
    for label, (base, shifted, share, right) in cases.items():
        found, top = power(base, shifted, share, right)
        print(f"sample pool, {label}: power {found:.2f}, most significant {top}")
        assert found >= 0.9, (label, found, top)


def test_power_on_the_shared_pool(shared_data) -> None:
    stackoverflow = list(shared_questions())
    cases = {
        "20% another site (quantumcomputing)": (stackoverflow, list(shared_questions(
            "quantumcomputing.stackexchange.com")), 0.2, TOPIC),
        "20% another site (ai)": (stackoverflow, list(shared_questions("ai.stackexchange.com")), 0.2, TOPIC),
        "length shift (questions cut to 2/3)": (stackoverflow, [truncated(q, 2 / 3) for q in stackoverflow], 1.0,
                                                {"question_chars"}),
        "20% Spanish": (stackoverflow, other_language("es"), 0.2, LANGUAGE),
        "20% Russian": (stackoverflow, other_language("ru"), 0.2, {"script_share"}),
    }
    for label, (base, shifted, share, right) in cases.items():
        found, top = power(base, shifted, share, right)
        print(f"shared pool, {label}: power {found:.2f}, most significant {top}")
        assert found >= 0.9, (label, found, top)
