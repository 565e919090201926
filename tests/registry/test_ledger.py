"""The ledger: moves and alias change together, racing promotions serialize, notifications never undo a move."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import ClassVar

import pytest
from sqlalchemy import create_engine, text

RACER = r'''
import os, sys, time
from pathlib import Path
from llmops.cli_support import start
from llmops.errors import LlmopsError
from registry.promote import Releaser

name, version, policy, barrier = sys.argv[1:5]
settings = start(**{"registry.policy_file": policy})
releaser = Releaser(settings)
outcome = releaser.check(name, version, "staging")   # everyone checks while nobody holds staging
Path(barrier + "." + version).touch()
while len(list(Path(barrier).parent.glob(Path(barrier).name + ".*"))) < int(os.environ["RACERS"]):
    time.sleep(0.01)
try:
    moved = releaser.apply(outcome, reason=f"racer {version}")
    print("MOVED", moved.move.id)
except LlmopsError as exc:
    print("REFUSED", type(exc).__name__, exc)
'''



def _ledger(name: str) -> list[tuple[str | None, str | None]]:
    from mlflow.tracking import MlflowClient

    from registry.ledger import open_ledger

    return [(m.from_version, m.to_version) for m in open_ledger(None, MlflowClient()).moves(name, "staging")]


def test_racing_promotions_after_the_same_checks_one_wins(make_version, prepare_run, fast_policy, store, tmp_path,
                                                          alias_version):
    """Two processes pass their checks against 'nobody holds staging', then move at the same instant."""
    prepare_run()
    versions = [make_version("race") for _ in range(2)]
    script = tmp_path / "racer.py"
    script.write_text(RACER, encoding="utf-8")
    env = {**os.environ, "RACERS": "2"}
    procs = [subprocess.Popen([sys.executable, str(script), "race", v, str(fast_policy), str(tmp_path / "go")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for v in versions]
    results = [p.communicate(timeout=180) for p in procs]
    outputs = [out.strip().splitlines()[-1] if out.strip() else err for out, err in results]
    winners = [v for v, line in zip(versions, outputs, strict=True) if line.startswith("MOVED")]
    losers = [line for line in outputs if not line.startswith("MOVED")]
    assert len(winners) == 1, outputs
    assert all(line.startswith("REFUSED ConflictError") and "changed while this move was checked" in line
               for line in losers), outputs
    assert _ledger("race") == [(None, winners[0])]
    assert alias_version("race", "staging") == winners[0]


def test_a_move_the_ledger_cannot_record_does_not_happen(make_version, prepare_run, fast_policy, store, cli,
                                                         alias_version):
    prepare_run()
    version = make_version("atomic")
    engine = create_engine(store)
    cli("registry", "history", "atomic")  # creates the ledger tables
    with engine.begin() as conn:
        conn.execute(text("CREATE TRIGGER ledger_full BEFORE INSERT ON llmops_alias_moves "
                          "BEGIN SELECT RAISE(ABORT, 'ledger disk full'); END"))
    try:
        code, _out, err = cli("registry", "promote", "atomic", version, "--to", "staging", "--policy",
                             str(fast_policy))
    finally:
        with engine.begin() as conn:
            conn.execute(text("DROP TRIGGER ledger_full"))
    assert code == 1 and "the ledger could not record atomic@staging" in err and "ledger disk full" in err
    assert alias_version("atomic", "staging") is None and _ledger("atomic") == []


def test_a_separate_ledger_database_is_refused(make_version, store, tmp_path):
    """The ledger lives beside the registry (embedded) or on the server; a third database is not a ledger."""
    from mlflow.tracking import MlflowClient

    from llmops.errors import ConfigError
    from registry.ledger import open_ledger

    with pytest.raises(ConfigError, match="registry.ledger_uri .* is no longer used"):
        open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}", MlflowClient())
    assert open_ledger(store, MlflowClient()).atomic  # naming the registry itself is harmless


class _Hook(BaseHTTPRequestHandler):
    received: ClassVar[list[dict]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Hook.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def test_every_move_notifies_and_failures_do_not_undo_it(make_version, prepare_run, fast_policy, store, cli,
                                                         monkeypatch, tmp_path, alias_version):
    prepare_run()
    version = make_version("notify")
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    written = tmp_path / "move.json"
    try:
        monkeypatch.setenv("LLMOPS_REGISTRY__NOTIFY_URL", f"http://127.0.0.1:{server.server_port}/hook")
        monkeypatch.setenv("LLMOPS_REGISTRY__NOTIFY_COMMAND",
                           f"{sys.executable} -c \"import sys; open(r'{written}', 'w').write(sys.stdin.read())\"")
        code, out, err = cli("registry", "promote", "notify", version, "--to", "staging", "--reason", "ship",
                             "--policy", str(fast_policy))
        assert code == 0, err
        assert "notify command: ok" in out and "notify url: ok" in out
        sent = json.loads(written.read_text())
        assert (sent["alias"], sent["to_version"], sent["reason"], sent["event"]) == ("staging", version, "ship",
                                                                                     "alias_moved")
        assert _Hook.received[-1] == sent

        monkeypatch.setenv("LLMOPS_REGISTRY__NOTIFY_URL", "http://127.0.0.1:9/closed")
        monkeypatch.setenv("LLMOPS_REGISTRY__NOTIFY_COMMAND", f"{sys.executable} -c \"raise SystemExit(3)\"")
        second = make_version("notify")
        code, out, err = cli("registry", "promote", "notify", second, "--to", "staging", "--policy",
                             str(fast_policy))
    finally:
        server.shutdown()
    assert code == 0, err
    assert "notify command: FAILED (exit 3)" in out and "notify url: FAILED (ConnectError" in out
    assert alias_version("notify", "staging") == second and [to for _, to in _ledger("notify")] == [version, second]
