"""Stable split assignment: a hash of a key, so adding data never moves an existing example.

The key is the question's near-duplicate group (see `clean.group_key`): questions whose titles carry the same
topic words share it, so they always land in the same split; others hash (site, question id).
"""

from __future__ import annotations

import hashlib

SPLITS = ("train", "eval", "test")


def bucket(key: str) -> int:
    """0..99 from the first 32 bits of sha256(key)."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % 100


def split_of(question_id: int | str, eval_percent: int, namespace: str = "", test_percent: int = 0) -> str:
    """Split of one key: buckets [0, eval) -> eval, [eval, eval+test) -> test, the rest -> train."""
    b = bucket(f"{namespace}/{question_id}")
    if b < eval_percent:
        return "eval"
    if b < eval_percent + test_percent:
        return "test"
    return "train"

