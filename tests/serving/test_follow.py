"""Following the alias with a real server and a real registry: a move is followed (after a registry notification,
without waiting for the poll) while a concurrent client sees no failed request; versions that cannot load, whose
prompt no longer matches their bundle, or that fail the smoke questions are never swapped in (the server says so in
/version, /metrics and its log); a server started on such a version is not ready until the alias moves on."""

from __future__ import annotations

import time

import pytest
from serving_helpers import Hammer, ServerProcess, break_artifacts, log_records, move_alias, wait_for

from tests.support.stub_server import Reply

FOLLOW, GUARD = "follow-qa", "guarded-qa"


@pytest.fixture(scope="module")
def follow_versions(world):
    first, second = world.register(FOLLOW), world.register(FOLLOW)
    move_alias(FOLLOW, "dev", first, "start the test on the first version")
    return first, second


def test_an_alias_move_is_followed_under_load_with_no_failed_request(store, follow_versions) -> None:
    from registry.notify import notify

    first, second = follow_versions
    server = ServerProcess(store.root / "follow", store.tracking_uri, f"models:/{FOLLOW}@dev",
                           settings={"LLMOPS_SERVING__POLL_INTERVAL_S": "120"})  # only the notification can do it
    with server, Hammer(server, threads=4) as hammer:
        wait_for(lambda: hammer.count() > 40, 60, "load on the first version")
        assert server.version()["model_version"] == first
        move_alias(FOLLOW, "dev", second, "promote the second version")
        moved = time.monotonic()
        # what `llmops registry promote` does after the move when registry.notify_url points at the server
        assert notify({"event": "alias_moved", "name": FOLLOW, "alias": "dev", "to_version": second}, None,
                      f"{server.url}/admin/refresh", 5) == ["notify url: ok"]
        wait_for(lambda: second in hammer.versions_seen(), 60, "answers from the second version")
        swap_s = time.monotonic() - moved
        settled = hammer.count()
        wait_for(lambda: hammer.count() > settled + 40, 60, "load on the second version")
        info = server.version()
    assert hammer.errors == [] and {status for status, *_ in hammer.results} == {200}
    assert {version for _, version, _, _ in hammer.results} == {first, second}
    for thread in range(4):  # in each client's order: once the second version answers, the first never again
        versions = [version for _, version, _, index in hammer.results if index == thread]
        assert versions == sorted(versions, key=lambda v: v == second), thread
    assert swap_s < 15, swap_s
    assert info["model_version"] == second and info["champion"]["swaps"] == 2
    assert info["champion"]["watch"]["previous"] == first  # the old version is kept for the watch window
    assert "now serving v" + second in server.text()

    by_id = {r["request_id"]: r for r in wait_for(
        lambda: (lambda recs: recs if len(recs) >= len(hammer.results) else None)(log_records(server.log_dir)),
        30, "the log records of every request")}
    for status, version, request_id, _ in hammer.results:
        assert by_id[request_id]["model_version"] == version and by_id[request_id]["status"] == status


@pytest.fixture(scope="module")
def guarded(world, release_steps):
    """A good version, and three that must never serve: damaged artifacts, a prompt whose instruction hash no
    longer matches the bundle, and one whose provider fails the smoke questions."""
    from mlflow.tracking import MlflowClient

    broken = world.register(GUARD)
    break_artifacts(GUARD, broken)
    tampered = world.register(GUARD)
    MlflowClient().set_model_version_tag(GUARD, tampered, "llmops.instruction_hash", "0123456789abcdef")
    failing = world.register(GUARD, world.remote(release_steps))
    spare = world.register(GUARD)
    good = world.register(GUARD)  # registered last: `dev` points at it
    return {"good": good, "load": broken, "consistency": tampered, "smoke": failing, "spare": spare}


def test_broken_versions_are_refused_and_the_good_one_keeps_serving(store, guarded) -> None:
    good = guarded["good"]
    server = ServerProcess(store.root / "guard", store.tracking_uri, f"models:/{GUARD}@dev")
    with server, Hammer(server, threads=2) as hammer:
        wait_for(lambda: hammer.count() > 10, 60, "load")
        for stage, reason in [("load", "cannot load"), ("consistency", "but its bundle records"),
                              ("smoke", "failed the smoke question")]:
            bad = guarded[stage]
            if stage == "smoke":
                store.stub.default = Reply(status=500, body='{"error": {"message": "model crashed"}}')
            move_alias(GUARD, "dev", bad, f"try a version that fails at {stage}")
            refusal = wait_for(lambda bad=bad: next((r for r in server.version()["champion"]["refused"]
                                                     if r["version"] == bad), None), 60, f"the {stage} refusal")
            assert refusal["stage"] == stage and reason in refusal["reason"], refusal
            assert server.version()["model_version"] == good
            assert server.get("/ready").status_code == 200
            assert server.metric("llmops_versions_refused_total", version=bad, stage=stage) == 1
            assert f"v{bad} refused ({stage})" in server.text()
        polls = server.version()["champion"]["last_poll"]
        wait_for(lambda: server.version()["champion"]["last_poll"] != polls, 30, "another poll")
        time.sleep(2)  # more polls: a refused version is not retried while the alias stays on it
        assert server.metric("llmops_versions_refused_total", version=guarded["smoke"], stage="smoke") == 1
        move_alias(GUARD, "dev", good, "back to the good version")
        wait_for(lambda: server.version()["champion"]["alias_points_at"] == good, 30, "the alias back")
    assert {status for status, *_ in hammer.results} == {200} and hammer.errors == []
    assert {version for _, version, _, _ in hammer.results} == {good}


def test_the_consistency_check_compares_the_bundle_the_chain_and_the_prompt_registry(store, guarded) -> None:
    """A bundle that disagrees with the chain it serves, and a prompt version whose instruction hash changed in the
    Prompt Registry since the model was built, are both refused, naming the two hashes."""
    import mlflow

    from prompts.registry import INSTRUCTION_HASH_TAG
    from serving.loader import RefusedVersion, check_consistency, load_version

    with pytest.raises(RefusedVersion, match="renders prompt serve-qa v1 .* but its bundle records"):
        check_consistency(load_version(GUARD, guarded["consistency"], "dev"))
    good = load_version(GUARD, guarded["good"], "dev")
    check_consistency(good)  # the untouched one passes
    recorded = good.bundle["instruction_hash"]
    mlflow.genai.set_prompt_version_tag("serve-qa", 1, INSTRUCTION_HASH_TAG, "feedfacefeedface")
    try:
        with pytest.raises(RefusedVersion, match=f"now has instruction hash feedfacefeedface, but the model was "
                                                 f"built and trained with {recorded}"):
            check_consistency(good)
    finally:
        mlflow.genai.set_prompt_version_tag("serve-qa", 1, INSTRUCTION_HASH_TAG, recorded)
    check_consistency(good)


def test_a_server_started_on_a_refused_version_is_not_ready_until_the_alias_moves(store, guarded) -> None:
    """Prompt consistency decides readiness: a bundle whose instruction hash is not the prompt's, then an untouched
    version whose prompt version was changed in the Prompt Registry since it was built, keep the server not ready;
    a version that passes makes it ready."""
    import mlflow

    from prompts.registry import INSTRUCTION_HASH_TAG

    def not_ready(why: str):
        return lambda: (lambda r: r if r.status_code == 503 and why in r.json()["reason"] else None)(
            server.get("/ready"))

    move_alias(GUARD, "staging", guarded["consistency"], "a staging version with a tampered bundle")
    server = ServerProcess(store.root / "not-ready", store.tracking_uri, f"models:/{GUARD}@staging",
                           name="not-ready")
    recorded = mlflow.genai.load_prompt("prompts:/serve-qa/1").tags[INSTRUCTION_HASH_TAG]
    with server.start(ready=False):
        refused = wait_for(not_ready("but its bundle records"), 60, "the refusal at start")
        assert refused.json()["status"] == "not ready"
        answer = server.ask("How do I reverse a list?")
        assert answer.status_code == 503 and answer.json()["message"] == "no model version is ready yet (see /ready)"
        assert server.metric("llmops_ready") == 0
        mlflow.genai.set_prompt_version_tag("serve-qa", 1, INSTRUCTION_HASH_TAG, "feedfacefeedface")
        try:
            move_alias(GUARD, "staging", guarded["spare"], "a version whose prompt changed in the registry")
            refused = wait_for(not_ready("now has instruction hash feedfacefeedface"), 60, "the prompt refusal")
            assert f"built and trained with {recorded}" in refused.json()["reason"]
            assert server.ask("How do I reverse a list?").status_code == 503
        finally:
            mlflow.genai.set_prompt_version_tag("serve-qa", 1, INSTRUCTION_HASH_TAG, recorded)
        assert server.metric("llmops_versions_refused_total", version=guarded["spare"], stage="consistency") == 1
        move_alias(GUARD, "staging", guarded["good"], "a good version for staging")
        wait_for(lambda: server.get("/ready").status_code == 200, 60, "ready on the good version")
        assert server.ask("How do I reverse a list?").headers["x-model-version"] == guarded["good"]
        assert server.metric("llmops_ready") == 1
