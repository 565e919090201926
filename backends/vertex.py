"""Vertex AI Gemini through google-genai (`genai.Client(vertexai=True, ...)`): base model ids such as
`gemini-2.5-flash` or a tuned model's endpoint `projects/P/locations/L/endpoints/E`.

Vertex scores safety and cites sources itself; both are mapped to the provider-neutral `Safety` / `Citation`.
"""

from __future__ import annotations

import threading
from typing import Any

from backends.base import (
    Citation,
    Completion,
    Safety,
    SafetyCategory,
    check_messages,
    check_params,
)
from backends.remote import ProviderBackend, TransientError, call_with_retries
from llmops.errors import BackendError, ConfigError

_BLOCKING_FINISH = {"SAFETY", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY", "RECITATION"}
_RETRY_CODES = {408, 429, 500, 502, 503, 504}
# When Vertex gives only a label, this is the score reported (the middle of the label's band).
LABEL_SCORES = {"NEGLIGIBLE": 0.05, "LOW": 0.3, "MEDIUM": 0.6, "HIGH": 0.9}


class VertexGeminiProvider(ProviderBackend):
    """`client` may be given (tests pass a fake implementing `client.models.generate_content`); otherwise one is
    built with Application Default Credentials for `project`/`location` (or GOOGLE_CLOUD_PROJECT/LOCATION)."""

    def __init__(self, model: str, project: str | None = None, location: str | None = None, client: Any = None,
                 timeout_s: float = 60, max_retries: int = 3, params: dict[str, Any] | None = None,
                 system: str | None = None, backoff_s: float = 0.5, api_endpoint: str | None = None) -> None:
        if not model:
            raise ConfigError("vertex: a model id is required (e.g. gemini-2.5-flash or a tuned endpoint)")
        if timeout_s <= 0 or max_retries < 0:
            raise ConfigError("vertex: timeout_s must be > 0 and max_retries >= 0")
        self.name = "vertex"
        self.model = model
        self.project = project
        self.location = location
        self.timeout_s = float(timeout_s)
        self.max_retries = int(max_retries)
        self.backoff_s = backoff_s
        self.params = check_params(self.name, dict(params or {}))
        self.system = system
        self.api_endpoint = api_endpoint  # a regional / Private Service Connect endpoint; None: Google's default
        self._client = client
        self._client_lock = threading.Lock()

    @property
    def client(self) -> Any:
        """Built on first use, so constructing the provider (e.g. at model load) needs no credentials. Once, under
        a lock: two threads building one each would drop one, and google-genai closes a dropped client's HTTP pool
        while its thread is still sending ("Cannot send a request, as the client has been closed")."""
        if self._client is not None:
            return self._client
        with self._client_lock:
            return self._build_client()

    def _build_client(self) -> Any:
        if self._client is None:
            try:
                from google import genai
                from google.genai import types
            except ImportError as exc:
                raise ConfigError("vertex needs the 'gcp' extra: pip install 'llmops-mlflow[gcp]'") from exc
            try:
                self._client = genai.Client(
                    vertexai=True, project=self.project, location=self.location,
                    http_options=types.HttpOptions(timeout=int(self.timeout_s * 1000), base_url=self.api_endpoint),
                )
            except Exception as exc:
                raise BackendError(f"vertex: cannot create a client: {type(exc).__name__}: {exc}") from exc
        return self._client

    def _config(self, system: str | None, params: dict[str, Any]) -> Any:
        from google.genai import types

        mapped = {("stop_sequences" if k == "stop" else k): v for k, v in params.items()}
        if isinstance(mapped.get("stop_sequences"), str):
            mapped["stop_sequences"] = [mapped["stop_sequences"]]
        return types.GenerateContentConfig(system_instruction=system, **mapped)

    def complete(self, messages: list[dict[str, str]], **params: Any) -> Completion:
        from google.genai import errors, types

        check_messages(self.name, messages)
        merged = check_params(self.name, {**self.params, **params})
        system = "\n\n".join(m["content"] for m in messages if m["role"] == "system") or None
        contents = [types.Content(role="model" if m["role"] == "assistant" else "user",
                                  parts=[types.Part(text=m["content"])])
                    for m in messages if m["role"] != "system"]
        config = self._config(system, merged)
        where = f"vertex (model {self.model})"

        def attempt() -> Any:
            import httpx

            try:
                return self.client.models.generate_content(model=self.model, contents=contents, config=config)
            except errors.APIError as exc:
                cause = f"HTTP {exc.code} {exc.status or ''}: {exc.message or exc}".strip()
                if exc.code in _RETRY_CODES:
                    raise TransientError(cause) from exc
                raise BackendError(f"{where}: {cause}") from exc
            except httpx.TimeoutException as exc:
                raise TransientError(f"timed out after {self.timeout_s:g}s") from exc
            except httpx.TransportError as exc:
                raise TransientError(f"cannot connect: {exc}") from exc
            except TimeoutError as exc:
                raise TransientError(f"timed out after {self.timeout_s:g}s") from exc

        response = call_with_retries(where, attempt, self.max_retries, self.backoff_s)
        return parse_response(where, response)


def parse_response(where: str, response: Any) -> Completion:
    """Map a `types.GenerateContentResponse` to a Completion; a response of another shape is a BackendError."""
    from google.genai import types

    if not isinstance(response, types.GenerateContentResponse):
        raise BackendError(f"{where}: unexpected response type {type(response).__name__}")
    usage = _usage(response.usage_metadata)
    raw = response.model_dump(mode="json", exclude_none=True)
    feedback = response.prompt_feedback
    if feedback is not None and feedback.block_reason is not None:
        reason = f"prompt blocked: {_label(feedback.block_reason)}"
        return Completion(text="", usage=usage, raw=raw, finish_reason="PROMPT_BLOCKED",
                          safety=map_safety(feedback.safety_ratings or [], blocked=True, reason=reason))
    if not response.candidates:
        raise BackendError(f"{where}: response has no candidates and no block reason")
    candidate = response.candidates[0]
    parts = (candidate.content.parts if candidate.content and candidate.content.parts else [])
    text = "".join(part.text for part in parts if part.text and not part.thought)
    finish = _label(candidate.finish_reason) if candidate.finish_reason is not None else None
    blocked_by_finish = finish in _BLOCKING_FINISH
    safety = map_safety(candidate.safety_ratings or [], blocked=blocked_by_finish,
                        reason=f"finish reason {finish}" if blocked_by_finish else None)
    return Completion(text=text, usage=usage, safety=safety, citations=map_citations(candidate.citation_metadata),
                      raw=raw, finish_reason=finish)


def map_safety(ratings: list[Any], blocked: bool = False, reason: str | None = None) -> Safety:
    """Vertex `SafetyRating`s -> `Safety`; scores are Vertex's own (labels mapped via LABEL_SCORES if no score)."""
    categories = []
    for rating in ratings:
        prob_label = _label(rating.probability) if rating.probability is not None else None
        sev_label = _label(rating.severity).removeprefix("HARM_SEVERITY_") if rating.severity is not None else None
        probability = rating.probability_score if rating.probability_score is not None \
            else LABEL_SCORES.get(prob_label or "")
        severity = rating.severity_score if rating.severity_score is not None else LABEL_SCORES.get(sev_label or "")
        category = _label(rating.category).removeprefix("HARM_CATEGORY_").lower() if rating.category else "unknown"
        categories.append(SafetyCategory(category=category, probability=probability, severity=severity,
                                         probability_label=prob_label, severity_label=sev_label,
                                         blocked=bool(rating.blocked)))
    is_blocked = blocked or any(c.blocked for c in categories)
    if is_blocked and reason is None:
        reason = "blocked by Vertex safety filter: " + ", ".join(c.category for c in categories if c.blocked)
    return Safety(blocked=is_blocked, categories=categories, source="vertex", reason=reason)


def map_citations(metadata: Any) -> list[Citation]:
    if metadata is None or not metadata.citations:
        return []
    out = []
    for number, citation in enumerate(metadata.citations):
        link = citation.uri or ""
        out.append(Citation(source_id=link or citation.title or f"citation-{number}", link=link, similarity=None,
                            start_index=citation.start_index, end_index=citation.end_index, title=citation.title,
                            kind="provider"))
    return out


def _usage(metadata: Any) -> dict[str, int]:
    if metadata is None:
        return {}
    pairs = {"prompt_tokens": metadata.prompt_token_count, "completion_tokens": metadata.candidates_token_count,
             "total_tokens": metadata.total_token_count}
    return {k: int(v) for k, v in pairs.items() if v is not None}


def _label(value: Any) -> str:
    return str(getattr(value, "value", value))
