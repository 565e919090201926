"""Content digest of a dataset: per-example hashes combined in id order, so it can be computed while streaming."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def row_hash(example: Mapping[str, Any]) -> str:
    """sha256 of `key US value` pairs in key order, joined by RS: independent of JSON formatting."""
    canonical = "\x1e".join(f"{key}\x1f{_text(example[key])}" for key in sorted(example))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def combine(row_hashes_in_id_order: Iterable[str]) -> str:
    return combine_lines(digest + "\n" for digest in row_hashes_in_id_order)


def combine_lines(chunks: Iterable[str]) -> str:
    """`combine` over pre-joined `hash\\n` lines: one update per chunk, however many rows it holds."""
    hasher = hashlib.sha256()
    for chunk in chunks:
        hasher.update(chunk.encode("ascii"))
    return hasher.hexdigest()[:16]


def dataset_digest(examples: Iterable[Mapping[str, Any]]) -> str:
    """Content digest of examples in id order: the same inputs always give the same version."""
    return combine(row_hash(e) for e in sorted(examples, key=lambda e: str(e["id"])))
