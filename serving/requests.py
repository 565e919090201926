"""What the server accepts, parsed strictly: MLflow's `/invocations` formats and OpenAI's chat completions.

Pure functions from (content type, body bytes) to questions; anything else is a `RequestError` with the HTTP
status and one line naming the problem. Nothing here trusts the client: types are checked, not assumed.

/invocations (MLflow's scoring-server formats, JSON unless noted):
  {"dataframe_split": {"columns": ["question"], "data": [["..."]]}}   {"dataframe_records": [{"question": "..."}]}
  {"instances": [{"question": "..."} | "..."]}   {"inputs": {"question": ["...", ...]} | [...] | "..."}
  text/csv with a `question` column
/v1/chat/completions: {"model"?: "NAME@alias", "messages": [{"role": "user", "content": "..." | [parts]}],
  "stream"?: bool, ...}; the question is the last user message (the prompt is pinned by the model: system
  messages and earlier turns do not change it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

INVOCATION_KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")
# OpenAI request fields accepted and ignored (generation is decided by the registered model and its prompt).
CHAT_IGNORED = {"temperature", "top_p", "max_tokens", "max_completion_tokens", "presence_penalty",
                "frequency_penalty", "user", "seed", "stop", "logit_bias", "metadata", "store", "stream_options",
                "response_format", "service_tier", "parallel_tool_calls", "logprobs", "top_logprobs",
                "reasoning_effort"}


class RequestError(Exception):
    """A client error: `status` (4xx), a one-line `message`, and OpenAI's error `code` where it has one."""

    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = " ".join(message.split())
        self.code = code
        self.param = param


@dataclass(frozen=True)
class ChatRequest:
    question: str
    model: str | None
    stream: bool


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def load_json(body: bytes) -> Any:
    if not body.strip():
        raise RequestError(400, "request body is empty; send a JSON object")
    try:
        text = body.decode("utf-8")  # RFC 8259: JSON between systems is UTF-8
    except UnicodeDecodeError as exc:
        raise RequestError(400, "request body is not UTF-8") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise RequestError(400, f"request body is not valid JSON: {exc.msg} at line {exc.lineno} column "
                                f"{exc.colno}") from exc


def check_question(value: Any, where: str, max_chars: int) -> str:
    """A question must be a non-blank string within the limit (the chain normalises it again)."""
    if not isinstance(value, str):
        raise RequestError(400, f"{where} must be a string, got {_json_type(value)}")
    if not value.strip():
        raise RequestError(400, f"{where} is empty")
    if len(value) > max_chars:
        raise RequestError(400, f"{where} is {len(value)} characters long; the limit is {max_chars}")
    return value


def parse_invocations(content_type: str | None, body: bytes, *, max_questions: int, max_chars: int) -> list[str]:
    kind = media_type(content_type)
    if kind == "text/csv":
        return _limit(_csv_questions(body), max_questions, max_chars)
    if kind == "":
        raise RequestError(415, "missing Content-Type; send application/json (or text/csv)")
    if kind != "application/json":
        raise RequestError(415, f"unsupported content type {kind!r}; send application/json (or text/csv)")
    payload = load_json(body)
    if not isinstance(payload, dict):
        raise RequestError(400, f"request body must be a JSON object with one of {', '.join(INVOCATION_KEYS)}; "
                                f"got {_json_type(payload)}")
    present = [key for key in INVOCATION_KEYS if key in payload]
    unknown = sorted(set(payload) - set(INVOCATION_KEYS) - {"params"})
    if unknown:
        raise RequestError(400, f"unknown field(s) {', '.join(unknown)}; expected one of "
                                f"{', '.join(INVOCATION_KEYS)}")
    if len(present) != 1:
        raise RequestError(400, f"request body needs exactly one of {', '.join(INVOCATION_KEYS)}; got "
                                f"{', '.join(present) or 'none'}")
    if payload.get("params"):
        raise RequestError(400, "this model takes no params")
    key = present[0]
    value = payload[key]
    if key == "dataframe_split":
        questions = _split_questions(value)
    elif key == "dataframe_records":
        questions = _records_questions(value, key)
    elif key == "instances":
        questions = _list_questions(value, key)
    else:
        questions = _inputs_questions(value)
    return _limit(questions, max_questions, max_chars)


def _limit(questions: list[Any], max_questions: int, max_chars: int) -> list[str]:
    if not questions:
        raise RequestError(400, "no questions in the request")
    if len(questions) > max_questions:
        raise RequestError(413, f"{len(questions)} questions in one request; the limit is {max_questions}")
    where = "question" if len(questions) == 1 else "question {}"
    return [check_question(q, where.format(i), max_chars) for i, q in enumerate(questions)]


def _split_questions(value: Any) -> list[Any]:
    if not isinstance(value, dict):
        raise RequestError(400, f"dataframe_split must be an object with columns and data, got {_json_type(value)}")
    columns, data = value.get("columns"), value.get("data")
    if not isinstance(columns, list) or not isinstance(data, list):
        raise RequestError(400, "dataframe_split needs a list 'columns' and a list 'data'")
    if "question" not in columns:
        raise RequestError(400, f"dataframe_split needs a 'question' column; got {columns}")
    index = columns.index("question")
    questions = []
    for number, row in enumerate(data):
        if not isinstance(row, list) or len(row) != len(columns):
            raise RequestError(400, f"dataframe_split row {number} must be a list of {len(columns)} value(s)")
        questions.append(row[index])
    return questions


def _records_questions(value: Any, key: str) -> list[Any]:
    if not isinstance(value, list):
        raise RequestError(400, f"{key} must be a list of objects, got {_json_type(value)}")
    questions = []
    for number, record in enumerate(value):
        if not isinstance(record, dict) or "question" not in record:
            raise RequestError(400, f"{key} record {number} needs a 'question' field")
        questions.append(record["question"])
    return questions


def _list_questions(value: Any, key: str) -> list[Any]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        raise RequestError(400, f"{key} must be a list, got {_json_type(value)}")
    out = []
    for number, item in enumerate(value):
        if isinstance(item, dict):
            if "question" not in item:
                raise RequestError(400, f"{key} item {number} needs a 'question' field")
            out.append(item["question"])
        else:
            out.append(item)
    return out


def _inputs_questions(value: Any) -> list[Any]:
    if isinstance(value, dict):
        if set(value) != {"question"}:
            raise RequestError(400, f"inputs as an object must hold exactly a 'question' field; got "
                                    f"{sorted(value) or 'no fields'}")
        column = value["question"]
        return column if isinstance(column, list) else [column]
    return _list_questions(value, "inputs")


def _csv_questions(body: bytes) -> list[Any]:
    import csv
    import io

    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError(400, "CSV body is not UTF-8") from exc
    try:
        rows = list(csv.DictReader(io.StringIO(text)))
    except csv.Error as exc:
        raise RequestError(400, f"CSV body cannot be parsed: {exc}") from exc
    if not rows or "question" not in rows[0]:
        raise RequestError(400, "CSV body needs a header row with a 'question' column and at least one row")
    return [row["question"] for row in rows]


def parse_chat(content_type: str | None, body: bytes, *, max_chars: int) -> ChatRequest:
    kind = media_type(content_type)
    if kind != "application/json":
        raise RequestError(415, f"unsupported content type {kind or 'none'!r}; send application/json")
    payload = load_json(body)
    if not isinstance(payload, dict):
        raise RequestError(400, f"request body must be a JSON object, got {_json_type(payload)}")
    model = payload.get("model")
    if model is not None and not isinstance(model, str):
        raise RequestError(400, f"model must be a string, got {_json_type(model)}", param="model")
    stream = payload.get("stream", False)
    if not isinstance(stream, bool) and stream is not None:
        raise RequestError(400, f"stream must be a boolean, got {_json_type(stream)}", param="stream")
    n = payload.get("n", 1)
    if n not in (1, None):
        raise RequestError(400, "n must be 1: one answer per request", param="n")
    for key in ("tools", "functions", "tool_choice", "function_call"):
        if payload.get(key):
            raise RequestError(400, f"{key} is not supported by this model", param=key)
    unknown = sorted(set(payload) - {"model", "messages", "stream", "n", "tools", "functions", "tool_choice",
                                     "function_call"} - CHAT_IGNORED)
    if unknown:
        raise RequestError(400, f"unknown field(s) {', '.join(unknown)}", param=unknown[0])
    messages = payload.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError(400, "messages must be a non-empty list", param="messages")
    question = None
    for number, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise RequestError(400, f"messages[{number}] must be an object with a string role", param="messages")
        if message["role"] == "user":
            question = _content_text(message.get("content"), number)
    if question is None:
        raise RequestError(400, "messages holds no user message to answer", param="messages")
    return ChatRequest(check_question(question, "the user message", max_chars), model, bool(stream))


def _content_text(content: Any, number: int) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                kind = part.get("type") if isinstance(part, dict) else _json_type(part)
                raise RequestError(400, f"messages[{number}].content: only text parts are supported, got {kind!r}",
                                   param="messages")
            texts.append(part["text"])
        return "\n".join(texts)
    raise RequestError(400, f"messages[{number}].content must be a string or a list of text parts, got "
                            f"{_json_type(content)}", param="messages")


def _json_type(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)
