"""The `llmops-auth` server app on PostgreSQL: alias rules from the policy, as each role, on every alias endpoint.

The session's team server (tests/registry/conftest.py: PostgreSQL + `mlflow server --app-name llmops-auth`,
2 workers). Each case restores what it moved, so the other modules see the seeded state.
"""

from __future__ import annotations

import pytest

MODEL, PROMPT = "guarded-model", "guarded-prompt"
USERS = {"rm-user": "release-managers", "ml-user": "ml-team", "outsider": None}


def _try(team, user: str, kind: str, action: str, alias: str) -> str | None:
    """Call the alias endpoint as `user` through MLflow's own clients; None or the error text."""
    import mlflow
    from mlflow.exceptions import MlflowException

    with team.as_user(user):
        client = team.client()
        try:
            if kind == "model":
                if action == "set":
                    client.set_registered_model_alias(MODEL, alias, "1")
                else:
                    client.delete_registered_model_alias(MODEL, alias)
            elif action == "set":
                mlflow.genai.set_prompt_alias(PROMPT, alias, 1)
            else:
                mlflow.genai.delete_prompt_alias(PROMPT, alias)
        except MlflowException as exc:
            return str(exc.message)
    return None


def _allowed(user: str, alias: str) -> bool:
    role = USERS.get(user)
    return role == "release-managers" if alias == "production" else role in ("release-managers", "ml-team")


@pytest.mark.parametrize("kind", ["model", "prompt"])
def test_every_alias_endpoint_as_every_role(team_server, kind):
    name = MODEL if kind == "model" else PROMPT
    saved = {alias: version for model, alias, version in team_server.snapshot()["aliases"] if model == name}
    seen = []
    try:
        for user in USERS:
            for alias in ("staging", "production"):
                for action in ("set", "delete"):
                    if action == "delete":  # something to delete, as admin
                        assert _try(team_server, "admin", kind, "set", alias) is None
                    error = _try(team_server, user, kind, action, alias)
                    seen.append((user, alias, action, error))
                    if _allowed(user, alias):
                        assert error is None, (user, kind, alias, action, error)
                    elif user == "outsider":  # no MLflow permission on this model: MLflow refuses first
                        assert error is not None and "403" in error, (user, kind, alias, action)
                    else:
                        assert error is not None and "PERMISSION_DENIED" in error, (user, kind, alias, action)
                        assert f"{kind} alias '{alias}'" in error and "only " in error, error
    finally:
        with team_server.as_user("admin"):
            client = team_server.client()._get_registry_client()  # the store's calls: prompts included
            for alias in ("staging", "production"):
                if alias in saved:
                    client.set_registered_model_alias(name, alias, str(saved[alias]))
                else:
                    client.delete_registered_model_alias(name, alias)
    assert {a: v for m, a, v in team_server.snapshot()["aliases"] if m == name} == saved
    assert len(seen) == 12


def test_every_move_of_the_matrix_is_in_the_ledger_with_its_user(team_server):
    """Raw client moves are recorded by the server: actor = the authenticated user."""
    from sqlalchemy import text

    with team_server.engine().connect() as conn:
        rows = conn.execute(text("SELECT DISTINCT actor FROM llmops_alias_moves")).scalars().all()
    assert {"admin", "rm-user", "ml-user"} <= set(rows) and "outsider" not in rows


def test_mlflow_permissions_still_apply_below_the_alias_rules(team_server):
    """A READ-only user is refused by MLflow itself, before the alias rule is consulted."""
    error = _try(team_server, "reader", "model", "set", "staging")
    assert error is not None and "alias rule" not in error


def test_raw_rest_call_gets_403_naming_the_rule(team_server):
    response = team_server.rest("ml-user", "POST", "/api/2.0/mlflow/registered-models/alias",
                                json={"name": MODEL, "alias": "production", "version": "1"})
    assert response.status_code == 403
    body = response.json()
    assert body["error_code"] == "PERMISSION_DENIED"
    assert "only release-managers may set model alias 'production'" in body["message"]
    assert response.headers["x-llmops-guard"] == "alias-set"


def test_promote_reports_a_refusal_in_one_line_and_records_nothing(team_server, monkeypatch, cli):
    before = team_server.snapshot()["ledger"]
    for key, value in team_server.env("ml-user").items():
        monkeypatch.setenv(key, value)
    code, _, err = cli("registry", "promote", MODEL, "2", "--to", "production", "--reason", "try")
    assert code == 10, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "refused" in err and "only release-managers may set model alias 'production'" in err
    assert team_server.snapshot()["ledger"] == before
