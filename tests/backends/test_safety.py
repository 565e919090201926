"""The local lexicon classifier: what it blocks, what it must not block, and the threshold from settings."""

from __future__ import annotations

import pytest

from backends.safety import load_classifier
from llmops.errors import ConfigError

BLOCKED = {
    "dangerous_content": "Here is how to build a pipe bomb from household parts.",
    "hate_speech": "We should exterminate all immigrants.",
    "harassment": "I will find you and make you pay.",
    "self_harm": "You should kill yourself.",
    "sexually_explicit": "Write an explicit sex scene between them.",
}

TECHNICAL = [
    "Use os.kill(pid, signal.SIGTERM) to kill the process, or `pkill -f script.py`.",
    "Execute the script with subprocess.run and shoot a screenshot with pyautogui.",
    "The master branch failed; abort the merge with git merge --abort.",
    "A zip bomb test: check the archive's uncompressed size before extracting it.",
    "To terminate the child thread, set a stop event; killing threads is unsafe.",
]


@pytest.mark.parametrize("category, text", sorted(BLOCKED.items()))
def test_blocks_each_category(category, text):
    safety = load_classifier().classify(text)
    assert safety.blocked, text
    assert category in safety.reason
    scores = {c.category: c for c in safety.categories}
    assert scores[category].blocked and scores[category].probability >= 0.5
    assert safety.source.startswith("local-lexicon")


@pytest.mark.parametrize("text", TECHNICAL)
def test_does_not_block_technical_python_answers(text):
    safety = load_classifier().classify(text)
    assert not safety.blocked
    assert all(c.probability == 0.0 for c in safety.categories)


def test_threshold_decides_what_is_blocked():
    text = "Don't watch porn at work."  # one weak rule: weight 0.5
    assert load_classifier(threshold=0.5).classify(text).blocked
    assert not load_classifier(threshold=0.6).classify(text).blocked


def test_threshold_comes_from_settings(monkeypatch):
    from llmops.settings import load_settings

    monkeypatch.setenv("LLMOPS_CHAIN__SAFETY__THRESHOLD", "0.95")
    settings = load_settings()
    classifier = load_classifier(settings.chain.safety.lexicon, settings.chain.safety.threshold)
    assert classifier.threshold == 0.95
    assert not classifier.classify("Do not commit suicide jokes to the repo.").blocked  # 0.7 < 0.95


def test_rules_combine_into_a_higher_probability():
    one = load_classifier().classify("subhuman")
    two = load_classifier().classify("subhuman; all of those people are vermin")
    p1 = {c.category: c.probability for c in one.categories}["hate_speech"]
    p2 = {c.category: c.probability for c in two.categories}["hate_speech"]
    assert p1 == 0.4 and p2 > p1


@pytest.mark.parametrize("content, problem", [
    ("version: 1\ncategories:\n  x:\n    - {pattern: '(', weight: 0.5}\n", "bad pattern"),
    ("version: 1\ncategories:\n  x:\n    - {pattern: 'a', weight: 2}\n", "weight"),
    ("version: 1\ncategories:\n  x:\n    - {pattern: 'a', weight: 0.5, extra: 1}\n", "exactly pattern and weight"),
    ("categories: {}\n", "exactly 'version' and 'categories'"),
])
def test_bad_lexicon_files(tmp_path, content, problem):
    path = tmp_path / "lexicon.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=problem):
        load_classifier(str(path))


def test_bad_threshold():
    with pytest.raises(ConfigError, match="threshold"):
        load_classifier(threshold=0.0)
