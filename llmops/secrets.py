"""Credentials never reach MLflow: URLs are masked before any param, tag or MLmodel file is written.

`mask_url("https://user:pass@host/v1?api_key=k")` -> `"https://***@host/v1?api_key=***"`. Secrets belong in the
environment or a secret store (a provider's `api_key_env` names the variable); a URL's user-info and its
secret-looking query values are replaced, everything else is kept so the record still says where it pointed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MASK = "***"
SECRET_QUERY_KEYS = re.compile(r"(key|token|secret|password|passwd|pwd|signature|sig|credential|auth)",
                               re.IGNORECASE)
_URL_IN_TEXT = re.compile(r"[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s'\"<>]+")


def mask_url(url: str) -> str:
    """The URL with user-info and secret-looking query values replaced by `***` (not a URL: unchanged)."""
    if not isinstance(url, str) or "://" not in url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{MASK}@{netloc.rsplit('@', 1)[1]}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(SECRET_QUERY_KEYS.search(k) for k, _ in pairs):
            query = urlencode([(k, MASK if SECRET_QUERY_KEYS.search(k) else v) for k, v in pairs], safe="*")
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def mask_text(text: str) -> str:
    """Every URL inside free text (an error message, a notification line) masked."""
    return _URL_IN_TEXT.sub(lambda m: mask_url(m.group(0)), text) if isinstance(text, str) else text


def mask_urls(value: Any) -> Any:
    """`mask_text` applied to every string inside dicts, lists and tuples (params, tags, model_config)."""
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, Mapping):
        return {k: mask_urls(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(mask_urls(v) for v in value)
    return value
