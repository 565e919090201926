"""The release loop against the team server (PostgreSQL): promote, approve, roll back, history and `--at` over
REST, racing promotions, and promoting clients killed with SIGKILL at many moments.

An independent witness: a PostgreSQL trigger installed by the test on MLflow's own alias table records every
change of an alias row; the ledger must hold exactly those changes, in the same order.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from datetime import UTC, datetime

import pytest
from sqlalchemy import text

ALIAS = "/api/2.0/mlflow/registered-models/alias"
AUDIT = """
CREATE TABLE IF NOT EXISTS test_alias_audit (id serial PRIMARY KEY, name text, alias text, old_version int,
                                             new_version int);
CREATE OR REPLACE FUNCTION test_alias_audit_fn() RETURNS trigger AS $$
BEGIN
  IF TG_OP = 'DELETE' THEN
    INSERT INTO test_alias_audit (name, alias, old_version) VALUES (OLD.name, OLD.alias, OLD.version);
    RETURN OLD;
  ELSIF TG_OP = 'UPDATE' THEN
    IF OLD.version IS DISTINCT FROM NEW.version OR OLD.name IS DISTINCT FROM NEW.name THEN
      INSERT INTO test_alias_audit (name, alias, old_version, new_version)
      VALUES (NEW.name, NEW.alias, OLD.version, NEW.version);
    END IF;
    RETURN NEW;
  END IF;
  INSERT INTO test_alias_audit (name, alias, new_version) VALUES (NEW.name, NEW.alias, NEW.version);
  RETURN NEW;
END $$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS test_alias_audit ON registered_model_aliases;
CREATE TRIGGER test_alias_audit AFTER INSERT OR UPDATE OR DELETE ON registered_model_aliases
  FOR EACH ROW EXECUTE FUNCTION test_alias_audit_fn();
"""


def _model(team, name: str, versions: int) -> list[str]:
    """As admin: a registered model with `versions` versions carrying a complete bundle; both roles MANAGE it."""
    from mlflow.server import get_app_client

    with team.as_user("admin"):
        client = team.client()
        client.create_registered_model(name)
        experiment = client.get_experiment_by_name("llmops").experiment_id
        made = []
        for _ in range(versions):
            run = client.create_run(experiment)
            mv = client.create_model_version(name, f"runs:/{run.info.run_id}/model", run.info.run_id,
                                             tags=team.bundle(team.eval_run_id))
            made.append(str(mv.version))
        auth = get_app_client("basic-auth", tracking_uri=team.url)
        for user in ("rm-user", "ml-user"):
            auth.grant_user_permission(username=user, resource_type="registered_model", resource_id=name,
                                       permission="MANAGE")
    return made


def _as(team, monkeypatch, user: str) -> None:
    for key, value in team.env(user).items():
        monkeypatch.setenv(key, value)


def _history(cli, name: str, *extra: str) -> list[dict] | dict:
    code, out, err = cli("registry", "history", name, "--json", *extra)
    assert code == 0, err
    return json.loads(out)


def _now_iso() -> str:
    time.sleep(0.01)
    stamp = datetime.now(UTC).isoformat(timespec="milliseconds")
    time.sleep(0.01)
    return stamp


@pytest.fixture(scope="module")
def audit(team_server):
    with team_server.engine().begin() as conn:
        conn.exec_driver_sql(AUDIT)
    return team_server


def _audit_rows(team, name: str) -> list[tuple]:
    with team.engine().connect() as conn:
        return [(r.alias, None if r.old_version is None else str(r.old_version),
                 None if r.new_version is None else str(r.new_version))
                for r in conn.execute(text("SELECT * FROM test_alias_audit WHERE name = :n ORDER BY id"), {"n": name})]


def _ledger_changes(team, name: str) -> list[tuple]:
    with team.engine().connect() as conn:
        rows = conn.execute(text("SELECT alias, from_version, to_version FROM llmops_alias_moves "
                                 "WHERE model_name = :n ORDER BY id"), {"n": name}).fetchall()
    return [tuple(r) for r in rows if r.from_version != r.to_version]


def test_promote_approve_rollback_and_history_over_rest(audit, monkeypatch, cli):
    team = audit
    v1, v2 = _model(team, "loop", 2)

    _as(team, monkeypatch, "ml-user")
    code, out, err = cli("registry", "promote", "loop", v1, "--to", "staging", "--reason", "weekly")
    assert code == 0 and "moved" in out, err
    code, out, err = cli("registry", "promote", "loop", v1, "--to", "production")
    assert code == 5 and "FAIL  approvals: 0 of 1 needed" in err  # the client's own check comes first

    code, out, err = cli("registry", "approve", "loop", v1, "--note", "read the eval")
    assert code == 0 and "approved loop v1 by ml-user" in out, err
    code, out, err = cli("registry", "approve", "loop", v1, "--by", "rita")
    assert code == 2 and "is not you" in err  # the server records the authenticated user, not a claim
    code, out, err = cli("registry", "promote", "loop", v1, "--to", "production", "--reason", "ship")
    assert code == 10 and "only release-managers may set model alias 'production'" in err

    _as(team, monkeypatch, "rm-user")
    code, out, err = cli("registry", "promote", "loop", v1, "--to", "production", "--reason", "ship")
    assert code == 0 and "moved (nothing -> v1, ledger #" in out, err
    _as(team, monkeypatch, "ml-user")
    assert cli("registry", "promote", "loop", v2, "--to", "staging")[0] == 0
    assert cli("registry", "approve", "loop", v2)[0] == 0
    _as(team, monkeypatch, "rm-user")
    code, out, err = cli("registry", "promote", "loop", v2, "--to", "production", "--reason", "second")
    assert code == 0, err
    between = _now_iso()
    code, out, err = cli("registry", "rollback", "loop", "--alias", "production", "--reason", "bad answers")
    assert code == 0, err

    moves = _history(cli, "loop", "--alias", "production")
    assert [(m["from_version"], m["to_version"], m["action"], m["actor"]) for m in moves] == [
        (None, v1, "promote", "rm-user"), (v1, v2, "promote", "rm-user"), (v2, v1, "rollback", "rm-user")]
    assert moves[2]["reason"] == "bad answers" and moves[1]["eval_run_id"] == team.eval_run_id
    assert any(c["name"] == "approvals" and c["passed"] for c in moves[1]["checks"])
    assert _history(cli, "loop", "--alias", "production", "--at", between)["aliases"] == {"production": v2}
    code, out, err = cli("registry", "show", "loop", v1)
    assert code == 0 and "approvals: 1" in out and "ml-user" in out
    assert _audit_rows(team, "loop") == _ledger_changes(team, "loop")


def test_history_at_is_right_after_cli_raw_client_and_rest_moves(audit, monkeypatch, cli):
    """Whoever moves the alias, the server's ledger has it: `--at T` answers what the alias resolved to at T."""
    team = audit
    v1, v2, v3 = _model(team, "mixed", 3)
    for version in (v1, v2, v3):
        assert team.rest("ml-user", "POST", "/api/2.0/llmops/registry/approvals",
                         json={"name": "mixed", "version": version}).status_code == 200
    resolved: list[tuple[str, str | None]] = [(_now_iso(), None)]

    def served() -> str:
        with team.as_user("admin"):
            return str(team.client().get_model_version_by_alias("mixed", "production").version)

    _as(team, monkeypatch, "ml-user")
    assert cli("registry", "promote", "mixed", v1, "--to", "staging")[0] == 0
    _as(team, monkeypatch, "rm-user")
    assert cli("registry", "promote", "mixed", v1, "--to", "production", "--reason", "cli")[0] == 0   # CLI
    resolved.append((_now_iso(), served()))
    with team.as_user("rm-user"):
        team.client().set_registered_model_alias("mixed", "production", v3)                          # raw client
    resolved.append((_now_iso(), served()))
    response = team.rest("rm-user", "POST", ALIAS, json={"name": "mixed", "alias": "production", "version": v2},
                         headers={"X-Llmops-Reason": "hotfix from curl"})                            # plain REST
    assert response.status_code == 200, response.text
    resolved.append((_now_iso(), served()))
    assert [v for _, v in resolved] == [None, v1, v3, v2]
    for when, version in resolved:
        state = _history(cli, "mixed", "--alias", "production", "--at", when)
        assert state["aliases"] == {"production": version}, (when, version)
    moves = _history(cli, "mixed", "--alias", "production")
    assert [(m["actor"], m["action"], m["reason"]) for m in moves] == [
        ("rm-user", "promote", "cli"), ("rm-user", "set", None), ("rm-user", "set", "hotfix from curl")]
    assert _audit_rows(team, "mixed") == _ledger_changes(team, "mixed")


RACER = r"""
import os, sys, time
from pathlib import Path
from llmops.cli_support import start
from llmops.errors import LlmopsError
from registry.promote import Releaser

name, version, barrier, racers = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
releaser = Releaser(start())
outcome = releaser.check(name, version, "staging")
Path(f"{barrier}.{version}").touch()
while len(list(Path(barrier).parent.glob(Path(barrier).name + ".*"))) < racers:
    time.sleep(0.005)
print("READY", flush=True)
try:
    moved = releaser.apply(outcome, reason=f"racer {version}")
    print("MOVED", moved.move.id, flush=True)
except LlmopsError as exc:
    print("REFUSED", type(exc).__name__, exc, flush=True)
"""


def _racers(team, tmp_path, name: str, versions: list[str], barrier: str) -> list[subprocess.Popen]:
    script = tmp_path / "racer.py"
    script.write_text(RACER, encoding="utf-8")
    env = {**os.environ, **team.env("ml-user")}
    return [subprocess.Popen([sys.executable, str(script), name, v, str(tmp_path / barrier), str(len(versions))],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
            for v in versions]


def test_racing_promotions_on_the_server_one_wins(audit, tmp_path):
    team = audit
    versions = _model(team, "race", 3)
    procs = _racers(team, tmp_path, "race", versions, "go")
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=240)
        outputs.append(out.strip().splitlines()[-1] if out.strip() else err[-500:])
    winners = [v for v, line in zip(versions, outputs, strict=True) if line.startswith("MOVED")]
    assert len(winners) == 1, outputs
    assert all("REFUSED ConflictError" in line and "changed while this move was checked" in line
               for line in outputs if not line.startswith("MOVED")), outputs
    assert _ledger_changes(team, "race") == [("staging", None, winners[0])] == _audit_rows(team, "race")


def test_promoting_clients_killed_at_any_moment_leave_no_move_without_its_row(audit, tmp_path):
    """SIGKILL of the promoting process at random moments around the move: the server commits the alias and
    its ledger row together or not at all."""
    team = audit
    versions = _model(team, "killed", 4)
    rng = random.Random(17)
    trials = 16
    script_dir = tmp_path / "trials"
    script_dir.mkdir()
    for batch in range(trials // 4):
        procs = []
        for slot in range(4):
            trial = tmp_path / f"t{batch}-{slot}"
            trial.mkdir()
            procs += _racers(team, trial, "killed", [versions[(batch + slot) % 4]], "go")
        delays = [rng.uniform(0, 0.08) for _ in procs]
        for proc, delay in zip(procs, delays, strict=True):
            line = proc.stdout.readline()  # READY: checks done, about to move
            assert line.startswith("READY") or proc.poll() is not None, line
            time.sleep(delay)
            proc.kill()
        for proc in procs:
            proc.communicate(timeout=60)
    changes = _ledger_changes(team, "killed")
    assert 0 < len(changes) < trials  # some moved before the kill, some were killed first
    assert changes == _audit_rows(team, "killed")
    with team.as_user("admin"):
        try:
            holder = str(team.client().get_model_version_by_alias("killed", "staging").version)
        except Exception:  # noqa: BLE001 - nothing moved at all
            holder = None
    assert (changes[-1][2] if changes else None) == holder
    for earlier, later in zip(changes, changes[1:], strict=False):  # each move starts where the previous ended
        assert later[1] == earlier[2]
    print(f"kill -9 trials: {trials}, alias moves: {len(changes)}, moves without a ledger row: 0")
