"""POST /feedback through a real uvicorn server on 127.0.0.1 with the router mounted the way the model server mounts
it: what the server executes for every odd request (content types, query vs body, sizes, shapes, every method),
what a good request stores (provenance resolved through the log, PII redacted, pseudonymised users), and that a
refused request stores nothing."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from feedback.http import feedback_router
from llmops.records import read_feedback
from llmops.settings import load_settings
from tests.feedback.helpers import served, uvicorn_server, write_log


@pytest.fixture
def server(tmp_path: Path):
    log = tmp_path / "log"
    records = write_log(log, [
        served("How do I reverse a list?", "Use reversed(xs).", digest="abc123abc123abcd"),
        served("Show me something unsafe", "[withheld]", blocked=True),
        served("What broke?", status=500),
        served("How to merge dicts?", "a | b", role="shadow"),
    ])
    settings = load_settings({"feedback": {"log_uri": str(log), "store_uri": str(tmp_path / "store"),
                                           "max_body_bytes": 4096}})
    app = FastAPI()
    app.include_router(feedback_router(settings))
    with uvicorn_server(app) as url:
        yield {"url": url, "records": records, "store": tmp_path / "store", "log": log}


def _stored(store: Path) -> list[dict]:
    return read_feedback(str(store)).to_pylist()


def test_feedback_is_stored_with_the_provenance_of_the_answer(server) -> None:
    ok = server["records"][0]
    response = httpx.post(server["url"] + "/feedback", json={
        "request_id": ok["request_id"], "rating": "down", "user": "ann@example.com",
        "corrected_answer": "Use xs[::-1], or write to me at fix@example.com", "comment": "call +1 650 253 0000"})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["provenance"] == {"model_name": "so-qa-assistant", "model_version": "1", "prompt_name": "so-qa",
                                  "prompt_version": 1, "instruction_hash": "ih0123456789abcd",
                                  "dataset_digest": "abc123abc123abcd"}
    assert body["assessments"] == "no trace" and body["corrected"] is True
    (record,) = _stored(server["store"])
    assert record["feedback_id"] == body["feedback_id"] and record["source"] == "server"
    assert record["rating"] == 0.0 and record["rating_kind"] == "thumbs"
    assert record["question"] == "How do I reverse a list?" and record["answer"] == "Use reversed(xs)."
    assert record["corrected_answer"] == "Use xs[::-1], or write to me at [EMAIL]"
    assert "650" not in record["comment"] and "[PHONE]" in record["comment"]
    # an application user is stored as a stable pseudonym, never as given
    assert record["user"].startswith("user:") and "ann" not in record["user"]
    again = httpx.post(server["url"] + "/feedback", json={"request_id": ok["request_id"], "rating": 1,
                                                          "user": "ann@example.com"})
    assert again.status_code == 201 and again.json()["user"] == record["user"]


BAD = [
    ({"content": b'{"request_id": "x", "rating": 1}', "headers": {"content-type": "text/plain"}}, 415,
     "Content-Type: application/json"),
    ({"data": {"request_id": "x", "rating": "1"}}, 415, "application/x-www-form-urlencoded"),
    ({"content": b'{"request_id": "x"', "headers": {"content-type": "application/json"}}, 400, "malformed JSON"),
    ({"content": b"\xff\xfe", "headers": {"content-type": "application/json"}}, 400, "malformed JSON"),
    ({"json": [{"request_id": "x", "rating": 1}]}, 422, "must be a JSON object"),
    ({"json": {"request_id": "x"}}, 422, "rating"),
    ({"json": {"request_id": "", "rating": 1}}, 422, "request_id"),
    ({"json": {"request_id": "x", "rating": 1, "reting": 2}}, 422, "reting: unknown field"),
    ({"json": {"request_id": "x", "rating": 1, "model_version": "9"}}, 422, "model_version: unknown field"),
    ({"json": {"request_id": "x" * 500, "rating": 1}}, 422, "request_id"),
    ({"json": {"request_id": "x", "rating": {"a": 1}}}, 422, "rating"),
    ({"json": {"request_id": "x", "rating": 1}, "params": {"request_id": "x"}}, 400, "query string"),
    ({"content": json.dumps({"request_id": "x", "rating": 1, "comment": "y" * 6000}).encode(),
      "headers": {"content-type": "application/json"}}, 413, "max_body_bytes"),
]


@pytest.mark.parametrize(("kwargs", "status", "message"), BAD, ids=[f"{s}-{m}" for _, s, m in BAD])
def test_odd_requests_get_a_4xx_with_one_line_and_store_nothing(server, kwargs: dict, status: int,
                                                                message: str) -> None:
    response = httpx.post(server["url"] + "/feedback", **kwargs)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert message in error and "\n" not in error
    assert _stored(server["store"]) == []


def test_a_body_streamed_without_a_length_is_cut_at_the_limit(server) -> None:
    def chunks():
        yield b'{"request_id": "x", "rating": 1, "comment": "'
        for _ in range(100):
            yield b"y" * 100
        yield b'"}'

    response = httpx.post(server["url"] + "/feedback", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413 and _stored(server["store"]) == []


@pytest.mark.parametrize(("which", "payload", "status", "message"), [
    (None, {"request_id": "no-such-request", "rating": 1}, 404, "unknown request id 'no-such-request'"),
    (0, {"rating": 3}, 422, "not a thumbs rating"),
    (0, {"rating": "sideways"}, 422, "not a thumbs rating"),
    (0, {"rating": 1, "rating_kind": "scale5"}, 422, "takes thumbs ratings"),
    (0, {"rating": 0, "corrected_answer": "   "}, 422, "empty correction"),
    (1, {"rating": 0, "corrected_answer": "Here is how to do the unsafe thing"}, 422, "blocked by the safety filter"),
    (2, {"rating": 0}, 422, "failed (status 500)"),
    (3, {"rating": 0}, 404, "unknown request id"),  # a shadow copy: the client never saw that answer
    (0, {"rating": 0, "comment": "z" * 2001}, 422, "max_comment_chars"),
])
def test_feedback_the_schema_refuses(server, which: int | None, payload: dict, status: int, message: str) -> None:
    if which is not None:
        payload = {"request_id": server["records"][which]["request_id"], **payload}
    response = httpx.post(server["url"] + "/feedback", json=payload)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]
    assert _stored(server["store"]) == []


def test_a_blocked_answer_can_still_be_rated(server) -> None:
    blocked = server["records"][1]
    response = httpx.post(server["url"] + "/feedback", json={"request_id": blocked["request_id"], "rating": "up"})
    assert response.status_code == 201
    (record,) = _stored(server["store"])
    assert record["safety_blocked"] is True and record["corrected_answer"] is None


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_other_methods_are_not_allowed(server, method: str) -> None:
    response = httpx.request(method, server["url"] + "/feedback", json={"request_id": "x", "rating": 1})
    assert response.status_code == 405 and _stored(server["store"]) == []


def test_an_answer_logged_after_the_server_started_resolves(server) -> None:
    late = write_log(server["log"], [served("A question asked just now?", "An answer.")])[0]
    response = httpx.post(server["url"] + "/feedback", json={"request_id": late["request_id"], "rating": 1})
    assert response.status_code == 201, response.text


def test_concurrent_feedback_is_all_stored(server) -> None:
    ok = server["records"][0]["request_id"]
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda i: httpx.post(server["url"] + "/feedback", json={
            "request_id": ok, "rating": i % 2, "user": f"u{i}"}).status_code, range(40)))
    assert statuses == [201] * 40
    records = _stored(server["store"])
    assert len(records) == 40 and len({r["feedback_id"] for r in records}) == 40


def test_the_user_comes_from_the_proxy_header_when_configured(tmp_path: Path) -> None:
    record = write_log(tmp_path / "log", [served("Q?", "A.")])[0]
    settings = load_settings({"feedback": {"log_uri": str(tmp_path / "log"), "store_uri": str(tmp_path / "store"),
                                           "user_header": "X-Forwarded-User", "pseudonymise_app_users": False}})
    app = FastAPI()
    app.include_router(feedback_router(settings))
    with uvicorn_server(app) as url:
        body = {"request_id": record["request_id"], "rating": 1}
        assert httpx.post(url + "/feedback", json=body).status_code == 401
        spoofed = httpx.post(url + "/feedback", json={**body, "user": "mallory"},
                             headers={"X-Forwarded-User": "alice"})
        assert spoofed.status_code == 403
        assert read_feedback(str(tmp_path / "store")).num_rows == 0
        assert httpx.post(url + "/feedback", json=body, headers={"X-Forwarded-User": "alice"}).status_code == 201
    (stored,) = read_feedback(str(tmp_path / "store")).to_pylist()
    assert stored["user"] == "alice"
