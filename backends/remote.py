"""What every remote provider shares: retries with exponential backoff, one error type naming provider and cause,
and the `Backend.generate` adapter over `complete`."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from backends.base import Completion, Generation
from llmops.errors import BackendError

T = TypeVar("T")
log = logging.getLogger(__name__)


class TransientError(Exception):
    """A failure worth retrying (timeout, connection refused, 429, 5xx); carries a one-line cause."""


def call_with_retries(provider: str, fn: Callable[[], T], max_retries: int, backoff_s: float = 0.5,
                      max_backoff_s: float = 8.0) -> T:
    """Run `fn`; retry `TransientError` up to `max_retries` more times. Any final failure becomes BackendError."""

    def _log(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning("%s: attempt %d failed (%s); retrying", provider, state.attempt_number, exc)

    retrying = Retrying(
        stop=stop_after_attempt(max_retries + 1),
        wait=wait_exponential(multiplier=backoff_s, max=max_backoff_s),
        retry=retry_if_exception(lambda exc: isinstance(exc, TransientError)),
        before_sleep=_log,
        reraise=True,
    )
    try:
        return retrying(fn)
    except TransientError as exc:
        raise BackendError(f"{provider}: {exc} (gave up after {max_retries + 1} attempt(s))") from exc
    except BackendError:
        raise
    except Exception as exc:
        raise BackendError(f"{provider}: {type(exc).__name__}: {exc}") from exc


class ProviderBackend:
    """Mixin: answer a question by sending the rendered prompt as one user message (plus an optional system one).

    `params` are the default generation parameters (from the prompt's `model_parameters` and the settings).
    """

    name: str
    model: str
    params: dict[str, Any]
    system: str | None = None

    def complete(self, messages: list[dict[str, str]], **params: Any) -> Completion:  # pragma: no cover
        raise NotImplementedError

    def generate(self, question: str, prompt: str) -> Generation:
        messages = ([{"role": "system", "content": self.system}] if self.system else [])
        messages.append({"role": "user", "content": prompt})
        completion = self.complete(messages, **self.params)
        return Generation(text=completion.text, citations=list(completion.citations), abstained=False,
                          usage=dict(completion.usage), safety=completion.safety)

    def with_params(self, **params: Any) -> ProviderBackend:
        """Set default generation parameters; the caller's (settings) win over the prompt's."""
        self.params = {**params, **self.params}
        return self
