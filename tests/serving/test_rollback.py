"""Auto-rollback with a real server, a real registry and a provider that really misbehaves: an openai_compat
version passes its smoke questions, then its provider (the stub server) fails or slows down under traffic. The
server swaps back at once and moves the alias back through the registry, which records a ledger row with the reason
and the numbers; where the registry refuses the move, the swap back stays local and is reported."""

from __future__ import annotations

import threading

import pytest
from mlflow.tracking import MlflowClient
from serving_helpers import ServerProcess, ledger_moves, log_records, move_alias, wait_for

from tests.support.stub_server import Reply

WATCHED, LOCAL = "watched-qa", "local-only-qa"
SMOKE = 3  # the policy's smoke questions: the misbehaving version answers exactly these well
WATCH = {"LLMOPS_SERVING__WATCH_MIN_REQUESTS": "10", "LLMOPS_SERVING__ROLLBACK_MAX_P99_MS": "800",
         "LLMOPS_SERVING__WATCH_WINDOW_S": "120"}


def traffic_until(server: ServerProcess, done, threads: int = 4, timeout_s: float = 90) -> list[tuple[int, str]]:
    """Concurrent requests until `done()`; (status, version) of each."""
    import httpx

    seen: list[tuple[int, str]] = []
    stop = threading.Event()

    def run() -> None:
        with httpx.Client(timeout=60) as client:
            while not stop.is_set():
                response = client.post(server.url + "/invocations",
                                       json={"dataframe_records": [{"question": "How do I reverse a list?"}]})
                seen.append((response.status_code, response.headers.get("x-model-version")))

    workers = [threading.Thread(target=run, daemon=True) for _ in range(threads)]
    for worker in workers:
        worker.start()
    try:
        wait_for(done, timeout_s, "the rollback")
    finally:
        stop.set()
        for worker in workers:
            worker.join(60)
    return seen


@pytest.fixture(scope="module")
def watched(world, release_steps):
    remote = world.remote(release_steps)
    good = world.register(WATCHED)
    server = ServerProcess(world.root / "watched", world.tracking_uri, f"models:/{WATCHED}@dev", settings=WATCH)
    server.start()
    yield server, good, remote
    server.stop()


def rolled_back(server: ServerProcess, to_version: str):
    """The condition: serving `to_version` again and the rollback's registry outcome known (not "moving")."""
    def done():
        info = server.version()
        rollbacks = info["champion"]["rollbacks"]
        return info["model_version"] == to_version and rollbacks and rollbacks[-1]["registry"] != "moving"
    return done


def misbehave(store, reply: Reply) -> None:
    """The stub answers the smoke questions well, then every request with `reply`."""
    store.stub.queue(*[Reply(text="Slice it: xs[::-1]") for _ in range(SMOKE)])
    store.stub.default = reply


def test_an_erroring_version_is_rolled_back_with_a_ledger_row(store, watched) -> None:
    server, good, remote = watched
    misbehave(store, Reply(status=500, body='{"error": {"message": "CUDA out of memory"}}'))
    bad = store.register(WATCHED, remote)  # registration points dev at it: the server follows
    wait_for(lambda: server.version()["model_version"] == bad, 60, "the swap to the new version")
    seen = traffic_until(server, rolled_back(server, good))

    failed = [s for s, v in seen if v == bad]
    assert len(failed) >= 10 and set(failed) == {503}  # the bad version's provider failed, the server did not
    for _ in range(5):  # from now on the good version answers again
        response = server.ask("How do I reverse a list?")
        assert (response.status_code, response.headers["x-model-version"]) == (200, good)
    assert str(MlflowClient().get_model_version_by_alias(WATCHED, "dev").version) == good  # moved in the registry
    move = ledger_moves(WATCHED, "dev")[-1]
    assert (move.action, move.from_version, move.to_version) == ("rollback", bad, good)
    assert move.reason.startswith("auto-rollback by llmops serve") and "error rate 1.00" in move.reason
    assert "thresholds: error rate 0.05, p99 800 ms" in move.reason
    rollback = server.version()["champion"]["rollbacks"][-1]
    assert rollback["registry"] == "moved" and rollback["detail"] == f"ledger #{move.id}"
    assert rollback["numbers"]["errors"] >= 10 and rollback["numbers"]["error_rate"] == 1.0
    assert server.metric("llmops_rollbacks_total", from_version=bad, to_version=good, registry="moved") == 1
    assert f"rolled back v{bad} -> v{good}" in server.text()
    records = wait_for(lambda: [r for r in log_records(server.log_dir) if r["model_version"] == bad], 30, "records")
    assert {r["status"] for r in records} == {503} and all("CUDA out of memory" in r["error"] for r in records)


def test_a_slow_version_is_rolled_back_on_its_p99(store, watched) -> None:
    server, good, remote = watched
    misbehave(store, Reply(text="Slice it, slowly.", delay_s=1.5))
    slow = store.register(WATCHED, remote)
    wait_for(lambda: server.version()["model_version"] == slow, 60, "the swap to the slow version")
    seen = traffic_until(server, rolled_back(server, good), threads=6)
    assert {status for status, _ in seen} == {200}  # slow, not failing: every request was answered
    move = ledger_moves(WATCHED, "dev")[-1]
    assert (move.action, move.from_version, move.to_version) == ("rollback", slow, good)
    assert "p99 latency" in move.reason and "> 800 ms" in move.reason
    assert server.version()["champion"]["rollbacks"][-1]["numbers"]["p99_ms"] > 1400


def test_when_the_registry_refuses_the_move_the_rollback_is_local_and_reported(store, watched) -> None:
    """The alias `canary` is outside the promotion policy, so the registry refuses to move it back: the server
    swaps back by itself, keeps the bad version refused while the alias points at it, and says so."""
    _, _, remote = watched
    good = store.register(LOCAL)
    move_alias(LOCAL, "canary", good, "a canary alias the policy does not know")
    server = ServerProcess(store.root / "local-only", store.tracking_uri, f"models:/{LOCAL}@canary", settings=WATCH,
                           name="local")
    with server:
        misbehave(store, Reply(status=503, body='{"error": {"message": "overloaded"}}'))
        bad = store.register(LOCAL, remote)
        move_alias(LOCAL, "canary", bad, "try the remote version on the canary alias")
        wait_for(lambda: server.version()["model_version"] == bad, 60, "the swap")
        traffic_until(server, rolled_back(server, good))
        rollback = server.version()["champion"]["rollbacks"][-1]
        assert rollback["registry"] == "refused" and "outside the promotion policy" in rollback["detail"]
        assert rollback["detail"].endswith("swapped back locally only")
        swaps = server.version()["champion"]["swaps"]
        polled = server.version()["champion"]["last_poll"]
        wait_for(lambda: server.version()["champion"]["last_poll"] != polled, 30, "a poll after the rollback")
        info = server.version()
        assert info["champion"]["alias_points_at"] == bad and info["model_version"] == good  # stays rolled back
        assert info["champion"]["swaps"] == swaps
        assert any(r["version"] == bad and r["stage"] == "rolled back" for r in info["champion"]["refused"])
        assert server.metric("llmops_rollbacks_total", registry="refused") == 1
        assert server.ask("How do I reverse a list?").headers["x-model-version"] == good
    assert str(MlflowClient().get_model_version_by_alias(LOCAL, "canary").version) == bad
    assert ledger_moves(LOCAL, "canary")[-1].action == "promote"  # nothing was recorded as a rollback
