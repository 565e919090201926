"""What the HTTP boundary accepts, parsed by the server's own functions: every MLflow format, OpenAI chat requests,
and each kind of bad input refused with a 4xx and one line naming the problem (the live server is tested with the
same cases in test_server.py)."""

from __future__ import annotations

import json

import pytest

from serving.requests import RequestError, parse_chat, parse_invocations

JSON = "application/json"
LIMITS = {"max_questions": 4, "max_chars": 50}


def invocations(body, content_type: str = JSON, **limits):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return parse_invocations(content_type, raw, **{**LIMITS, **limits})


@pytest.mark.parametrize("body", [
    {"dataframe_split": {"columns": ["question"], "data": [["a?"], ["b?"]]}},
    {"dataframe_split": {"columns": ["id", "question"], "index": [0, 1], "data": [[1, "a?"], [2, "b?"]]}},
    {"dataframe_records": [{"question": "a?"}, {"question": "b?", "extra": 1}]},
    {"instances": [{"question": "a?"}, "b?"]},
    {"inputs": {"question": ["a?", "b?"]}},
    {"inputs": [{"question": "a?"}, {"question": "b?"}]},
])
def test_every_mlflow_format_gives_the_questions_in_order(body) -> None:
    assert invocations(body) == ["a?", "b?"]


def test_single_values_csv_and_charset_parameters() -> None:
    assert invocations({"inputs": "a?"}) == ["a?"]
    assert invocations({"inputs": {"question": "a?"}}) == ["a?"]
    assert invocations(b"question,id\na?,1\n\"b, with comma?\",2\n", "text/csv") == ["a?", "b, with comma?"]
    assert invocations({"instances": ["a?"]}, "application/json; charset=utf-8") == ["a?"]


@pytest.mark.parametrize("content_type,body,status,message", [
    (JSON, b"{not json", 400, "not valid JSON: Expecting property name enclosed in double quotes at line 1 column 2"),
    (JSON, b"", 400, "request body is empty"),
    (JSON, b"\xff\xfe", 400, "not UTF-8"),
    (JSON, b"[1, 2]", 400, "must be a JSON object"),
    (JSON, b'{"question": "a?"}', 400, "unknown field(s) question"),
    (JSON, b'{"dataframe_records": [{"question": "a"}], "inputs": ["b"]}', 400, "exactly one of"),
    (JSON, b'{"dataframe_records": [{"text": "a"}]}', 400, "record 0 needs a 'question' field"),
    (JSON, b'{"dataframe_records": {"question": "a"}}', 400, "must be a list of objects"),
    (JSON, b'{"dataframe_split": {"columns": ["q"], "data": [["a"]]}}', 400, "needs a 'question' column"),
    (JSON, b'{"dataframe_split": {"columns": ["question"], "data": [["a", "b"]]}}', 400, "row 0 must be a list of 1"),
    (JSON, b'{"inputs": {"question": ["a"], "x": 1}}', 400, "exactly a 'question' field"),
    (JSON, b'{"instances": [{"question": 5}]}', 400, "question must be a string, got a number"),
    (JSON, b'{"instances": [null]}', 400, "question must be a string, got null"),
    (JSON, b'{"instances": ["   "]}', 400, "question is empty"),
    (JSON, b'{"instances": []}', 400, "no questions in the request"),
    (JSON, b'{"instances": ["a", "b", "c", "d", "e"]}', 413, "5 questions in one request; the limit is 4"),
    (JSON, json.dumps({"instances": ["x" * 51]}).encode(), 400, "question is 51 characters long; the limit is 50"),
    (JSON, b'{"instances": ["ok", "  "]}', 400, "question 1 is empty"),
    (JSON, b'{"instances": ["a"], "params": {"temperature": 1}}', 400, "takes no params"),
    ("text/plain", b"a?", 415, "unsupported content type 'text/plain'"),
    ("application/x-www-form-urlencoded", b"question=a", 415, "unsupported content type"),
    ("", b'{"instances": ["a"]}', 415, "missing Content-Type"),
    ("text/csv", b"text\na\n", 400, "needs a header row with a 'question' column"),
])
def test_bad_invocations_are_client_errors_naming_the_problem(content_type, body, status, message) -> None:
    with pytest.raises(RequestError) as caught:
        parse_invocations(content_type, body, **LIMITS)
    assert caught.value.status == status and 400 <= status < 500
    assert message in caught.value.message and "\n" not in caught.value.message


def chat(payload, content_type: str = JSON):
    return parse_chat(content_type, json.dumps(payload).encode(), max_chars=50)


def test_chat_takes_the_last_user_message_and_ignores_generation_knobs() -> None:
    request = chat({"model": "m@prod", "temperature": 0.7, "max_tokens": 5, "messages": [
        {"role": "system", "content": "Answer like a pirate."}, {"role": "user", "content": "first?"},
        {"role": "assistant", "content": "..."}, {"role": "user", "content": [{"type": "text", "text": "last?"}]}]})
    assert (request.question, request.model, request.stream) == ("last?", "m@prod", False)
    assert chat({"messages": [{"role": "user", "content": "q?"}], "stream": True}).stream is True


@pytest.mark.parametrize("payload,message", [
    ({"messages": []}, "messages must be a non-empty list"),
    ({"messages": "hi"}, "messages must be a non-empty list"),
    ({"messages": [{"role": "system", "content": "x"}]}, "no user message"),
    ({"messages": [{"content": "x"}]}, "must be an object with a string role"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
     "only text parts are supported, got 'image_url'"),
    ({"messages": [{"role": "user", "content": 7}]}, "must be a string or a list of text parts"),
    ({"messages": [{"role": "user", "content": "  "}]}, "the user message is empty"),
    ({"messages": [{"role": "user", "content": "x" * 51}]}, "51 characters long"),
    ({"model": 3, "messages": [{"role": "user", "content": "q"}]}, "model must be a string"),
    ({"n": 2, "messages": [{"role": "user", "content": "q"}]}, "n must be 1"),
    ({"stream": "yes", "messages": [{"role": "user", "content": "q"}]}, "stream must be a boolean"),
    ({"tools": [{"type": "function"}], "messages": [{"role": "user", "content": "q"}]}, "tools is not supported"),
    ({"prompt": "q", "messages": [{"role": "user", "content": "q"}]}, "unknown field(s) prompt"),
])
def test_bad_chat_requests_are_400_with_one_line(payload, message) -> None:
    with pytest.raises(RequestError) as caught:
        chat(payload)
    assert caught.value.status == 400 and message in caught.value.message


def test_chat_wants_json() -> None:
    with pytest.raises(RequestError) as caught:
        parse_chat("text/plain", b"{}", max_chars=50)
    assert caught.value.status == 415
