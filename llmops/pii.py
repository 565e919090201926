"""Redact personal data and secrets from free text before it is logged, stored or becomes data.

What is found, and how:
- e-mail addresses: a documented pattern (local part, `@`, a dotted domain with a 2+ letter TLD);
- phone numbers: Google's libphonenumber (the `phonenumbers` package), numbers valid for their region (any region
  when written with a `+` country code, else `default_region`) with 7+ digits; a bare digit run without `+`,
  separators or brackets counts only after a word such as "phone" or "call" (code is full of 10-digit numbers);
- payment card numbers: 13-19 digits, optionally grouped by spaces or dashes, that pass the Luhn check;
- keys and tokens: the formats of common providers (AWS, GitHub, GitLab, Slack, Google, OpenAI/Anthropic-style
  `sk-`, Stripe, JWTs, PEM private-key blocks) and any `password=`/`api_key: ...`-style assignment.

Each finding is replaced by `[EMAIL]`, `[PHONE]`, `[CARD]` or `[SECRET]`. Microsoft Presidio was considered: its
analyzer loads a spaCy model (a download at start-up) and costs milliseconds per call on a serving hot path; these
patterns cost microseconds and are tested one by one.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache

EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]{1,64}@(?:[A-Za-z0-9-]{1,63}\.)+[A-Za-z]{2,24}(?![\w-])")
CARD = re.compile(r"(?<![\w-])\d(?:[ -]?\d){12,18}(?![\w-])")
SECRET_FORMATS = (
    re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),  # AWS access key id
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,255}\b"),  # GitHub tokens
    re.compile(r"\bgithub_pat_[A-Za-z0-9_]{22,255}\b"),
    re.compile(r"\bglpat-[A-Za-z0-9_-]{20,}\b"),  # GitLab
    re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}\b"),  # Slack
    re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b"),  # Google API key
    re.compile(r"\bsk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}\b"),  # OpenAI / Anthropic style
    re.compile(r"\b[rs]k_(?:live|test)_[A-Za-z0-9]{16,}\b"),  # Stripe
    re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\b"),  # JWT
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.DOTALL),
)
# `password = hunter2`, `"api_key": "abc..."`, `token: xyz`: the value is replaced, the name is kept.
ASSIGNMENT = re.compile(
    r"(?i)\b((?:api[_-]?key|secret(?:[_-]?key)?|access[_-]?token|auth[_-]?token|token|passw(?:or)?d|pwd)"
    r"[\"']?\s*[:=]\s*[\"']?)([^\s\"',;]{6,})"
)
MIN_PHONE_DIGITS = 7
# A bare run of digits (no `+`, separators or brackets) is a phone number only after one of these words: code
# is full of 10-digit constants (2147483647 is a valid Dallas number).
PHONE_CONTEXT = re.compile(r"(?i)(?:phone|tel|telephone|mobile|cell|call|whatsapp|sms|fax)\W{0,3}$")


@dataclass(frozen=True)
class Redacted:
    """The cleaned text and how many findings of each kind were replaced."""

    text: str
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def luhn_valid(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2:
            value *= 2
            value -= 9 if value > 9 else 0
        total += value
    return total % 10 == 0


@lru_cache(maxsize=8)
def _phone_module():
    import phonenumbers

    return phonenumbers


def _redact_phones(text: str, region: str, counts: Counter[str]) -> str:
    if sum(c.isdigit() for c in text) < MIN_PHONE_DIGITS:  # the common case costs one scan
        return text
    phonenumbers = _phone_module()
    spans = []
    for match in phonenumbers.PhoneNumberMatcher(text, region, leniency=phonenumbers.Leniency.VALID):
        raw = match.raw_string
        if sum(c.isdigit() for c in raw) < MIN_PHONE_DIGITS:
            continue
        if raw.isdigit() and not PHONE_CONTEXT.search(text[max(0, match.start - 24):match.start]):
            continue
        spans.append((match.start, match.end))
    for start, end in reversed(spans):
        text = text[:start] + "[PHONE]" + text[end:]
    counts["phone"] += len(spans)
    return text


def _redact_cards(text: str, counts: Counter[str]) -> str:
    def replace(match: re.Match[str]) -> str:
        digits = re.sub(r"[ -]", "", match.group(0))
        if 13 <= len(digits) <= 19 and luhn_valid(digits):
            counts["card"] += 1
            return "[CARD]"
        return match.group(0)

    return CARD.sub(replace, text)


def redact(text: str | None, default_region: str = "US") -> Redacted:
    """Replace every finding; order matters (secrets and cards before phones, so a key is never half a phone)."""
    if not text:
        return Redacted(text or "", {})
    counts: Counter[str] = Counter()

    def count(kind: str, replacement: str):
        def replace(match: re.Match[str]) -> str:
            counts[kind] += 1
            return replacement if kind != "assignment" else match.group(1) + "[SECRET]"
        return replace

    for pattern in SECRET_FORMATS:
        text = pattern.sub(count("secret", "[SECRET]"), text)
    text = ASSIGNMENT.sub(count("assignment", ""), text)
    text = EMAIL.sub(count("email", "[EMAIL]"), text)
    text = _redact_cards(text, counts)
    text = _redact_phones(text, default_region, counts)
    if counts.get("assignment"):
        counts["secret"] += counts.pop("assignment")
    return Redacted(text, {k: v for k, v in counts.items() if v})


def redact_text(text: str | None, default_region: str = "US") -> str:
    return redact(text, default_region).text
