"""Any server speaking OpenAI's `/v1/chat/completions` (vLLM, Ollama, llama.cpp, LM Studio, OpenAI itself).

Plain httpx, so the exact request, timeout and error handling are ours and visible; the API key is read from the
environment variable named in the settings, never stored.
"""

from __future__ import annotations

import json
import os
from typing import Any

import httpx

from backends.base import Completion, check_messages, check_params
from backends.remote import ProviderBackend, TransientError, call_with_retries
from llmops.errors import BackendError, ConfigError

_RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class OpenAICompatibleProvider(ProviderBackend):
    """`complete(messages)` POSTs `{base_url}/chat/completions`; `base_url` usually ends in `/v1`."""

    def __init__(self, base_url: str, model: str, api_key_env: str | None = None, timeout_s: float = 30,
                 max_retries: int = 3, params: dict[str, Any] | None = None, system: str | None = None,
                 backoff_s: float = 0.5) -> None:
        if not base_url or not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"openai_compat: base_url must be an http(s) URL, got {base_url!r}")
        if not model:
            raise ConfigError("openai_compat: a model id is required")
        if timeout_s <= 0 or max_retries < 0:
            raise ConfigError("openai_compat: timeout_s must be > 0 and max_retries >= 0")
        self.name = "openai_compat"
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key_env = api_key_env
        self.timeout_s = float(timeout_s)
        self.max_retries = int(max_retries)
        self.backoff_s = backoff_s
        self.params = check_params(self.name, dict(params or {}))
        self.system = system

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.api_key_env:
            key = os.environ.get(self.api_key_env)
            if not key:
                raise ConfigError(f"openai_compat: environment variable {self.api_key_env} (the API key) is not set")
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _body(self, messages: list[dict[str, str]], params: dict[str, Any]) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "messages": messages}
        for key, value in params.items():
            body["max_tokens" if key == "max_output_tokens" else key] = value
        return body

    def complete(self, messages: list[dict[str, str]], **params: Any) -> Completion:
        check_messages(self.name, messages)
        body = self._body(messages, check_params(self.name, {**self.params, **params}))
        headers = self._headers()
        url = f"{self.base_url}/chat/completions"
        where = f"{self.name} ({url}, model {self.model})"

        def attempt() -> dict[str, Any]:
            try:
                response = httpx.post(url, json=body, headers=headers, timeout=self.timeout_s)
            except httpx.TimeoutException as exc:
                raise TransientError(f"timed out after {self.timeout_s:g}s") from exc
            except httpx.TransportError as exc:
                raise TransientError(f"cannot connect: {exc}") from exc
            if response.status_code in _RETRY_STATUS:
                raise TransientError(f"HTTP {response.status_code}: {_snippet(response.text)}")
            if response.status_code >= 400:
                raise BackendError(f"{where}: HTTP {response.status_code}: {_snippet(response.text)}")
            try:
                return response.json()
            except json.JSONDecodeError as exc:
                raise BackendError(f"{where}: malformed JSON in response: {_snippet(response.text)}") from exc

        payload = call_with_retries(where, attempt, self.max_retries, self.backoff_s)
        return parse_chat_completion(where, payload)


def parse_chat_completion(where: str, payload: Any) -> Completion:
    """Validate the response shape; anything unexpected is a BackendError naming the missing part."""
    try:
        choice = payload["choices"][0]
        text = choice["message"]["content"]
    except (KeyError, IndexError, TypeError) as exc:
        raise BackendError(f"{where}: response lacks choices[0].message.content: {_snippet(json.dumps(payload))}") \
            from exc
    if text is None:
        text = ""
    if not isinstance(text, str):
        raise BackendError(f"{where}: choices[0].message.content is {type(text).__name__}, expected a string")
    usage_in = payload.get("usage") or {}
    usage = {k: int(v) for k, v in usage_in.items() if k in ("prompt_tokens", "completion_tokens", "total_tokens")
             and isinstance(v, int)}
    return Completion(text=text, usage=usage, safety=None, citations=[], raw=payload,
                      finish_reason=choice.get("finish_reason"))


def _snippet(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."
