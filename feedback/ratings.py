"""The rating schema (`feedback.rating`): thumbs (down 0 / up 1) or a 1-5 scale, and what counts as low or good.

One schema per deployment, so ratings of one model version are comparable; each record also names its kind, so a
store that outlived a change of schema still reads right.
"""

from __future__ import annotations

import math
from typing import Any

from llmops.errors import InputError

THUMBS_WORDS = {"up": 1.0, "down": 0.0, "1": 1.0, "0": 0.0, "true": 1.0, "false": 0.0, "+1": 1.0, "-1": 0.0}


def parse_rating(value: Any, kind: str) -> float:
    """The stored value of a rating given as the client sent it; outside the schema -> InputError naming it."""
    if kind == "thumbs":
        if isinstance(value, bool):
            return float(value)
        if isinstance(value, int | float) and not isinstance(value, bool) and value in (0, 1):
            return float(value)
        if isinstance(value, str) and value.strip().lower() in THUMBS_WORDS:
            return THUMBS_WORDS[value.strip().lower()]
        raise InputError(f"rating {value!r} is not a thumbs rating (up/down, 1/0, true/false)")
    if kind == "scale5":
        number: float | None = None
        if isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value.strip())
            except ValueError:
                number = None
        if number is None or not math.isfinite(number) or number != int(number) or not 1 <= number <= 5:
            raise InputError(f"rating {value!r} is not a whole number from 1 to 5")
        return number
    raise InputError(f"unknown rating kind {kind!r} (thumbs or scale5)")


def lowest(kind: str) -> float:
    return 0.0 if kind == "thumbs" else 1.0


def normalised(rating: float, kind: str) -> float:
    """0..1, comparable across kinds: thumbs as is, scale5 as (r - 1) / 4."""
    return rating if kind == "thumbs" else (rating - 1.0) / 4.0
