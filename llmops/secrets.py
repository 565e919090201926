"""Masking secrets before anything is printed or logged: credentials inside URLs and values of secret-named keys.

Secrets come only from the environment or a secret store, but they still reach strings we show: a PostgreSQL
URL with its password (`registry.ledger_uri`), a token in a webhook's query string (`registry.notify_url`), a
signed object-store URL. `mask_url` keeps what a reader needs to recognise the target (scheme, user, host, path)
and replaces the secret parts with `***`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MASK = "***"

# Key names whose values are secrets. `*_env` keys hold the *name* of a variable, not its value, and stay visible.
_SECRET_NAME = re.compile(
    r"(pass(word|wd)?|secret|token|api[_-]?key|apikey|credential|private[_-]?key|access[_-]?key|auth|"
    r"signature|sig|session[_-]?key|client[_-]?secret)$|^(key|code)$",
    re.IGNORECASE,
)
# A URL with an authority part inside free text (a command line, a message).
_URL_IN_TEXT = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")


def is_secret_name(name: str) -> bool:
    """True for keys such as `password`, `api_key`, `X-Amz-Signature`, `token`; false for `api_key_env`."""
    if name.lower().endswith("_env"):
        return False
    return bool(_SECRET_NAME.search(name.replace("-", "_")))


def mask_url(url: str) -> str:
    """`postgresql://me:pw@db/x` -> `postgresql://me:***@db/x`; a user-only credential (`https://TOKEN@host`)
    and secret query parameters (`?token=...`, `X-Amz-Signature=...`) become `***`. Anything that is not a URL
    with a scheme and an authority comes back unchanged."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if not parts.scheme or not parts.netloc:
        return url
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user, sep, _password = userinfo.partition(":")
        netloc = f"{user}:{MASK}@{host}" if sep else f"{MASK}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(is_secret_name(key) for key, _ in pairs):
            query = urlencode([(key, MASK if is_secret_name(key) else value) for key, value in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def mask_text(text: str) -> str:
    """Every URL inside free text masked (e.g. a notification command line)."""
    return _URL_IN_TEXT.sub(lambda match: mask_url(match.group(0)), text)


def mask_secrets(value: Any, key: str = "") -> Any:
    """A copy of a (nested) settings dump with secret-named values replaced and credentials in URLs masked."""
    if isinstance(value, Mapping):
        return {k: mask_secrets(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask_secrets(item, key) for item in value]
    if value is not None and value != "" and is_secret_name(key):
        return MASK
    if isinstance(value, str):
        return mask_text(value)
    return value


def mask_urls(value: Any) -> Any:
    """`mask_text` applied to every string inside dicts, lists and tuples (params, tags, a model's config)."""
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, Mapping):
        return {k: mask_urls(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(mask_urls(v) for v in value)
    return value
