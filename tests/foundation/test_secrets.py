"""Masking credentials before anything is shown: URLs, query strings, secret-named keys."""

from __future__ import annotations

import pytest

from llmops.secrets import is_secret_name, mask_secrets, mask_text, mask_url


@pytest.mark.parametrize(("url", "masked"), [
    ("postgresql://mlflow:hunter2@db.internal:5432/mlflow", "postgresql://mlflow:***@db.internal:5432/mlflow"),
    ("https://ghp_abcdef123@github.com/org/repo.git", "https://***@github.com/org/repo.git"),
    ("https://storage.example.com/b/o?X-Amz-Signature=abc&X-Amz-Expires=60",
     "https://storage.example.com/b/o?X-Amz-Signature=***&X-Amz-Expires=60"),
    ("https://acct.blob.core.windows.net/c/f?sv=2020&sig=s1g", "https://acct.blob.core.windows.net/c/f?sv=2020&sig=***"),
    ("https://api.example.com/v1?key=AIzaXYZ", "https://api.example.com/v1?key=***"),
    ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
    ("sqlite:////tmp/mlflow.db", "sqlite:////tmp/mlflow.db"),
    ("https://hooks.example.com/x?channel=ops", "https://hooks.example.com/x?channel=ops"),
    ("not a url", "not a url"),
    ("data/sample/posts.jsonl", "data/sample/posts.jsonl"),
])
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_mask_text_masks_every_url_inside() -> None:
    text = "curl -H 'X: y' https://u:p4ss@a.example.com/x && echo http://b.example.com/?token=t0k"
    assert mask_text(text) == "curl -H 'X: y' https://u:***@a.example.com/x && echo http://b.example.com/?token=***"


def test_secret_names() -> None:
    assert all(map(is_secret_name, ["password", "api_key", "apiKey", "token", "client_secret", "X-Amz-Signature"]))
    assert not any(map(is_secret_name, ["api_key_env", "max_new_tokens", "tracking_uri", "model", "base_url"]))


def test_mask_secrets_walks_nested_settings() -> None:
    dump = {"a": {"password": "pw", "api_key_env": "OPENAI_API_KEY", "url": "https://u:pw@h/x", "n": 3,
                  "token": None}, "l": ["https://u:pw@h"]}
    assert mask_secrets(dump) == {"a": {"password": "***", "api_key_env": "OPENAI_API_KEY", "url": "https://u:***@h/x",
                                        "n": 3, "token": None}, "l": ["https://u:***@h"]}
