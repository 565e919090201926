"""MLflow server app `llmops-auth`: MLflow's basic-auth app plus alias rules from the promotion policy.

Started as `mlflow server --app-name llmops-auth` (entry point group `mlflow.app`). MLflow's own hook runs
first (authentication, READ/EDIT/MANAGE per model or prompt); ours runs after it on every request that sets or
deletes a registered-model or prompt alias (prompts share the registered-model alias endpoints), and on every
deletion of a version or a whole model, which removes the aliases it holds; it answers 403 with the rule's
words when the policy's `rights` do not let the user move (or delete) that alias. MLflow admins are
not restricted, as in MLflow. The policy file is `registry.policy_file` from the settings (LLMOPS_* env or
llmops.yaml in the server's working directory), read once at start-up.
"""

from __future__ import annotations

import re
from typing import Any

ALIAS_PATH = re.compile(r"^/(?:ajax-)?api/[0-9.]+/mlflow/registered-models/alias/?$")
VERSION_DELETE_PATH = re.compile(r"^/(?:ajax-)?api/[0-9.]+/mlflow/model-versions/delete/?$")
MODEL_DELETE_PATH = re.compile(r"^/(?:ajax-)?api/[0-9.]+/mlflow/registered-models/delete/?$")
ACTIONS = {"POST": "set", "DELETE": "delete"}


def _forbidden(message: str) -> Any:
    from flask import jsonify

    response = jsonify({"error_code": "PERMISSION_DENIED", "message": message})
    response.status_code = 403
    return response


def _held_aliases(name: str, version: str | None) -> list[str]:
    """Aliases that deleting `name` (one version, or the whole model) would remove; [] when it does not exist
    (MLflow answers that request itself)."""
    from mlflow.exceptions import MlflowException
    from mlflow.server.handlers import _get_model_registry_store

    store = _get_model_registry_store()
    try:
        if version is None:
            return sorted(store.get_registered_model(name).aliases)
        return sorted(store.get_model_version(name, str(version)).aliases)
    except MlflowException:
        return []


def make_alias_guard(rights: Any, policy_file: str):
    """A Flask before_request hook enforcing `rights` (registry.policy.Rights) on alias moves and deletions."""

    def guard() -> Any:
        from flask import g, request
        from mlflow.server import auth

        deleting_version = request.method == "DELETE" and VERSION_DELETE_PATH.match(request.path)
        deleting_model = request.method == "DELETE" and MODEL_DELETE_PATH.match(request.path)
        action = ACTIONS.get(request.method)
        if not (deleting_version or deleting_model) and (action is None or not ALIAS_PATH.match(request.path)):
            return None
        username = getattr(g, "mlflow_authenticated_user", None)
        if username is None or auth.sender_is_admin():
            return None  # unauthenticated requests were already answered by MLflow's hook
        params = auth._request_params()
        name = params.get("name")
        kind = "prompt" if auth._request_targets_prompt() else "model"
        if deleting_version or deleting_model:
            version = params.get("version") if deleting_version else None
            target = f"{name} v{version}" if deleting_version else f"{name} (every version)"
            for alias in _held_aliases(str(name), version) if name else []:
                allowed, rule = rights.decide(username, kind, alias, "delete")
                if not allowed:
                    return _forbidden(f"alias rule ({policy_file}): {rule}; user {username!r} may not delete "
                                      f"{target}, which holds {name}@{alias}")
            return None
        alias = params.get("alias")
        if not alias:
            return None  # MLflow rejects the malformed request itself
        allowed, rule = rights.decide(username, kind, str(alias), action)
        if allowed:
            return None
        return _forbidden(f"alias rule ({policy_file}): {rule}; user {username!r} may not {action} "
                          f"{name}@{alias}")

    return guard


def create_app(app: Any = None) -> Any:
    """Factory named by the `mlflow.app` entry point: basic-auth, then our alias guard after its hook."""
    from mlflow.server import app as flask_app
    from mlflow.server.auth import create_app as basic_auth_app

    from llmops.settings import load_settings
    from registry.policy import load_policy

    flask = app or flask_app
    policy_file = load_settings().registry.policy_file
    policy = load_policy(policy_file)  # a broken policy stops the server at start-up, not per request
    served = basic_auth_app(flask)
    flask.before_request(make_alias_guard(policy.rights, policy_file))
    return served
