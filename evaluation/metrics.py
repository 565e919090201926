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
