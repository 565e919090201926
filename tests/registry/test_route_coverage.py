"""Every mutating route of the running server is judged: asked as an admin with `X-Llmops-Explain`, each one
answers with the judge's verdict header, and none falls to deny-by-default (a route a new MLflow adds must be
classified in registry/guard.py before it can be used here)."""

from __future__ import annotations

import re


def _concrete(path: str) -> str:
    """Fill Flask `<x>` / `<path:x>` and FastAPI `{x}` / `{x:path}` parameters with harmless values."""
    path = re.sub(r"<path:[^>]+>", "0/x/y", path)
    path = re.sub(r"<[^>]+>", "x", path)
    path = re.sub(r"\{[^}]+:path\}", "0/x/y", path)
    return re.sub(r"\{[^}]+\}", "x", path)


# MLflow checks these even for admins before any later hook (review queues must not shadow a user name); a
# probe naming a queue that does not exist stops there with 404.
MLFLOW_CHECKS_FIRST = ("/mlflow/review-queues/update",)
PROBE = {"name": "probe-model", "new_name": "probe-model-2", "queue_id": "probe", "version": "1"}


def test_every_mutating_route_of_the_running_app_is_judged(team_server):
    listed = team_server.rest("admin", "GET", "/api/2.0/llmops/server/routes")
    assert listed.status_code == 200, listed.text
    routes = listed.json()["routes"]
    kinds = {r["kind"] for r in routes}
    assert kinds == {"flask", "native"} and len(routes) > 250  # MLflow 3.17 has ~300 mutating routes
    unknown = sorted(f"{r['methods']} {r['path']}" for r in routes if not r["known"])
    assert unknown == [], f"routes the judge does not know (deny by default): {unknown}"
    unjudged = []
    for route in routes:
        for method in route["methods"]:
            # names MLflow's own admin-side checks look for, so that they let the probe reach ours
            response = team_server.rest("admin", method, _concrete(route["path"]), json=PROBE,
                                        headers={"X-Llmops-Explain": "1"})
            verdict = response.headers.get("x-llmops-guard")
            if route["path"].endswith(MLFLOW_CHECKS_FIRST) and response.status_code == 404:
                continue  # MLflow's own admin-side check looked the probe's queue up first: nothing ran
            if not verdict or verdict == "unknown-endpoint":
                unjudged.append((method, route["path"], response.status_code, response.text[:100]))
    assert unjudged == [], "\n".join(map(str, unjudged))


def test_routes_listing_is_for_admins_only(team_server):
    assert team_server.rest("rm-user", "GET", "/api/2.0/llmops/server/routes").status_code == 403


def test_a_route_the_judge_does_not_know_is_denied_by_default():
    """A mutating endpoint missing from the judge's table (what a new MLflow release would add) gets 403."""
    from flask import Flask, g

    from registry.guard import REPO_POLICY, Judge, judge_flask_request
    from registry.policy import load_policy

    app = Flask("probe")
    app.add_url_rule("/api/2.0/mlflow/brand-new/delete", "_brand_new_delete", lambda: "", methods=["DELETE"])
    app.add_url_rule("/api/2.0/mlflow/runs/log-metric", "_log_metric", lambda: "", methods=["POST"])
    judge = Judge(load_policy(REPO_POLICY), "policy.yaml")
    with app.test_request_context("/api/2.0/mlflow/brand-new/delete", method="DELETE", json={"name": "m"}):
        app.preprocess_request()
        g.mlflow_authenticated_user = "admin"
        verdict = judge_flask_request(judge)
    assert (verdict.rule, verdict.status) == ("unknown-endpoint", 403) and "deny by default" in verdict.message
    with app.test_request_context("/api/2.0/mlflow/runs/log-metric?run_id=x", method="POST", json={}):
        app.preprocess_request()
        verdict = judge_flask_request(judge)
    assert (verdict.rule, verdict.status) == ("ambiguous-request", 400)
