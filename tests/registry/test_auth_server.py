"""The `llmops-auth` MLflow server app: alias rules from the policy, enforced on every alias endpoint.

One real `mlflow server --app-name llmops-auth` on 127.0.0.1 per module, users in each role, every alias
endpoint (set and delete, for a registered model and for a prompt) tried as each user.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

ADMIN_PASSWORD = "admin-password-123456"
PASSWORD = "user-password-123456"
USERS = {"rm-user": "release-managers", "ml-user": "ml-team", "outsider": None}
MODEL, PROMPT = "guarded-model", "guarded-prompt"
MLFLOW = str(Path(sys.executable).parent / "mlflow")
REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _policy(path: Path) -> Path:
    data = yaml.safe_load((REPO / "registry" / "policy.yaml").read_text(encoding="utf-8"))
    data["rights"]["roles"] = {"release-managers": ["rm-user"], "ml-team": ["ml-user"]}
    # production without quality checks here: this module tests rights, not gates
    data["aliases"]["production"] = {"requires_prior": [], "gates": None, "approvals": 0}
    data["dataset"] = {"require_current": False}
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("auth-server")
    policy = _policy(root / "policy.yaml")
    ini = root / "auth.ini"
    ini.write_text(f"[mlflow]\ndefault_permission = READ\ndatabase_uri = sqlite:///{root / 'auth.db'}\n"
                   "admin_username = admin\nauth_cache_ttl_seconds = 300\n"
                   "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "LLMOPS_"))}
    env.update(MLFLOW_FLASK_SERVER_SECRET_KEY="test-secret-key", MLFLOW_AUTH_ADMIN_PASSWORD=ADMIN_PASSWORD,
               MLFLOW_AUTH_CONFIG_PATH=str(ini), LLMOPS_REGISTRY__POLICY_FILE=str(policy),
               MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    log = (root / "server.log").open("w")
    proc = subprocess.Popen([MLFLOW, "server", "--app-name", "llmops-auth", "--host", "127.0.0.1", "--port",
                             str(port), "--workers", "1", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}"],
                            cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail(f"auth server did not start:\n{(root / 'server.log').read_text()[-3000:]}")
        time.sleep(0.5)
    try:
        _seed(url)
        yield {"url": url, "root": root, "policy": policy}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def _as(user: str, password: str = PASSWORD) -> None:
    os.environ["MLFLOW_TRACKING_USERNAME"] = user
    os.environ["MLFLOW_TRACKING_PASSWORD"] = password


def _seed(url: str) -> None:
    """As admin: users, a model with two versions and a complete bundle, a prompt with two versions."""
    import mlflow
    from mlflow.server import get_app_client
    from mlflow.tracking import MlflowClient

    from registry.release import BUNDLE_KEYS

    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}
    _as("admin", ADMIN_PASSWORD)
    try:
        mlflow.set_tracking_uri(url)
        mlflow.set_registry_uri(url)
        auth = get_app_client("basic-auth", tracking_uri=url)
        client = MlflowClient(url, url)
        experiment = client.create_experiment("llmops")
        eval_run = client.create_run(experiment)
        client.set_tag(eval_run.info.run_id, "llmops.dataset_digest", "d1")
        client.log_param(eval_run.info.run_id, "dataset_digest", "d1")
        client.log_param(eval_run.info.run_id, "dataset_lineage", "l1")
        client.set_terminated(eval_run.info.run_id)
        client.create_registered_model(MODEL)
        for _ in range(2):
            run = client.create_run(experiment)
            mv = client.create_model_version(MODEL, f"runs:/{run.info.run_id}/model", run.info.run_id)
            for key in BUNDLE_KEYS:
                value = {"eval_run_id": eval_run.info.run_id, "dataset_digest": "d1",
                         "dataset_lineage": "l1"}.get(key, f"{key}-1")
                client.set_model_version_tag(MODEL, mv.version, f"llmops.{key}", value)
        mlflow.genai.register_prompt(PROMPT, "Answer: {{question}}")
        mlflow.genai.register_prompt(PROMPT, "Answer briefly: {{question}}")
        for user in USERS:
            auth.create_user(user, PASSWORD)
            for resource_type, name in (("registered_model", MODEL), ("prompt", PROMPT)):
                auth.grant_user_permission(username=user, resource_type=resource_type, resource_id=name,
                                           permission="MANAGE")
            auth.grant_user_permission(username=user, resource_type="experiment", resource_id=experiment,
                                       permission="MANAGE")
        auth.create_user("reader", PASSWORD)  # default READ only: MLflow itself refuses alias writes
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _try(url: str, user: str, password: str, kind: str, action: str, alias: str):
    """Call the alias endpoint as `user` through MlflowClient; returns None or the error text."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    _as(user, password)
    client = MlflowClient(url, url)
    try:
        if kind == "model":
            if action == "set":
                client.set_registered_model_alias(MODEL, alias, "1")
            else:
                client.delete_registered_model_alias(MODEL, alias)
        else:
            mlflow.set_registry_uri(url)
            if action == "set":
                mlflow.genai.set_prompt_alias(PROMPT, alias, 1)
            else:
                mlflow.genai.delete_prompt_alias(PROMPT, alias)
    except MlflowException as exc:
        return str(exc.message)
    return None


def _allowed(user: str, alias: str) -> bool:
    role = USERS.get(user)
    if alias == "production":
        return role == "release-managers"
    return role in ("release-managers", "ml-team")


@pytest.mark.parametrize("kind", ["model", "prompt"])
def test_every_alias_endpoint_as_every_role(server, kind, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    url = server["url"]
    seen = []
    for user in USERS:
        for alias in ("staging", "production"):
            for action in ("set", "delete"):
                if action == "delete":  # make sure there is something to delete, as admin
                    assert _try(url, "admin", ADMIN_PASSWORD, kind, "set", alias) is None
                error = _try(url, user, PASSWORD, kind, action, alias)
                seen.append((user, alias, action, error))
                if _allowed(user, alias):
                    assert error is None, (user, kind, alias, action, error)
                else:
                    assert error is not None and "PERMISSION_DENIED" in error, (user, kind, alias, action)
                    assert f"{kind} alias '{alias}'" in error and "only " in error, error
    assert len(seen) == 12


def test_mlflow_permissions_still_apply_below_the_alias_rules(server, monkeypatch):
    """A READ-only user is refused by MLflow itself, before our rule is consulted."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    error = _try(server["url"], "reader", PASSWORD, "model", "set", "staging")
    assert error is not None and "alias rule" not in error


def test_raw_rest_call_gets_403_naming_the_rule(server):
    response = httpx.post(f"{server['url']}/api/2.0/mlflow/registered-models/alias",
                          json={"name": MODEL, "alias": "production", "version": "1"}, auth=("ml-user", PASSWORD))
    assert response.status_code == 403
    body = response.json()
    assert body["error_code"] == "PERMISSION_DENIED"
    assert "only release-managers may set model alias 'production'" in body["message"]


def test_deleting_what_holds_a_guarded_alias_is_refused(server, monkeypatch):
    """Deleting a version (or the whole model) removes its aliases: the same rights apply."""
    from mlflow.tracking import MlflowClient

    url, api = server["url"], f"{server['url']}/api/2.0/mlflow"
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", ADMIN_PASSWORD)
    admin = MlflowClient(url, url)
    run = admin.create_run(admin.get_experiment_by_name("llmops").experiment_id)
    held, spare = (admin.create_model_version(MODEL, f"runs:/{run.info.run_id}/model", run.info.run_id).version
                   for _ in range(2))
    previous = admin.get_registered_model(MODEL).aliases.get("production")
    admin.set_registered_model_alias(MODEL, "production", held)
    try:
        for path, body in (("model-versions/delete", {"name": MODEL, "version": held}),
                           ("registered-models/delete", {"name": MODEL})):
            refused = httpx.request("DELETE", f"{api}/{path}", json=body, auth=("ml-user", PASSWORD))
            assert refused.status_code == 403, (path, refused.text)
            message = refused.json()["message"]
            assert "only release-managers may delete model alias 'production'" in message
            assert f"which holds {MODEL}@production" in message
        assert admin.get_model_version(MODEL, held).version == held  # nothing was deleted
        # a version that holds no guarded alias may go
        allowed = httpx.request("DELETE", f"{api}/model-versions/delete", json={"name": MODEL, "version": spare},
                                auth=("ml-user", PASSWORD))
        assert allowed.status_code == 200, allowed.text
    finally:
        if previous:
            admin.set_registered_model_alias(MODEL, "production", previous)
        else:
            admin.delete_registered_model_alias(MODEL, "production")


def _promote_as(server, user: str, monkeypatch, cli, *args: str) -> tuple[int, str, str]:
    env = {"MLFLOW_TRACKING_URI": server["url"], "MLFLOW_TRACKING_USERNAME": user,
           "MLFLOW_TRACKING_PASSWORD": PASSWORD, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
           "LLMOPS_REGISTRY__POLICY_FILE": str(server["policy"]),
           "LLMOPS_REGISTRY__LEDGER_URI": f"sqlite:///{server['root'] / 'ledger.db'}"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return cli("registry", *args)


def test_promote_reports_a_refusal_in_one_line_and_records_nothing(server, monkeypatch, cli):
    code, _, err = _promote_as(server, "ml-user", monkeypatch, cli, "promote", MODEL, "2", "--to", "production",
                               "--reason", "try")
    assert code == 10, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "refused" in err and "only release-managers may set model alias 'production'" in err
    assert _ledger_rows(server) == []

    code, out, err = _promote_as(server, "rm-user", monkeypatch, cli, "promote", MODEL, "2", "--to", "production",
                                 "--reason", "release")
    assert code == 0, err
    assert "moved" in out
    assert [(to, actor) for _, to, actor in _ledger_rows(server)] == [("2", "rm-user")]


def _ledger_rows(server) -> list[tuple]:
    from sqlalchemy import create_engine, text

    engine = create_engine(f"sqlite:///{server['root'] / 'ledger.db'}")
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(
            "SELECT from_version, to_version, actor FROM llmops_alias_moves WHERE alias = 'production' ORDER BY id"))]
