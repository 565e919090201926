"""Controlled rollout with a real server: a canary share within 3 points over 1,000 requests (and sticky per session
header), and a shadow challenger whose answers are logged, linked to the champion's, and never returned."""

from __future__ import annotations

import httpx
import pytest
from serving_helpers import ServerProcess, log_records, move_alias, wait_for

MODEL = "rollout-qa"


@pytest.fixture(scope="module")
def champion_and_challenger(world):
    champion, challenger = world.register(MODEL), world.register(MODEL)
    move_alias(MODEL, "production", champion, "the champion")
    move_alias(MODEL, "staging", challenger, "the challenger")
    return champion, challenger


def test_canary_splits_within_three_points_and_sticks_to_sessions(store, champion_and_challenger) -> None:
    champion, challenger = champion_and_challenger
    server = ServerProcess(store.root / "canary", store.tracking_uri, f"models:/{MODEL}@production",
                           args=("--challenger", f"models:/{MODEL}@staging", "--canary-percent", "20"), name="canary")
    with server:
        wait_for(lambda: (server.version()["challenger"] or {}).get("serving"), 60, "the challenger loaded")
        answered: dict[str, str] = {}
        with httpx.Client(timeout=30) as client:
            for _ in range(1000):
                response = client.post(server.url + "/invocations", json={"instances": ["How do I sort a dict?"]})
                assert response.status_code == 200
                version = response.headers["x-model-version"]
                assert response.json()["predictions"][0]["model_version"] == version
                answered[response.headers["x-request-id"]] = version
            share = sum(v == challenger for v in answered.values()) / len(answered)
            assert abs(share - 0.20) <= 0.03, share
            assert set(answered.values()) == {champion, challenger}

            sessions: dict[str, set[str]] = {}
            for _ in range(3):
                for i in range(300):
                    user = f"user-{i}"
                    response = client.post(server.url + "/invocations", json={"instances": ["How do I sort?"]},
                                           headers={"X-Session-ID": user})
                    sessions.setdefault(user, set()).add(response.headers["x-model-version"])
        assert all(len(versions) == 1 for versions in sessions.values())  # sticky
        sticky_share = sum(versions == {challenger} for versions in sessions.values()) / len(sessions)
        assert abs(sticky_share - 0.20) <= 0.05, sticky_share
        info = server.version()
        assert info["rollout"] == {"mode": "canary", "canary_percent": 20.0}
        assert info["challenger"]["serving"]["model_version"] == challenger
        assert info["challenger"]["serving"]["instruction_hash"] == info["instruction_hash"]
        assert server.metric("llmops_requests_total", role="challenger") == \
            sum(v == challenger for v in answered.values()) + sum(s == {challenger} for s in sessions.values()) * 3

    records = {r["request_id"]: r for r in log_records(server.log_dir)}
    for request_id, version in answered.items():
        record = records[request_id]
        assert record["model_version"] == version
        assert record["role"] == ("challenger" if version == challenger else "champion")
        assert record["model_alias"] == ("staging" if version == challenger else "production")
    hashed = {r["session_hash"] for r in records.values() if r["session_hash"]}
    assert len(hashed) == 300 and not any(h.startswith("user-") for h in hashed)  # the id itself is never logged


def test_shadow_answers_a_copy_and_only_the_champion_is_returned(store, champion_and_challenger) -> None:
    import openai

    champion, challenger = champion_and_challenger
    server = ServerProcess(store.root / "shadow", store.tracking_uri, f"models:/{MODEL}@production",
                           args=("--challenger", f"models:/{MODEL}@staging", "--shadow"), name="shadow")
    with server:
        wait_for(lambda: (server.version()["challenger"] or {}).get("serving"), 60, "the challenger loaded")
        ids = []
        for i in range(40):
            response = server.ask(f"How do I merge two dicts? ({i})")
            assert response.status_code == 200 and response.headers["x-model-version"] == champion
            assert response.json()["predictions"][0]["model_version"] == champion
            ids.append(response.headers["x-request-id"])
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
        explicit = client.chat.completions.create(model=f"{MODEL}@staging",
                                                  messages=[{"role": "user", "content": "How do I sort a dict?"}])
        assert explicit.model_extra["llmops"]["model_version"] == challenger  # asked for by name: it answers
        assert server.version()["rollout"]["mode"] == "shadow"

        def pairs():
            records = log_records(server.log_dir)
            shadows = {r["shadow_of"]: r for r in records if r["role"] == "shadow"}
            return (records, shadows) if all(i in shadows for i in ids) else None

        records, shadows = wait_for(pairs, 30, "the shadow records")
        assert server.metric("llmops_requests_total", role="shadow", status="200") == len(ids)
        assert server.metric("llmops_shadow_skipped_total") == 0
    champions = {r["request_id"]: r for r in records if r["role"] == "champion"}
    for request_id in ids:
        assert champions[request_id]["model_version"] == champion
        shadow = shadows[request_id]
        assert shadow["request_id"] == f"{request_id}-shadow" and shadow["model_version"] == challenger
        assert shadow["question"] == champions[request_id]["question"] and shadow["status"] == 200
