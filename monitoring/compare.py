"""One comparison: a current sample against its reference, every feature tested, Holm across the counted ones,
and a short human explanation per alarm (which feature moved, by how much, the questions that drive it)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from monitoring import stats
from monitoring.features import FeatureFrame, term_names
from monitoring.rules import ANSWER_FEATURES, AlarmRules
from monitoring.text import script_letters

MODEL_FEATURES = ("oov_rate", "common_word_share")
BINARY_FEATURES = ("abstention_rate", "safety_block_rate")
UNITS = {"question_chars": "chars", "question_tokens": "tokens", "answer_chars": "chars"}
SHARES = ("oov_rate", "non_letter_share", "script_share", "common_word_share", "citation_similarity")


@dataclass
class FeatureResult:
    name: str
    statistic: float | None
    p_value: float | None
    adjusted_p_value: float | None = None
    alarm: bool = False
    counted: bool = False
    effect: float | None = None
    method: str = ""
    summary: str = ""
    n_reference: int = 0
    n_current: int = 0
    example_rows: list[int] = field(default_factory=list)
    tested: bool = True
    samples: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)  # (reference, current) values

    def public(self) -> dict[str, Any]:
        """The keys of `llmops monitor compare --json` (plus the explanation and sizes)."""
        return {"name": self.name, "statistic": _finite(self.statistic), "p_value": _finite(self.p_value),
                "adjusted_p_value": _finite(self.adjusted_p_value), "alarm": self.alarm, "counted": self.counted,
                "effect": _finite(self.effect), "method": self.method, "summary": self.summary,
                "n_reference": self.n_reference, "n_current": self.n_current}


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


@dataclass
class Comparison:
    kind: str                      # skew | drift | compare
    status: str                    # ok | not_enough_data
    n_reference: int
    n_current: int
    features: list[FeatureResult]
    mode: str
    alpha: float
    current_texts: list[str] = field(default_factory=list, repr=False)
    note: str = ""

    @property
    def alarms(self) -> list[FeatureResult]:
        return [f for f in self.features if f.alarm]

    @property
    def drift(self) -> bool:
        """A counted feature moved (a `disabled` rule computes no alarms)."""
        return bool(self.alarms)

    @property
    def actionable(self) -> bool:
        """An alarm the trigger may act on: `dry-run` reports alarms but never acts."""
        return self.mode == "enforced" and self.drift

    def feature(self, name: str) -> FeatureResult:
        return next(f for f in self.features if f.name == name)

    def explanation(self, examples: int = 3) -> list[str]:
        if self.status != "ok":
            return [self.note or "not enough data"]
        lines = []
        for result in sorted(self.alarms, key=lambda r: (r.adjusted_p_value or 1.0, r.name)):
            line = f"{result.name} moved: {result.summary} (p={result.p_value:.2g}, Holm {result.adjusted_p_value:.2g})"
            distinct = list(dict.fromkeys(self.current_texts[i] for i in result.example_rows))  # windows repeat
            shown = [_snippet(text) for text in distinct[:examples]]
            if shown:
                line += "; e.g. " + " | ".join(shown)
            lines.append(line)
        return lines

    def examples(self, limit: int = 20) -> list[dict[str, Any]]:
        """The current questions that drive the alarms, most telling first (for review batches)."""
        out, seen = [], set()
        for result in sorted(self.alarms, key=lambda r: (r.adjusted_p_value or 1.0, r.name)):
            for rank, row in enumerate(result.example_rows):
                text = self.current_texts[row]
                if text in seen:
                    continue
                seen.add(text)
                out.append({"feature": result.name, "rank": rank, "question": text})
        return out[:limit]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "status": self.status, "drift": self.drift, "actionable": self.actionable,
                "mode": self.mode, "alpha": self.alpha, "n_reference": self.n_reference,
                "n_current": self.n_current, "features": [f.public() for f in self.features],
                "explanation": self.explanation(), "note": self.note}


def _snippet(text: str, width: int = 90) -> str:
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= width else flat[:width - 1] + "…")


def _values(frame: FeatureFrame, name: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(values, text row of each value) without missing values; None when the frame lacks the feature."""
    if name in MODEL_FEATURES:
        if name not in frame.model_numeric:
            return None
        values, rows = frame.model_numeric[name], frame.model_rows
    elif name in frame.numeric:
        values, rows = frame.numeric[name], np.arange(len(frame))
    else:
        return None
    keep = ~np.isnan(values)
    return values[keep], rows[keep]


def _describe_shift(name: str, ref: np.ndarray, cur: np.ndarray) -> str:
    if name in BINARY_FEATURES:
        return f"{ref.mean():.1%} -> {cur.mean():.1%}"
    if name in SHARES:
        return f"mean {ref.mean():.1%} -> {cur.mean():.1%}"
    unit = UNITS.get(name, "")
    ref_median, cur_median = float(np.median(ref)), float(np.median(cur))
    change = f" ({cur_median / ref_median - 1:+.0%})" if ref_median > 0 else ""
    return f"median {ref_median:.0f} -> {cur_median:.0f} {unit}{change}, mean {ref.mean():.0f} -> {cur.mean():.0f}"


def _scripts_of(frame: FeatureFrame) -> str:
    letters = script_letters(frame.texts)
    total = sum(letters.values()) or 1
    scripts = sorted(((c, s) for s, c in letters.items() if s != "Latin"), reverse=True)[:3]
    shares = ", ".join(f"{s} {c / total:.1%}" for c, s in scripts)
    return f" of a question's letters (all current letters: {shares})" if scripts else ""


def _extreme_rows(values: np.ndarray, rows: np.ndarray, higher: bool, k: int) -> list[int]:
    order = np.argsort(-values if higher else values, kind="stable")[:k]
    return [int(rows[i]) for i in order]


def _scalar(name: str, reference: FeatureFrame, current: FeatureFrame, rules: AlarmRules) -> FeatureResult | None:
    ref, cur = _values(reference, name), _values(current, name)
    if ref is None or cur is None:
        return None
    (ref_values, _), (cur_values, cur_rows) = ref, cur
    result = FeatureResult(name, None, None, n_reference=len(ref_values), n_current=len(cur_values),
                           samples=(ref_values, cur_values))
    if min(len(ref_values), len(cur_values)) < rules.min_rows:
        result.tested, result.summary = False, f"not enough rows with a value (min {rules.min_rows})"
        return result
    pooled = np.concatenate([ref_values, cur_values])
    if np.all(pooled == pooled[0]):  # decided without looking at the labels: leaving it out of Holm stays exact
        result.tested, result.summary = False, f"constant ({pooled[0]:g}) in both samples: not tested"
        return result
    test = stats.fisher(ref_values, cur_values) if name in BINARY_FEATURES else stats.mann_whitney(ref_values,
                                                                                                  cur_values)
    result.statistic, result.p_value, result.effect, result.method = test.statistic, test.p_value, test.effect, \
        test.method
    result.summary = _describe_shift(name, ref_values, cur_values)
    result.samples = (ref_values, cur_values)
    result.example_rows = _extreme_rows(cur_values, cur_rows, higher=(test.effect or 0) >= 0, k=50)
    return result


def _terms(reference: FeatureFrame, current: FeatureFrame, rules: AlarmRules) -> FeatureResult:
    n_ref, n_cur = reference.terms.shape[0], current.terms.shape[0]
    result = FeatureResult("new_terms", None, None, n_reference=n_ref, n_current=n_cur)
    width = reference.terms.shape[1]
    ref_docs = np.bincount(reference.terms.indices, minlength=width)  # binary rows: column sums
    cur_docs = np.bincount(current.terms.indices, minlength=width)
    test = stats.new_terms(ref_docs, cur_docs, n_ref, n_cur, rules.min_term_docs, rules.alpha)
    r = test.result
    result.statistic, result.p_value, result.effect, result.method = r.statistic, r.p_value, r.effect, r.method
    candidates = len(test.term_p) or 1
    significant = [i for i in range(min(len(test.columns), 50)) if test.term_p[i] * candidates < rules.alpha][:5]
    if not significant:
        result.summary = f"no term over-represented ({len(test.term_p)} candidate terms)"
        return result
    model_texts = [current.texts[i] for i in current.model_rows]
    names = term_names(model_texts, [int(test.columns[i]) for i in significant])
    parts = [f"{names.get(int(test.columns[i]), '?')!r} in {test.current_share[i]:.1%} vs {test.reference_share[i]:.1%}"
             for i in significant]
    result.summary = "; ".join(parts) + f" of questions ({len(test.term_p)} candidate terms)"
    top = [int(test.columns[i]) for i in significant]
    hits = np.asarray(current.terms[:, top].sum(1)).ravel()
    order = np.argsort(-hits, kind="stable")
    result.example_rows = [int(current.model_rows[i]) for i in order[:50] if hits[i] > 0]
    return result


def _embedding(reference: FeatureFrame, current: FeatureFrame, rules: AlarmRules, rng: np.random.Generator,
               embedder_name: str) -> FeatureResult:
    n_ref, n_cur = len(reference.embedding), len(current.embedding)
    result = FeatureResult("embedding", None, None, n_reference=n_ref, n_current=n_cur)
    test = stats.mmd(reference.embedding, current.embedding, rng, permutations=rules.permutations,
                     exact_max_rows=rules.exact_mmd_max_rows, rff_features=rules.rff_features)
    r = test.result
    result.statistic, result.p_value, result.effect = r.statistic, r.p_value, r.effect
    result.method = f"{r.method} on {embedder_name}"
    result.summary = f"MMD^2 {r.statistic:.4g} between the samples' {embedder_name} embeddings"
    order = np.argsort(-test.witness, kind="stable")[:50]
    result.example_rows = [int(current.model_rows[i]) for i in order]
    return result


def compare_frames(reference: FeatureFrame, current: FeatureFrame, rules: AlarmRules, kind: str = "compare",
                   seed: int | None = None, embedder_name: str = "embedding") -> Comparison:
    """Test every feature both frames have; alarm on the counted ones by Holm at `rules.alpha`."""
    rng = np.random.default_rng(rules.seed if seed is None else seed)
    base = Comparison(kind, "ok", len(reference), len(current), [], rules.mode, rules.alpha,
                      current_texts=current.texts)
    if min(len(reference), len(current)) < rules.min_rows:
        base.status = "not_enough_data"
        base.note = (f"not enough data: {len(reference)} reference and {len(current)} current rows "
                     f"(the rule needs {rules.min_rows} per side)")
        return base
    results: list[FeatureResult] = []
    for name in ("question_chars", "question_tokens", "oov_rate", "non_letter_share", "script_share",
                 "common_word_share"):
        found = _scalar(name, reference, current, rules)
        if found is not None:
            results.append(found)
    if reference.terms is not None and current.terms is not None:
        results.append(_terms(reference, current, rules))
    if reference.embedding is not None and current.embedding is not None:
        results.append(_embedding(reference, current, rules, rng, embedder_name))
    for name in ANSWER_FEATURES:
        found = _scalar(name, reference, current, rules)
        if found is not None:
            results.append(found)
    counted = [r for r in results if r.tested and r.name in rules.features]
    adjusted = stats.holm([r.p_value for r in counted]) if counted else []
    for result, adj in zip(counted, adjusted, strict=True):
        result.counted, result.adjusted_p_value = True, adj
        big_enough = abs(result.effect or 0.0) >= rules.min_effect.get(result.name, 0.0)
        result.alarm = rules.mode != "disabled" and adj < rules.alpha and big_enough
    for result in results:
        if result.alarm and result.name == "script_share":
            result.summary += _scripts_of(current)
        if not result.alarm:
            result.example_rows = result.example_rows[:rules.examples]
    base.features = results
    return base


def compare_sets(reference: list[str], current: list[str], rules: AlarmRules, basis: list[str] | None = None) -> Comparison:
    """`llmops monitor compare`: two question sets in one feature space (fitted on `basis`, else on both sets)."""
    from monitoring.features import FeatureSpace

    space = FeatureSpace.fit(basis if basis else list(reference) + list(current), embedding=rules.embedding,
                             dim=rules.embedding_dim, seed=rules.seed)
    rng = np.random.default_rng(rules.seed)
    ref = space.transform(reference, max_model_rows=rules.max_model_rows, rng=rng)
    cur = space.transform(current, max_model_rows=rules.max_model_rows, rng=rng)
    return compare_frames(ref, cur, rules, kind="compare", embedder_name=space.embedder.name)
