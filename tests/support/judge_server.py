"""A local OpenAI-compatible judge on 127.0.0.1: the stub chat server answering verdicts from the request.

The verdict is "yes" when the graded answer shares its first code line with the reference (or, for judges
without a reference, when the answer is non-empty), so it can disagree with the scorers. `mode="garbage"`
returns text that is not a verdict. `requests` records calls so tests can see cache hits.
"""

from __future__ import annotations

import json

from tests.support.stub_server import Reply, StubChatServer


def _between(text: str, start: str, end: str) -> str | None:
    if start not in text:
        return None
    rest = text.split(start, 1)[1]
    return rest.rsplit(end, 1)[0] if end in rest else rest


def verdict_for(user: str) -> str:
    reference = _between(user, "Reference answer:\n", "\n\nAnswer to grade:\n")
    if reference is not None:
        answer = _between(user, "Answer to grade:\n", "\n\n") or ""
        ok = bool(reference.strip()) and reference.strip().splitlines()[0][:25] in answer
    else:
        ok = bool((_between(user, "Answer:\n", "\n\n") or "").strip())
    return json.dumps({"verdict": "yes" if ok else "no", "rationale": "stub judge"})


def _not_a_verdict(_: str) -> str:
    return "I think it is fine."


class JudgeServer(StubChatServer):
    def __init__(self, mode: str = "verdict", delay_s: float = 0.0) -> None:
        """`delay_s`: simulated model latency (benchmark); `mode` may change while serving."""
        super().__init__(default=Reply(delay_s=delay_s))
        self.mode = mode

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        self._mode = value
        self.responder = _not_a_verdict if value == "garbage" else verdict_for
