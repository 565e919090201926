"""MLflow server app `llmops-auth`: MLflow's basic-auth app plus alias rules from the promotion policy.

Started as `mlflow server --app-name llmops-auth` (entry point group `mlflow.app`). MLflow's own hook runs
first (authentication, READ/EDIT/MANAGE per model or prompt); ours runs after it on every request that sets or
deletes a registered-model or prompt alias (prompts share the registered-model alias endpoints) and answers
403 with the rule's words when the policy's `rights` do not let the user move that alias. MLflow admins are
not restricted, as in MLflow. The policy file is `registry.policy_file` from the settings (LLMOPS_* env or
llmops.yaml in the server's working directory), read once at start-up.
"""

from __future__ import annotations

import re
from typing import Any

ALIAS_PATH = re.compile(r"^/(?:ajax-)?api/[0-9.]+/mlflow/registered-models/alias/?$")
ACTIONS = {"POST": "set", "DELETE": "delete"}


def _forbidden(message: str) -> Any:
    from flask import jsonify

    response = jsonify({"error_code": "PERMISSION_DENIED", "message": message})
    response.status_code = 403
    return response


def make_alias_guard(rights: Any, policy_file: str):
    """A Flask before_request hook enforcing `rights` (registry.policy.Rights) on the alias endpoints."""

    def guard() -> Any:
        from flask import g, request
        from mlflow.server import auth

        action = ACTIONS.get(request.method)
        if action is None or not ALIAS_PATH.match(request.path):
            return None
        username = getattr(g, "mlflow_authenticated_user", None)
        if username is None or auth.sender_is_admin():
            return None  # unauthenticated requests were already answered by MLflow's hook
        params = auth._request_params()
        alias = params.get("alias")
        if not alias:
            return None  # MLflow rejects the malformed request itself
        kind = "prompt" if auth._request_targets_prompt() else "model"
        allowed, rule = rights.decide(username, kind, str(alias), action)
        if allowed:
            return None
        return _forbidden(f"alias rule ({policy_file}): {rule}; user {username!r} may not {action} "
                          f"{params.get('name')}@{alias}")

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
