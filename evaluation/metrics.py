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
def _rouge():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure (longest common subsequence), from Google's rouge-score package."""
    return float(_rouge().score(reference or "", prediction or "")["rougeL"].fmeasure)


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
