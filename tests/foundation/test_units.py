"""Pure pieces of the loop: cleaning, split, digest, retrieval, threshold, metrics, gates, templates."""

from __future__ import annotations

from pathlib import Path

import pytest

from backends.base import ABSTAIN_ANSWER
from backends.retrieval import RetrievalAnswerer, choose_threshold
from evaluation.gates import GatesFile, check_gates, load_gates
from evaluation.metrics import exact_match, rouge_l, token_f1
from llmops.errors import ConfigError
from llmops.dataset import dataset_digest, split_digest
from projects.data.transform import html_to_text, split_of
from prompts.template import PromptTemplate, load_template


def test_html_to_text_keeps_code_blocks_and_unescapes() -> None:
    text = html_to_text("<p>Use <code>a[::-1]</code></p><pre><code>if x &lt; 3:\n    print(x)\n</code></pre>")
    assert "`a[::-1]`" in text
    assert "```\nif x < 3:\n    print(x)\n```" in text


def test_split_is_stable_and_near_the_requested_ratio() -> None:
    ids = range(10_000)
    first = [split_of(i, 20) for i in ids]
    assert first == [split_of(i, 20) for i in ids]
    share = first.count("eval") / len(first)
    assert 0.18 < share < 0.22
    # adding data never moves an existing example
    assert [split_of(i, 20) for i in range(100)] == first[:100]


def test_digest_depends_on_content_not_order_and_names_its_scope() -> None:
    a = [{"id": "1", "x": "a"}, {"id": "2", "x": "b"}]
    assert split_digest(a) == split_digest(list(reversed(a)))
    assert split_digest(a) != split_digest([{"id": "1", "x": "a"}, {"id": "2", "x": "c"}])
    both = dataset_digest({"train": split_digest(a), "eval": split_digest(a[:1])})
    assert both == dataset_digest({"eval": split_digest(a[:1]), "train": split_digest(a)})  # split order is fixed
    assert both != dataset_digest({"train": split_digest(a)})  # another scope is another digest
    assert both != dataset_digest({"train": split_digest(a[:1]), "eval": split_digest(a)})  # which split is which


def _examples() -> list[dict]:
    rows = [
        ("How do I reverse a list in Python?", "Use reversed(items) or items[::-1]."),
        ("How can I sort a dictionary by its values?", "Use sorted(d.items(), key=lambda kv: kv[1])."),
        ("How to read a text file line by line?", "Iterate over the open file object: for line in f."),
    ]
    return [{"question_id": i, "question": q, "answer": a, "link": f"https://x/q/{i}"}
            for i, (q, a) in enumerate(rows)]


def test_retrieval_answers_with_nearest_and_abstains_below_threshold(tmp_path: Path) -> None:
    answerer = RetrievalAnswerer.fit(_examples())
    hit = answerer.generate("reverse a python list")
    assert hit.text.startswith("Use reversed") and hit.citations[0].source_id == "0" and not hit.abstained
    answerer.threshold = 0.99
    miss = answerer.generate("what is the capital of peru")
    assert miss.abstained and miss.text == ABSTAIN_ANSWER
    reloaded = RetrievalAnswerer.load(answerer.save(tmp_path / "r"))
    assert reloaded.threshold == 0.99 and reloaded.generate("sort dictionary by values").citations[0].source_id == "1"


def test_threshold_maximises_utility() -> None:
    sims = [0.9, 0.8, 0.3, 0.2]
    quality = [0.9, 0.7, 0.1, 0.05]
    # abstaining is worth 0.2: answer the two good ones only
    assert choose_threshold(sims, quality, abstain_value=0.2) == pytest.approx(0.8)
    # abstaining is worthless: answer everything
    assert choose_threshold(sims, quality, abstain_value=0.0) == 0.0


def test_metrics_by_hand() -> None:
    assert exact_match("The  Answer!", "the answer") == 1.0
    # pred {a,b,c}, ref {a,b,d,e}: P=2/3, R=2/4 -> F1 = 4/7
    assert token_f1("a b c", "a b d e") == pytest.approx(4 / 7)
    assert token_f1("", "x") == 0.0
    assert rouge_l("a b c d", "a b c d") == pytest.approx(1.0)
    assert 0 < rouge_l("a x c y", "a b c d") < 1


def test_gates_pass_fail_and_missing_metric() -> None:
    gates = GatesFile(mode="enforced", targets={"staging": [{"metric": "f1", "min": 0.5}, {"metric": "abst", "max": 0.2},
                                                            {"metric": "absent", "min": 0}]})
    results = check_gates({"f1": 0.6, "abst": 0.3}, gates, "staging")
    assert [r.passed for r in results] == [True, False, False]
    assert "missing" in results[2].line()
    with pytest.raises(ConfigError, match="no gates defined"):
        check_gates({}, gates, "production")


def test_gates_file_errors(tmp_path: Path) -> None:
    bad = tmp_path / "g.yaml"
    bad.write_text("targets:\n  staging:\n    - metric: f1\n")
    with pytest.raises(ConfigError, match="needs min or max"):
        load_gates(bad)
    bad.write_text("mode: sometimes\ntargets: {}\n")
    with pytest.raises(ConfigError, match="mode"):
        load_gates(bad)


def test_shipped_template_renders_and_rejects_bad_variables() -> None:
    template = load_template("so-qa", Path(__file__).resolve().parents[2] / "prompts" / "templates")
    text = template.render(question="Why?")
    assert template.instruction in text and text.endswith("Why?")
    with pytest.raises(ConfigError, match="missing"):
        template.render()
    with pytest.raises(ConfigError, match="unknown"):
        template.render(question="q", extra="x")
    with pytest.raises(ValueError, match="undeclared"):
        PromptTemplate(name="t", instruction="i", template="{{instruction}} {{q}}", variables=["instruction"])
    with pytest.raises(ValueError, match="Extra inputs"):
        PromptTemplate(name="t", instruction="i", template="{{instruction}}", variables=["instruction"], colour=1)
