"""Deterministic text metrics, pure functions of (prediction, reference)."""

from __future__ import annotations

import re
import string
from collections import Counter
from functools import lru_cache

_PUNCT = str.maketrans("", "", string.punctuation)
_WS = re.compile(r"\s+")


def normalize(text: str) -> str:
    """SQuAD-style normalisation: lower case, no punctuation, single spaces."""
    return _WS.sub(" ", (text or "").lower().translate(_PUNCT)).strip()


def exact_match(prediction: str, reference: str) -> float:
    return float(normalize(prediction) == normalize(reference))


def token_f1(prediction: str, reference: str) -> float:
    pred, ref = normalize(prediction).split(), normalize(reference).split()
    if not pred and not ref:
        return 1.0
    if not pred or not ref:
        return 0.0
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


@lru_cache(maxsize=1)
def _rouge_tokenizer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)._tokenizer


@lru_cache(maxsize=8192)
def rouge_tokens(text: str) -> tuple[str, ...]:
    """rouge-score's own tokens of `text` (cached: the random-answer baseline scores each training answer
    against many references)."""
    return tuple(_rouge_tokenizer().tokenize(text or ""))


def lcs_length(a: tuple[str, ...], b: tuple[str, ...]) -> int:
    """Length of the longest common subsequence, bit-parallel (Allison-Dix / Hyyro): one pass over `a` with
    len(b)-bit integer operations instead of rouge-score's len(a) x len(b) Python table (30-100x faster on
    Stack Overflow-length answers; equal results, tested against rouge-score)."""
    if len(a) < len(b):
        a, b = b, a
    masks: dict[str, int] = {}
    for i, token in enumerate(b):
        masks[token] = masks.get(token, 0) | (1 << i)
    full = (1 << len(b)) - 1
    v = full
    for token in a:
        u = v & masks.get(token, 0)
        v = ((v + u) | (v - u)) & full
    return len(b) - v.bit_count()


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure (longest common subsequence) on rouge-score's tokens, as `RougeScorer(["rougeL"])`
    computes it."""
    pred, ref = rouge_tokens(prediction or ""), rouge_tokens(reference or "")
    if not pred or not ref:
        return 0.0
    common = lcs_length(ref, pred)
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def bleu(prediction: str, reference: str) -> float:
    """Sentence BLEU (sacrebleu, exponential smoothing) scaled to 0..1."""
    import sacrebleu

    if not (prediction or "").strip() or not (reference or "").strip():
        return 0.0
    return float(sacrebleu.sentence_bleu(prediction, [reference]).score) / 100.0


_FENCE = re.compile(r"```[ \t]*([\w+#.-]*)[^\n]*\n(.*?)```", re.DOTALL)
_PYTHON_TAGS = {"", "python", "py", "python3", "lang-python", "lang-py"}


def python_code_blocks(text: str) -> list[str]:
    """Fenced code blocks tagged as Python or untagged (Stack Overflow answers rarely tag their blocks)."""
    return [body for tag, body in _FENCE.findall(text or "") if tag.lower() in _PYTHON_TAGS]


def code_validity(text: str) -> tuple[float | None, str]:
    """Share of Python code blocks that `ast.parse` accepts; None when the answer holds no code."""
    import ast
    import textwrap

    blocks = python_code_blocks(text)
    if not blocks:
        return None, "no Python code blocks"
    bad = []
    for number, block in enumerate(blocks, start=1):
        try:
            ast.parse(textwrap.dedent(block))
        except (SyntaxError, ValueError) as exc:
            bad.append(f"block {number}: {getattr(exc, 'msg', exc)} (line {getattr(exc, 'lineno', '?')})")
    value = 1 - len(bad) / len(blocks)
    detail = "; ".join(bad) if bad else "all parse"
    return value, f"{len(blocks) - len(bad)}/{len(blocks)} Python code block(s) parse: {detail}"


def estimate_tokens(text: str) -> int:
    """About 4 characters per token for English and code: used only when a provider reports no usage."""
    text = text or ""
    return (len(text) + 3) // 4
