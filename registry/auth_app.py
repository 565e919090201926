"""MLflow server app `llmops-auth`: MLflow's basic-auth app, the request judge and the server-side ledger.

Started as `mlflow server --app-name llmops-auth` (entry point group `mlflow.app`), or all at once with
PostgreSQL by `llmops server start --team`. Per worker process, `create_app`

1. builds MLflow's basic-auth app (authentication; READ/EDIT/MANAGE per model, prompt, experiment);
2. adds the judge (`registry.guard`) after MLflow's hook on the Flask app, and as ASGI middleware in front of
   the native FastAPI routes (the artifact proxy's uploads are served there, outside the Flask hooks);
3. puts the ledger in front of the registry store (`registry.server_ledger`): every alias move, whoever makes
   it, is recorded in the move's own transaction; adds the ledger's REST endpoints.

The policy file is `registry.policy_file` from the settings (LLMOPS_* env or llmops.yaml in the server's
working directory), read once at start-up; a broken policy stops the server there, not per request. Every
replica behind a load balancer runs the same factory against the same database and reads the same policy.
"""

from __future__ import annotations

from typing import Any


def create_app(app: Any = None) -> Any:
    """Factory named by the `mlflow.app` entry point."""
    from mlflow.server import app as flask_app
    from mlflow.server.auth import create_app as basic_auth_app
    from mlflow.server.handlers import _get_model_registry_store

    from llmops.settings import load_settings
    from registry.guard import Judge, NativeRouteGuard, flask_hooks, native_routes
    from registry.policy import load_policy
    from registry.server_ledger import add_move_header, install, register_endpoints

    flask = app or flask_app
    policy_file = load_settings().registry.policy_file
    policy = load_policy(policy_file)
    served = basic_auth_app(flask)
    judge = Judge(policy, policy_file)
    before, after = flask_hooks(judge)
    flask.before_request(before)  # after MLflow's: the user is authenticated when ours runs
    flask.after_request(add_move_header)
    flask.after_request(after)
    install(_get_model_registry_store(), policy.rights)
    register_endpoints(flask, judge)
    if served is not flask:  # uvicorn: a FastAPI app with native routes beside the mounted Flask app
        judge.native = native_routes(served)
        served.add_middleware(NativeRouteGuard, judge=judge, routes=judge.native)
    return served
