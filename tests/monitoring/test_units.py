"""The pieces on their own: byte-level descriptors against a per-character reference, the feature space, each test
against an independent computation, Holm, windows and operational metrics, the trigger."""

from __future__ import annotations

import json
import sys
import unicodedata
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from helpers import T0, other_language, write_log
from pools import sample_questions
from scipy import stats as sps

from llmops.errors import ConfigError
from monitoring import stats
from monitoring.features import FeatureSpace, term_column, term_names
from monitoring.rules import AlarmRules, TriggerRule
from monitoring.text import describe, script_letters

MIXED = ["", "abc def", "Hello, world! 123", "Привет мир", "naïve café → 日本語", "x_y = f(3)\n\tok", "🙂 emoji"]


def _reference(text: str) -> tuple[int, int, int, int]:
    """(chars, letters, non-Latin letters, non-letters) from unicodedata, one character at a time."""
    letters = non_latin = non_letters = 0
    for ch in text:
        if ch.isspace():
            continue
        if unicodedata.category(ch).startswith(("L", "M")):
            letters += 1
            non_latin += "LATIN" not in unicodedata.name(ch, "") and ord(ch) > 0x36F
        else:
            non_letters += 1
    return len(text), letters, non_latin, non_letters


def test_descriptors_agree_with_a_per_character_reference() -> None:
    texts = MIXED + list(sample_questions())[:80] + other_language("ru")[:5] + other_language("es")[:5]
    d = describe(texts)
    for i, text in enumerate(texts):
        chars, letters, non_latin, non_letters = _reference(text)
        assert d.chars[i] == chars, text
        assert d.letters[i] == letters, text
        assert d.non_latin_letters[i] == non_latin, text
        assert d.non_letters[i] == non_letters, text
    assert list(d.tokens[:3]) == [0, 2, 5]  # Hello , world ! 123: three words and two symbols
    assert d.script_share[3] == 1.0 and d.script_share[1] == 0.0 and d.non_letter_share[0] == 0.0
    assert script_letters(["Привет", "日本"]) == {"Cyrillic": 6, "CJK": 2}  # characters, not bytes


def test_descriptors_chunk_boundaries_do_not_matter() -> None:
    pool = list(sample_questions())
    texts = pool * (6000 // len(pool) + 1)  # more than 6,000 rows: more than one chunk
    whole = describe(texts)
    one = describe(texts[:1])
    row = len(pool) * (5000 // len(pool))  # a copy of the first question, deep in a later chunk
    assert whole.chars[row] == one.chars[0] and whole.tokens[row] == one.tokens[0]
    assert len(whole.chars) == len(texts)


def test_feature_space_vocabulary_common_words_and_terms() -> None:
    basis = ["the list of numbers in python", "the python list sort", "a dict in python"] * 3
    space = FeatureSpace.fit(basis, seed=0)
    frame = space.transform(["the python list", "quantum qubit gate", ""])
    oov = frame.model_numeric["oov_rate"]
    assert oov[0] == 0.0 and oov[1] == 1.0 and oov[2] == 0.0
    assert frame.model_numeric["common_word_share"][0] == 1.0
    assert frame.terms[1, term_column("qubit")] == 1
    assert term_names(["Quantum qubit gate"], [term_column("qubit")]) == {term_column("qubit"): "qubit"}
    assert frame.embedding.shape[0] == 3
    # unit rows; a question without one basis word sits at the origin
    assert np.allclose(np.linalg.norm(frame.embedding, axis=1), [1.0, 0.0, 0.0], atol=1e-4)


def test_subsampled_model_features_keep_every_row_for_lengths() -> None:
    pool = list(sample_questions())
    space = FeatureSpace.fit(pool, seed=0)
    frame = space.transform(pool, max_model_rows=50, rng=np.random.default_rng(0))
    assert len(frame.numeric["question_chars"]) == len(pool) and len(frame.model_rows) == 50
    assert frame.terms.shape[0] == 50 and frame.embedding.shape[0] == 50
    assert not frame.complete


def test_mann_whitney_matches_scipy() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 8, 70).astype(float), rng.integers(1, 9, 90).astype(float)  # many ties
    ours = stats.mann_whitney(a, b)
    theirs = sps.mannwhitneyu(b, a, method="asymptotic", use_continuity=False)
    assert ours.p_value == pytest.approx(theirs.pvalue, rel=1e-9)
    assert ours.effect == pytest.approx(theirs.statistic / (70 * 90) - 0.5)
    assert stats.mann_whitney(np.zeros(10), np.zeros(10)).p_value == 1.0


def test_fisher_and_holm() -> None:
    assert stats.fisher(np.zeros(50), np.ones(50)).p_value < 1e-20
    assert stats.fisher(np.zeros(50), np.zeros(50)).p_value == 1.0
    assert stats.holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert stats.holm([]) == []


def test_new_terms_tail_and_candidates() -> None:
    ref = np.array([0, 10, 3, 1])
    cur = np.array([12, 10, 3, 0])
    test = stats.new_terms(ref, cur, 100, 100, min_docs=5)
    assert list(test.columns[:1]) == [0]  # 12 of 12 holders are current
    expected = sps.hypergeom.sf(11, 200, 12, 100)
    candidates = len(test.term_p)
    assert test.result.p_value == pytest.approx(min(1.0, expected * candidates))
    assert 3 not in set(test.columns)  # a term in 1 question is never a candidate


def test_weighted_chi2_tail_matches_monte_carlo() -> None:
    rng = np.random.default_rng(1)
    weights = rng.gamma(0.5, 1.0, size=40)
    draws = (rng.standard_normal((200_000, 40)) ** 2) @ weights
    for q in (0.5, 0.9, 0.99):
        x = float(np.quantile(draws, q))
        assert stats.weighted_chi2_sf(x, weights) == pytest.approx(1 - q, abs=0.004 + 0.15 * (1 - q))


def test_rff_mmd_p_value_agrees_with_real_permutations() -> None:
    """The normal limit of the permutation distribution vs 2,000 real permutations of the same RFF statistic."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(1500, 8))
    y = rng.normal(size=(1500, 8)) + np.r_[0.08, np.zeros(7)]
    test = stats.mmd(x, y, np.random.default_rng(3), exact_max_rows=100, rff_features=64)
    # rebuild the same features and permute for real
    r = np.random.default_rng(3)
    pooled = np.vstack([x, y])
    gamma = 1.0 / stats._bandwidth(pooled, r)
    omega = r.normal(scale=np.sqrt(2 * gamma), size=(8, 64)).astype(np.float32)
    phase = r.uniform(0, 2 * np.pi, size=64).astype(np.float32)
    phi = np.float32(np.sqrt(2 / 64)) * np.cos(pooled.astype(np.float32) @ omega + phase)
    perm_rng = np.random.default_rng(4)
    labels = np.r_[np.zeros(1500), np.ones(1500)]
    values = []
    for _ in range(2000):
        p = perm_rng.permutation(labels).astype(bool)
        d = phi[p].mean(0, dtype=np.float64) - phi[~p].mean(0, dtype=np.float64)
        values.append(d @ d)
    permuted = (1 + np.sum(np.array(values) >= test.result.statistic)) / 2001
    assert test.result.method.startswith("random-Fourier")
    assert test.result.p_value == pytest.approx(permuted, abs=0.02 + 0.2 * permuted)


def test_exact_mmd_permutation_p_values_are_uniform_under_the_null() -> None:
    rng = np.random.default_rng(5)
    p = [stats.mmd(rng.normal(size=(40, 4)), rng.normal(size=(40, 4)), rng, permutations=200).result.p_value
         for _ in range(300)]
    assert 0.02 <= np.mean(np.array(p) <= 0.1) <= 0.18
    assert stats.mmd(rng.normal(size=(40, 4)), rng.normal(size=(40, 4)) + 2, rng).result.p_value < 0.005


def test_rules_defaults_and_validation() -> None:
    rules = AlarmRules()
    assert "question_tokens" not in rules.features and "embedding" in rules.features
    with pytest.raises(ValueError, match="lists a feature twice"):
        AlarmRules(features=["embedding", "embedding"])
    with pytest.raises(ValueError, match="non-empty list"):
        TriggerRule(command=[])


def test_parse_window_and_cut(tmp_path: Path) -> None:
    from monitoring.windows import cut_windows, load_log, operational_metrics, parse_window, records_of

    assert parse_window("1h").seconds == 3600 and parse_window("30m").seconds == 1800
    assert parse_window("2d").seconds == 172800 and parse_window("500").rows == 500
    with pytest.raises(ConfigError):
        parse_window("1 hour")
    location = tmp_path / "log"
    latencies = [10.0 * (i + 1) for i in range(100)]
    questions = list(sample_questions())[:100]
    for i, q in enumerate(questions):
        status = 500 if i % 10 == 0 else (400 if i % 10 == 1 else 200)
        write_log(location, [q], start=T0 + timedelta(minutes=i), latency_ms=latencies[i], status=status,
                  abstained=i % 4 == 0)
    table = records_of(load_log(str(location)), "so-qa-assistant", "1")
    by_hour = cut_windows(table, parse_window("1h"))
    assert [w.records.num_rows for w in by_hour] == [60, 40]
    assert by_hour[1].start == T0 + timedelta(hours=1) and by_hour[1].end == T0 + timedelta(hours=2)
    m = operational_metrics(by_hour[0])
    lat = np.array(latencies[:60])
    assert m["requests"] == 60 and m["throughput_rps"] == pytest.approx(60 / 3600)
    assert m["latency_p95_ms"] == pytest.approx(np.percentile(lat, 95))
    assert m["error_rate"] == pytest.approx(6 / 60) and m["client_error_rate"] == pytest.approx(6 / 60)
    ok = [i for i in range(60) if i % 10 not in (0, 1)]
    assert m["abstention_rate"] == pytest.approx(np.mean([i % 4 == 0 for i in ok]))
    assert m["hit_rate"] == pytest.approx(np.mean([i % 4 != 0 for i in ok]))
    by_count = cut_windows(table, parse_window("30"))
    assert [w.records.num_rows for w in by_count] == [30, 30, 30, 10]
    assert by_count[0].end == T0 + timedelta(minutes=29)


def test_trigger_runs_the_command_once_and_reports_failures(tmp_path: Path) -> None:
    from monitoring.trigger import Reason, feedback_reason, fire

    out = tmp_path / "calls.jsonl"
    script = tmp_path / "t.py"
    script.write_text("import json,sys\nopen(sys.argv[1],'a').write(json.dumps([sys.argv[2:], json.load(sys.stdin)"
                      "['kind']])+'\\n')\n", encoding="utf-8")
    rules = AlarmRules(trigger=TriggerRule(command=[sys.executable, str(script), str(out), "{model_version}",
                                                    "{questions_file}"], when=["drift", "feedback"],
                                           min_feedback=10))
    reason = Reason("drift", "m", "3", "2026-01-01T00:00:00+00:00", "2026-01-01T01:00:00+00:00", ["embedding"],
                    ["embedding moved"], questions=["q1", "q2"])
    assert fire(reason, rules, tmp_path, dry_run=True).status == "dry-run" and not out.exists()
    outcome = fire(reason, rules, tmp_path)
    assert outcome.status == "ran" and outcome.returncode == 0
    (call,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert call[0][0] == "3" and call[1] == "drift"
    assert Path(call[0][1]).read_text().splitlines() == ['{"question": "q1"}', '{"question": "q2"}']
    assert fire(reason, rules, tmp_path).status == "already-ran"
    assert fire(Reason("skew", "m", "3"), rules, tmp_path).status == "disabled"
    assert feedback_reason("m", "3", 9, rules) is None
    assert fire(feedback_reason("m", "3", 10, rules), rules, tmp_path).status == "ran"
    failing = AlarmRules(trigger=TriggerRule(command=[sys.executable, "-c", "import sys; sys.exit('boom')"]))
    result = fire(Reason("drift", "m", "4"), failing, tmp_path)
    assert result.status == "failed" and "exit 1: boom" in result.detail
    assert fire(Reason("drift", "m", "5"), AlarmRules(trigger=TriggerRule(command=["no-such-binary-xyz"])),
                tmp_path).status == "failed"
    assert fire(Reason("drift", "m", "5"), AlarmRules(), tmp_path).status == "not-configured"
    assert fire(Reason("drift", "m", "6"), AlarmRules(mode="dry-run", trigger=TriggerRule(command=["x"])),
                tmp_path).status == "dry-run"


def test_mask_credentials() -> None:
    from monitoring.tracking import mask_credentials

    assert mask_credentials("s3://key:secret@bucket/log") == "s3://***@bucket/log"
    assert mask_credentials("https://h/log?X-Amz-Signature=abc&x=1") == "https://h/log?X-Amz-Signature=***&x=1"
    assert mask_credentials("/local/path") == "/local/path"


def test_html_report_escapes_question_text() -> None:
    from monitoring.report import html_report

    page = html_report("# Report\n\n| a | b |\n|---|---|\n| <b>x</b> | 1 \\| 2 |\n\n- e.g. '<script>alert(1)</script>'\n")
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "<td>&lt;b&gt;x&lt;/b&gt;</td><td>1 | 2</td>" in page and "<h1>Report</h1>" in page
