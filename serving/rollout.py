"""Controlled rollout: which version answers a request (canary), and the hash that makes it sticky per session.

- With a user/session header, the choice is a pure function of the header's value: the same user always meets the
  same version (sha256 of the value -> one of 10,000 buckets; the first P% of buckets go to the challenger).
- Without one, requests are split in blocks of 100 with exactly round(P) challenger slots at random positions in
  each block: every 100 requests are split exactly (a plain coin flip is off by +-4 points over 100 requests
  about 5% of the time at P=20), yet no client can predict or align with the pattern.
Shadow traffic is not routed here: the champion always answers and the challenger gets a copy (serving/app.py).
"""

from __future__ import annotations

import hashlib
import random
import threading

BUCKETS = 10_000
BLOCK = 100


def session_hash(value: str) -> str:
    """What the log stores instead of the header value: a sha256 prefix (enough to group, never the id)."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()[:16]


def sticky_bucket(value: str) -> int:
    return int.from_bytes(hashlib.sha256(value.encode("utf-8")).digest()[:8], "big") % BUCKETS


class CanarySplitter:
    """`choose(session)` -> True when the challenger answers."""

    def __init__(self, percent: float, seed: int | None = None) -> None:
        if not 0 <= percent <= 100:
            raise ValueError(f"canary percent must be within 0..100, got {percent}")
        self.percent = float(percent)
        self._random = random.Random(seed)
        self._block: list[bool] = []
        self._carry = 0.0  # the fractional part of P carried between blocks (P=12.5 -> 12, 13, 12, 13, ...)
        self._lock = threading.Lock()

    def choose(self, session: str | None = None) -> bool:
        if self.percent <= 0:
            return False
        if self.percent >= 100:
            return True
        if session:
            return sticky_bucket(session) < self.percent * BUCKETS / 100
        with self._lock:
            if not self._block:
                self._block = self._new_block()
            return self._block.pop()

    def _new_block(self) -> list[bool]:
        wanted = self.percent + self._carry
        slots = int(wanted)
        self._carry = wanted - slots
        block = [True] * slots + [False] * (BLOCK - slots)
        self._random.shuffle(block)
        return block
