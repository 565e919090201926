"""The alarm rule as data: one YAML file (monitoring/rules.yaml by default) parsed by a strict model.

It says which features count toward an alarm, at which family-wise alpha (Holm across the counted features), from
which window size on a comparison is made at all, and what to run when an alarm fires. `mode` works like the
quality gates' mode: `disabled` computes and reports but never alarms, `dry-run` reports the alarms that would fire
and never runs the trigger, `enforced` alarms and runs the trigger.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from llmops.yamlfile import load_yaml_model

QUESTION_FEATURES = ("question_chars", "question_tokens", "oov_rate", "non_letter_share", "script_share",
                     "common_word_share", "new_terms", "embedding")
ANSWER_FEATURES = ("abstention_rate", "safety_block_rate", "citation_similarity", "answer_chars")
FEATURES = QUESTION_FEATURES + ANSWER_FEATURES
# question_tokens moves with question_chars and common_word_share with oov_rate: both are reported, not counted,
# since a near-duplicate test only makes Holm stricter (measured in docs/monitoring.md).
DEFAULT_COUNTED = tuple(f for f in FEATURES if f not in ("question_tokens", "common_word_share"))
TRIGGER_PLACEHOLDERS = ("reason_file", "questions_file", "kind", "model_name", "model_version", "window_start",
                        "window_end")
DEFAULT_RULES_FILE = Path(__file__).resolve().parent / "rules.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TriggerRule(_Strict):
    """What runs when an alarm fires (or the feedback count reaches `min_feedback`)."""

    command: list[str] | None = Field(default=None, description="argv; {placeholders} from the reason are filled in.")
    when: list[Literal["skew", "drift", "feedback"]] = Field(default_factory=lambda: ["drift", "skew"])
    min_feedback: int | None = Field(default=None, ge=1, description="Negative feedback count that triggers.")
    timeout_s: float = Field(default=3600.0, gt=0)

    @field_validator("command")
    @classmethod
    def _non_empty(cls, value: list[str] | None) -> list[str] | None:
        import string

        if value is None:
            return value
        if not value or not all(isinstance(a, str) and a for a in value):
            raise ValueError("must be a non-empty list of non-empty arguments")
        for arg in value:
            try:
                names = [f for _, f, _, _ in string.Formatter().parse(arg) if f is not None]
            except ValueError as exc:
                raise ValueError(f"argument {arg!r}: {exc}") from exc
            unknown = [n for n in names if n not in TRIGGER_PLACEHOLDERS]
            if unknown:
                raise ValueError(f"argument {arg!r} uses unknown placeholder(s) {', '.join(unknown)} "
                                 f"(known: {', '.join(TRIGGER_PLACEHOLDERS)})")
        return value


class AlarmRules(_Strict):
    mode: Literal["disabled", "dry-run", "enforced"] = "enforced"
    alpha: float = Field(default=0.05, gt=0.0, le=0.5, description="Family-wise error rate per comparison.")
    correction: Literal["holm"] = "holm"
    min_rows: int = Field(default=50, ge=10, description="Rows per side below which nothing is compared.")
    features: list[str] = Field(default_factory=lambda: list(DEFAULT_COUNTED), description="Features that count.")
    min_effect: dict[str, float] = Field(default_factory=dict, description="Feature -> smallest |effect| that alarms.")
    permutations: int = Field(default=500, ge=99, le=100_000, description="Exact-MMD permutations.")
    exact_mmd_max_rows: int = Field(default=1000, ge=10, description="Per side; above: random-Fourier-feature MMD.")
    rff_features: int = Field(default=128, ge=16, le=4096)
    max_model_rows: int = Field(default=10_000, ge=100, description="Per side: rows subsampled for the token and "
                                "embedding features (lengths and scripts always use every row).")
    min_term_docs: int = Field(default=5, ge=2, description="A term is a candidate new term from this many questions.")
    embedding: Literal["tfidf", "minilm"] = "tfidf"
    embedding_dim: int = Field(default=64, ge=2, le=512, description="TF-IDF + SVD dimensions.")
    seed: int = Field(default=0, ge=0)
    examples: int = Field(default=5, ge=0, le=100, description="Example questions per alarm in the explanation.")
    trigger: TriggerRule = Field(default_factory=TriggerRule)

    @field_validator("features")
    @classmethod
    def _known_features(cls, value: list[str]) -> list[str]:
        unknown = [name for name in value if name not in FEATURES]
        if unknown:
            raise ValueError(f"unknown feature(s) {', '.join(unknown)} (known: {', '.join(FEATURES)})")
        if len(set(value)) != len(value):
            raise ValueError("lists a feature twice")
        return value

    @model_validator(mode="after")
    def _effects_named(self) -> AlarmRules:
        unknown = [name for name in self.min_effect if name not in FEATURES]
        if unknown:
            raise ValueError(f"min_effect names unknown feature(s) {', '.join(unknown)}")
        if any(v < 0 for v in self.min_effect.values()):
            raise ValueError("min_effect values must be >= 0")
        return self


def load_rules(path: str | Path | None = None) -> AlarmRules:
    """Parse the rule file (default: monitoring/rules.yaml); anything malformed is a ConfigError naming it."""
    return load_yaml_model(path or DEFAULT_RULES_FILE, AlarmRules, "alarm rule file")
