"""A local, documented lexicon/rule classifier of harm categories, for providers that do not score safety.

Rules live in `safety_lexicon.yaml` beside this file (see its header for the scoring). It is deliberately simple
and auditable: a test lists what it blocks and what it must not block (technical Python vocabulary).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

from backends.base import Safety, SafetyCategory
from llmops.errors import ConfigError

DEFAULT_LEXICON = Path(__file__).with_name("safety_lexicon.yaml")
SOURCE = "local-lexicon"


@dataclass(frozen=True)
class _Rule:
    pattern: re.Pattern[str]
    weight: float


@dataclass(frozen=True)
class LexiconClassifier:
    """`classify(text)` -> Safety with one entry per category; `threshold` is the blocking probability."""

    rules: dict[str, tuple[_Rule, ...]]
    threshold: float = 0.5
    version: int = 1

    def classify(self, text: str) -> Safety:
        categories = []
        for category, rules in self.rules.items():
            weights = [rule.weight for rule in rules if rule.pattern.search(text)]
            probability = 1.0
            for weight in weights:
                probability *= 1.0 - weight
            probability = round(1.0 - probability, 4)
            severity = max(weights, default=0.0)
            categories.append(SafetyCategory(category=category, probability=probability, severity=severity,
                                             blocked=probability >= self.threshold))
        blocked = [c.category for c in categories if c.blocked]
        return Safety(blocked=bool(blocked), categories=categories, source=f"{SOURCE}-v{self.version}",
                      reason=f"local classifier: {', '.join(blocked)} >= {self.threshold:g}" if blocked else None)


@lru_cache(maxsize=8)
def load_classifier(path: str | None = None, threshold: float = 0.5) -> LexiconClassifier:
    """Parse and compile the lexicon; a malformed file or pattern is a ConfigError naming it."""
    if not 0.0 < threshold <= 1.0:
        raise ConfigError(f"safety threshold must be in (0, 1], got {threshold}")
    file = Path(path) if path else DEFAULT_LEXICON
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"safety lexicon not found: {file}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"safety lexicon {file} is not valid YAML") from exc
    if not isinstance(data, dict) or set(data) != {"version", "categories"}:
        raise ConfigError(f"safety lexicon {file} must hold exactly 'version' and 'categories'")
    rules: dict[str, tuple[_Rule, ...]] = {}
    for category, items in (data["categories"] or {}).items():
        compiled = []
        for number, item in enumerate(items or []):
            if not isinstance(item, dict) or set(item) != {"pattern", "weight"}:
                raise ConfigError(f"safety lexicon {file}: {category}[{number}] needs exactly pattern and weight")
            weight = float(item["weight"])
            if not 0.0 < weight <= 1.0:
                raise ConfigError(f"safety lexicon {file}: {category}[{number}] weight must be in (0, 1]")
            try:
                compiled.append(_Rule(re.compile(item["pattern"], re.IGNORECASE), weight))
            except re.error as exc:
                raise ConfigError(f"safety lexicon {file}: {category}[{number}] bad pattern: {exc}") from exc
        rules[category] = tuple(compiled)
    return LexiconClassifier(rules=rules, threshold=threshold, version=int(data["version"]))
