"""`llmops serve start` as a real process on 127.0.0.1 over a real SQLite store, serving a version registered by
the real release path: MLflow's request formats with the pyfunc's own answers, the probes and /version, the OpenAI
client library and LangChain's ChatOpenAI, /metrics, bad input of every kind while under load, one log record per
request with PII redacted, and no per-request writes to the tracking store unless tracing is sampled; POST /feedback
(mounted by default) resolves an answer's request id through the server's own log, at once, and logs the rating on
the request's trace when it was traced."""

from __future__ import annotations

import json
import threading

import httpx
import mlflow
import pytest
from serving_helpers import Hammer, ServerProcess, log_records, raw_request, wait_for

MODEL = "served-qa"


@pytest.fixture(scope="module")
def served(world):
    version = world.register(MODEL)
    server = ServerProcess(world.root / "server-module", world.tracking_uri, f"models:/{MODEL}@dev",
                           settings={"LLMOPS_SERVING__MAX_QUESTION_CHARS": "2000",
                                     "LLMOPS_FEEDBACK__STORE_URI": str(world.root / "server-module" / "feedback")}
                           ).start()
    yield server, version
    server.stop()


def test_invocations_answer_in_every_mlflow_format_exactly_as_the_pyfunc(store, served) -> None:
    server, version = served
    questions = ["How do I reverse a list in Python?", "qqq zzz unrelated"]
    expected = mlflow.pyfunc.load_model(f"models:/{MODEL}/{version}").predict(
        [{"question": q} for q in questions])
    bodies = [{"dataframe_records": [{"question": q} for q in questions]},
              {"dataframe_split": {"columns": ["question"], "data": [[q] for q in questions]}},
              {"instances": questions}, {"inputs": {"question": questions}}]
    ids = set()
    for body in bodies:
        response = server.post("/invocations", json=body)
        assert response.status_code == 200, response.text
        assert response.json() == {"predictions": expected}
        assert response.headers["x-model-version"] == version and response.headers["x-model-role"] == "champion"
        ids.add(response.headers["x-request-id"])
    csv = server.post("/invocations", content="question\nHow do I reverse a list in Python?\n",
                      headers={"Content-Type": "text/csv"})
    assert csv.json()["predictions"] == expected[:1]
    assert len(ids) == len(bodies)
    first = expected[0]
    assert first["model_name"] == MODEL and first["model_version"] == version and not first["abstained"]


def test_probes_and_version_describe_what_is_served(store, served) -> None:
    from mlflow.tracking import MlflowClient

    server, version = served
    assert server.get("/health").json() == {"status": "alive"} and server.get("/ping").status_code == 200
    assert server.get("/ready").json() == {"status": "ready", "model_version": version}
    info = server.version()
    tags = MlflowClient().get_model_version(MODEL, version).tags
    assert (info["model_name"], info["model_version"], info["alias"]) == (MODEL, version, "dev")
    assert info["prompt_name"] == tags["llmops.prompt_name"] == "serve-qa"
    assert info["prompt_version"] == int(tags["llmops.prompt_version"])
    assert info["instruction_hash"] == tags["llmops.instruction_hash"]
    assert info["dataset_digest"] == tags["llmops.dataset_digest"]
    assert info["champion"]["alias_points_at"] == version and info["challenger"] is None
    assert info["rollout"] == {"mode": "none", "canary_percent": None}
    assert info["ready"] is True and info["log"]["dropped"] == 0


def test_the_openai_client_library_and_langchain_talk_to_it(store, served) -> None:
    import openai
    from langchain_openai import ChatOpenAI

    server, version = served
    question = "How do I merge two dicts?"
    reference = server.ask(question).json()["predictions"][0]
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="not-needed", max_retries=0)
    for model in (f"{MODEL}@dev", MODEL):
        completion = client.chat.completions.create(model=model, messages=[
            {"role": "system", "content": "ignored: the prompt is pinned by the model"},
            {"role": "user", "content": question}])
        assert completion.choices[0].message.content == reference["answer"]
        assert completion.choices[0].finish_reason == "stop" and completion.model == f"{MODEL}/{version}"
        extra = completion.model_extra["llmops"]
        assert extra["citations"] == reference["citations"] and extra["model_version"] == version
        assert extra["safety"]["blocked"] is False and extra["request_id"] == completion.id.removeprefix("chatcmpl-")
    chunks = list(client.chat.completions.create(model=f"{MODEL}@dev", stream=True,
                                                 messages=[{"role": "user", "content": question}]))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == reference["answer"]
    with pytest.raises(openai.NotFoundError, match="is not served here"):
        client.chat.completions.create(model="someone-else@production",
                                       messages=[{"role": "user", "content": question}])
    with pytest.raises(openai.BadRequestError, match="no user message"):
        client.chat.completions.create(model=MODEL, messages=[{"role": "system", "content": "x"}])

    chat = ChatOpenAI(base_url=f"{server.url}/v1", api_key="not-needed", model=f"{MODEL}@dev", max_retries=0)
    message = chat.invoke(question)
    assert message.content == reference["answer"]


BAD_REQUESTS = [
    ("malformed JSON", "POST", "/invocations", {"content": b"{\"dataframe_records\": [", "headers": {
        "Content-Type": "application/json"}}, 400, "not valid JSON"),
    ("wrong field", "POST", "/invocations", {"json": {"dataframe_records": [{"text": "hi"}]}}, 400,
     "needs a 'question' field"),
    ("unknown top-level field", "POST", "/invocations", {"json": {"question": "hi"}}, 400, "unknown field"),
    ("empty question", "POST", "/invocations", {"json": {"instances": ["   "]}}, 400, "question is empty"),
    ("over-long question", "POST", "/invocations", {"json": {"instances": ["x" * 2001]}}, 400,
     "2001 characters long; the limit is 2000"),
    ("question of the wrong type", "POST", "/invocations", {"json": {"instances": [{"question": ["a"]}]}}, 400,
     "must be a string, got a list"),
    ("too many questions", "POST", "/invocations", {"json": {"instances": ["q"] * 65}}, 413, "the limit is 64"),
    ("oversized body", "POST", "/invocations", {"content": b"{" + b" " * 1_100_000 + b"}", "headers": {
        "Content-Type": "application/json"}}, 413, "the limit is 1048576"),
    ("oversized chunked body", "POST", "/invocations", {"content": iter([b"{" + b" " * 600_000] * 2), "headers": {
        "Content-Type": "application/json"}}, 413, "exceeds the limit of 1048576 bytes"),
    ("wrong content type", "POST", "/invocations", {"content": b"question=hi", "headers": {
        "Content-Type": "application/x-www-form-urlencoded"}}, 415, "unsupported content type"),
    ("no content type", "POST", "/invocations", {"content": b'{"instances": ["hi"]}'}, 415, "missing Content-Type"),
    ("question in the query string", "POST", "/invocations?question=hi", {}, 415, "missing Content-Type"),
    ("query string with an empty JSON body", "POST", "/invocations?instances=hi", {"content": b"", "headers": {
        "Content-Type": "application/json"}}, 400, "request body is empty"),
    ("not UTF-8", "POST", "/invocations", {"content": b'{"instances": ["\xff"]}', "headers": {
        "Content-Type": "application/json"}}, 400, "not UTF-8"),
    ("GET on a POST route", "GET", "/invocations", {}, 405, "method GET is not allowed"),
    ("unknown route", "POST", "/predict", {"json": {}}, 404, "no route POST /predict"),
    ("unknown model", "POST", "/v1/chat/completions", {"json": {"model": "other@production", "messages": [
        {"role": "user", "content": "hi"}]}}, 404, "is not served here"),
    ("chat without a user message", "POST", "/v1/chat/completions", {"json": {"messages": [
        {"role": "assistant", "content": "hi"}]}}, 400, "no user message"),
    ("chat with an empty question", "POST", "/v1/chat/completions", {"json": {"messages": [
        {"role": "user", "content": ""}]}}, 400, "the user message is empty"),
    ("chat with n=3", "POST", "/v1/chat/completions", {"json": {"n": 3, "messages": [
        {"role": "user", "content": "hi"}]}}, 400, "n must be 1"),
    ("chat with an image", "POST", "/v1/chat/completions", {"json": {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "http://x"}}]}]}}, 400, "only text parts"),
    ("chat as text", "POST", "/v1/chat/completions", {"content": b"hi", "headers": {
        "Content-Type": "text/plain"}}, 415, "unsupported content type"),
    ("chat GET", "GET", "/v1/chat/completions", {}, 405, "not allowed"),
    ("feedback as a form", "POST", "/feedback", {"content": b"request_id=x&rating=up", "headers": {
        "Content-Type": "application/x-www-form-urlencoded"}}, 415, "send the feedback as a JSON body"),
    ("feedback in the query string", "POST", "/feedback?request_id=x&rating=up", {"json": {}}, 400,
     "read from the JSON body only"),
    ("feedback malformed JSON", "POST", "/feedback", {"content": b'{"request_id": ', "headers": {
        "Content-Type": "application/json"}}, 400, "malformed JSON"),
    ("feedback with an unknown field", "POST", "/feedback", {"json": {"request_id": "x", "rating": "up",
                                                                       "model_version": "1"}}, 422, "unknown field"),
    ("feedback on an unknown request id", "POST", "/feedback", {"json": {"request_id": "nope", "rating": "up"}}, 404,
     "unknown request id 'nope'"),
    ("feedback oversized", "POST", "/feedback", {"json": {"request_id": "x", "rating": "up",
                                                          "comment": "c" * 70_000}}, 413, "larger than"),
    ("feedback GET", "GET", "/feedback", {}, 405, "method GET is not allowed"),
]
RAW_REQUESTS = [  # bytes on the wire, as no well-behaved client would send them
    ("bad Content-Length", b'POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n'
                           b'Content-Length: 12x\r\n\r\n{"instances": ["hi"]}'),
    ("path traversal", b"GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("body shorter than declared", b'POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n'
                                   b'Content-Length: 9999\r\nConnection: close\r\n\r\n{"instances"'),
    ("garbage request line", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n"),
    ("feedback body shorter than declared", b'POST /feedback HTTP/1.1\r\nHost: x\r\nContent-Type: application/json'
                                            b'\r\nContent-Length: 500\r\nConnection: close\r\n\r\n{"request_id"'),
]


def test_bad_input_is_a_4xx_with_one_line_while_under_load_and_the_server_stays_up(store, served) -> None:
    server, _ = served
    with Hammer(server, threads=3) as hammer:
        wait_for(lambda: hammer.count() > 20, 60, "the load to start")
        seen = []
        for name, method, path, kwargs, status, message in BAD_REQUESTS:
            response = httpx.request(method, server.url + path, timeout=30, **kwargs)
            assert response.status_code == status, (name, response.status_code, response.text[:300])
            text = response.text
            assert "\n" not in text.strip() and "Traceback" not in text, name
            body = response.json() if response.headers.get("content-type", "").startswith("application/json") \
                else {}
            error = body.get("error")  # MLflow's shape, OpenAI's, or feedback's {"error": "line"}
            line = body.get("message") or (error.get("message") if isinstance(error, dict) else error) or text
            assert message in line, (name, line)
            seen.append((name, status))
        for name, data in RAW_REQUESTS:
            status, body = raw_request(server.url, data, timeout_s=5, half_close="shorter than" in name)
            # 4xx from the app or from uvicorn's HTTP parser, or the connection closed (0) - never a 5xx
            assert status == 0 or 400 <= status < 500, (name, status, body[:200])
            assert b"Traceback" not in body
            seen.append((name, status))
        wait_for(lambda: hammer.count() > 60, 60, "more load")
    statuses = {status for status, *_ in hammer.results}
    assert statuses == {200} and hammer.errors == []  # no request of the concurrent client failed
    assert len(seen) == len(BAD_REQUESTS) + len(RAW_REQUESTS)
    assert server.get("/health").status_code == 200 and server.ask("How do I sort a dict?").status_code == 200
    five_hundreds = sum(server.metric("llmops_requests_total", status=str(code)) for code in (500, 502, 503, 504))
    assert five_hundreds == 0
    assert "Traceback" not in server.text() and "unexpected error" not in server.text()


def test_metrics_count_requests_latency_abstentions_and_the_log(store, served) -> None:
    server, version = served
    labels = {"endpoint": "invocations", "model_version": version, "role": "champion"}
    before = {"ok": server.metric("llmops_requests_total", status="200", **labels),
              "bad": server.metric("llmops_requests_total", status="400", endpoint="invocations"),
              "latency": server.metric("llmops_request_latency_seconds_count", **labels),
              "abstained": server.metric("llmops_abstentions_total", model_version=version)}
    abstained = 0
    for question in ["How do I reverse a list in Python?"] * 3 + ["zzz qqq xyzzy plugh"]:
        response = server.ask(question)
        assert response.status_code == 200
        abstained += response.json()["predictions"][0]["abstained"]
    assert server.post("/invocations", json={"instances": [""]}).status_code == 400
    assert server.metric("llmops_requests_total", status="200", **labels) == before["ok"] + 4
    assert server.metric("llmops_requests_total", status="400", endpoint="invocations") == before["bad"] + 1
    assert server.metric("llmops_request_latency_seconds_count", **labels) == before["latency"] + 5  # 400 too
    assert server.metric("llmops_abstentions_total", model_version=version) == before["abstained"] + abstained
    assert server.metric("llmops_serving_version", slot="champion", model_version=version) == 1
    assert server.metric("llmops_ready") == 1 and server.metric("llmops_requests_in_flight") == 0
    assert server.metric("llmops_log_records_dropped_total") == 0
    wait_for(lambda: server.metric("llmops_log_records_written_total") > 0, 30, "log records written")
    text = server.get("/metrics").text
    for name in ("llmops_safety_blocks_total", "llmops_swaps_total", "llmops_versions_refused_total",
                 "llmops_rollbacks_total", "llmops_shadow_skipped_total"):
        assert f"# TYPE {name} counter" in text, name


def test_every_request_has_exactly_one_log_record_with_the_right_versions_and_no_raw_pii(store, served) -> None:
    server, version = served
    sent = {}
    lock = threading.Lock()

    def ask(i: int) -> None:
        question = f"How do I reverse a list? I am user{i}@example.com, call me at +1 415 555 {1000 + i:04d}"
        response = server.ask(question)
        assert response.status_code == 200
        with lock:
            sent[response.headers["x-request-id"]] = question

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(30)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    many = server.post("/invocations", json={"instances": ["How do I merge dicts?", "How do I sort a dict?"]})
    refused = server.post("/invocations", json={"instances": ["  "]})
    chat = server.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "reverse a list?"}]})
    ids = [*sent, f"{many.headers['x-request-id']}.0", f"{many.headers['x-request-id']}.1",
           refused.headers["x-request-id"], chat.headers["x-request-id"]]

    def records_by_id():
        found: dict[str, list[dict]] = {}
        for record in log_records(server.log_dir):
            found.setdefault(record["request_id"], []).append(record)
        return found if all(i in found for i in ids) else None

    found = wait_for(records_by_id, 30, "every request's log record")
    for request_id in ids:
        assert len(found[request_id]) == 1, request_id  # exactly one
    for request_id in sent:
        record = found[request_id][0]
        assert (record["model_name"], record["model_version"], record["model_alias"], record["role"]) == \
            (MODEL, version, "dev", "champion")
        assert record["prompt_name"] == "serve-qa" and record["instruction_hash"] and record["dataset_digest"]
        assert record["status"] == 200 and record["endpoint"] == "invocations" and record["latency_ms"] > 0
        assert "@" not in record["question"] and "example.com" not in record["question"]
        assert "[EMAIL]" in record["question"] and "[PHONE]" in record["question"] and record["redactions"] == 2
        assert record["answer"] and record["citations"] and record["abstained"] is False
    every = log_records(server.log_dir)
    assert not any("@example.com" in (r["question"] or "") + (r["answer"] or "") for r in every)
    assert found[refused.headers["x-request-id"]][0]["status"] == 400
    assert found[refused.headers["x-request-id"]][0]["error"] == "question is empty"
    assert found[chat.headers["x-request-id"]][0]["endpoint"] == "chat"


def test_feedback_on_an_answer_resolves_through_the_servers_own_log(store, served) -> None:
    from llmops.records import read_feedback

    server, version = served
    answered = server.ask("How do I reverse a list? Write to ann@example.com")
    refused = server.post("/invocations", json={"instances": [" "]})
    request_id = answered.headers["x-request-id"]
    response = server.post("/feedback", json={"request_id": request_id, "rating": "up", "comment": "ok, ann@x.org"})
    assert response.status_code == 201, response.text
    taken = response.json()
    info = server.version()
    assert taken["request_id"] == request_id and taken["source"] == "server" and taken["assessments"] == "no trace"
    assert taken["provenance"] == {"model_name": MODEL, "model_version": version, "prompt_name": info["prompt_name"],
                                   "prompt_version": info["prompt_version"],
                                   "instruction_hash": info["instruction_hash"],
                                   "dataset_digest": info["dataset_digest"]}
    failed = server.post("/feedback", json={"request_id": refused.headers["x-request-id"], "rating": "down"})
    assert failed.status_code == 422 and "failed (status 400)" in failed.json()["error"]
    (stored,) = [r for r in read_feedback(str(store.root / "server-module" / "feedback")).to_pylist()
                 if r["request_id"] == request_id]
    assert stored["rating"] == 1.0 and stored["question"] == "How do I reverse a list? Write to [EMAIL]"
    assert stored["comment"] == "ok, [EMAIL]" and stored["model_version"] == version


def test_served_requests_write_nothing_to_the_tracking_store_and_traces_are_sampled_redacted(store, served) -> None:
    from mlflow.tracking import MlflowClient

    server, _ = served
    client = MlflowClient()

    def traces() -> list:
        return client.search_traces(locations=[e.experiment_id for e in client.search_experiments()])

    before = len(traces())  # the evaluation step's own traces
    for i in range(5):
        assert server.ask(f"How do I reverse a list? mail jo{i}@example.com").status_code == 200
    assert len(traces()) == before  # tracing is off by default: nothing per request in the tracking store

    # traced, with parts written only every 10 minutes: feedback right after an answer still resolves (the miss
    # makes the server write what its log writer holds) and lands on the request's trace
    traced = ServerProcess(store.root / "server-traced", store.tracking_uri, f"models:/{MODEL}@dev",
                           args=("--trace-sample-rate", "1.0"), name="traced",
                           settings={"LLMOPS_SERVING__PART_MAX_SECONDS": "600",
                                     "LLMOPS_FEEDBACK__STORE_URI": str(store.root / "server-traced" / "feedback")})
    with traced:
        ids = []
        for i in range(3):
            response = traced.ask(f"How do I reverse a list? mail jo{i}@example.com")
            assert response.status_code == 200
            ids.append(response.headers["x-request-id"])
        assert log_records(traced.log_dir) == []  # still in the writer
        rated = traced.post("/feedback", json={"request_id": ids[0], "rating": "down", "user": "jo@example.com",
                                               "corrected_answer": "Use reversed(xs), or xs[::-1] for a copy."})
        assert rated.status_code == 201, rated.text
        assert rated.json()["assessments"] == "logged" and rated.json()["user"].startswith("user:")
        by_id = {r["request_id"]: r for r in log_records(traced.log_dir)}
        assert set(ids) <= set(by_id)
    trace_ids = [by_id[i]["trace_id"] for i in ids]
    assert all(trace_ids) and len(set(trace_ids)) == 3

    def served_traces() -> dict[str, str]:  # the smoke questions are traced too; these are the requests'
        found = {t.info.trace_id: json.dumps(t.to_dict()) for t in traces()}
        return {i: t for i, t in found.items() if "mail jo" in t or "mail [EMAIL]" in t}

    found = wait_for(lambda: len(served_traces()) >= 3 and served_traces(), 30, "the requests' traces")
    assert len(found) == 3
    text = "".join(found.values())
    assert "[EMAIL]" in text and "@example.com" not in text
    assert set(trace_ids) == set(found)  # each record names its own request's trace
    assessments = {a.name: a for a in client.get_trace(trace_ids[0]).info.assessments}
    assert assessments["human_rating"].feedback.value == 0.0
    assert assessments["expected_response"].expectation.value == "Use reversed(xs), or xs[::-1] for a copy."
