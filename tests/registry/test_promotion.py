"""Promotion, rollback, approvals and history through `llmops registry`, on a real SQLite store."""

from __future__ import annotations

import json

import pytest

WEAK = 0.10  # answered token F1 per answered row (the random baseline scores 0.12)
SLIGHTLY_WORSE = 0.27  # 0.03 below the good versions' 0.30



def _moves(cli, name: str, *extra: str) -> list[dict]:
    code, out, err = cli("registry", "history", name, "--json", *extra)
    assert code == 0, err
    return json.loads(out)


def test_staging_then_production_then_rollback_and_history(make_version, prepare_run, cli, fast_policy, alias_version):
    prepare_run()
    v1, v2 = make_version("flow"), make_version("flow")
    policy = ("--policy", str(fast_policy))

    code, out, err = cli("registry", "promote", "flow", v1, "--to", "production", *policy)
    assert code == 5 and "FAIL  order staging -> production: v1 has never been in staging" in err
    assert alias_version("flow", "production") is None and _moves(cli, "flow") == []

    for version in (v1, v2):
        code, out, err = cli("registry", "promote", "flow", version, "--to", "staging", "--reason", "r", *policy)
        assert code == 0, err
        assert "PASS  gate answered_token_f1: 0.3000 (needs >= 0.18)" in out and "moved" in out
    assert alias_version("flow", "staging") == v2

    code, out, err = cli("registry", "promote", "flow", v1, "--to", "production", *policy)
    assert code == 5 and "FAIL  approvals: 0 of 1 needed" in err and alias_version("flow", "production") is None
    assert cli("registry", "approve", "flow", v1, "--by", "rita", "--note", "read the eval")[0] == 0
    code, out, err = cli("registry", "promote", "flow", v1, "--to", "production", "--reason", "first", *policy)
    assert code == 0, err
    assert "PASS  non-regression vs @production: no version holds production yet" in out
    assert alias_version("flow", "production") == v1

    cli("registry", "approve", "flow", v2, "--by", "rita", *policy)
    code, out, err = cli("registry", "promote", "flow", v2, "--to", "production", "--reason", "second", *policy)
    assert code == 0, err
    assert f"PASS  non-regression vs @production: champion v{v1}" in out
    assert "PASS  gate answered_token_f1 vs champion: 0.0000 (needs lower bound >= -0.020) [model - champion = " \
           "+0.000, CI +0.000..+0.000 over 20 rows]" in out
    assert alias_version("flow", "production") == v2
    between = _moves(cli, "flow", "--alias", "production")[0]["moved_at"]

    code, out, err = cli("registry", "rollback", "flow", "--alias", "production", "--reason", "bad answers")
    assert code == 0, err
    assert alias_version("flow", "production") == v1

    moves = _moves(cli, "flow", "--alias", "production")
    assert [(m["from_version"], m["to_version"], m["action"]) for m in moves] == [
        (None, v1, "promote"), (v1, v2, "promote"), (v2, v1, "rollback")]
    assert moves[2]["reason"] == "bad answers" and moves[1]["eval_run_id"]
    assert any(c["name"] == "approvals" and c["passed"] for c in moves[1]["checks"])

    code, out, err = cli("registry", "history", "flow", "--alias", "production", "--at", between, "--json")
    assert code == 0 and json.loads(out)["aliases"] == {"production": v1}
    code, out, err = cli("registry", "history", "flow", "--at", "2001-01-01T00:00:00Z")
    assert code == 0 and "flow@production at 2001-01-01T00:00:00Z: -" in out

    code, out, err = cli("registry", "rollback", "flow", "--alias", "production", "--to", v2, "--reason", "fixed")
    assert code == 0 and alias_version("flow", "production") == v2
    code, out, err = cli("registry", "show", "flow", v2)
    assert code == 0 and "bundle: PASS" in out and "approvals: 1" in out and "alias moves: 4" in out


def test_checks_that_refuse(make_version, prepare_run, cli, fast_policy, policy_file, monkeypatch, tmp_path,
                            alias_version):
    gates = tmp_path / "gates.yaml"
    gates.write_text("mode: enforced\ntargets:\n  staging:\n    - {metric: answered_token_f1, min: 0.18}\n"
                     "  production:\n    - {metric: answered_token_f1, min: 0.2, max_regression: 0.02}\n")
    monkeypatch.setenv("LLMOPS_EVALUATION__GATES_FILE", str(gates))
    prepare_run()
    policy = ("--policy", str(fast_policy))
    weak = make_version("refuse", quality=WEAK)
    code, out, err = cli("registry", "promote", "refuse", weak, "--to", "staging", *policy)
    assert code == 5 and "FAIL  gate answered_token_f1: 0.1000 (needs >= 0.18)" in err
    assert "refuse v1 -> @staging: not moved (stays at nothing)" in err

    code, out, err = cli("registry", "promote", "refuse", weak, "--to", "staging", "--dry-run", *policy)
    assert code == 5 and "dry run: would NOT move" in err

    incomplete = make_version("refuse", drop=("instruction_hash",))
    code, out, err = cli("registry", "promote", "refuse", incomplete, "--to", "staging", *policy)
    assert code == 5 and "FAIL  bundle: missing tag(s) llmops.instruction_hash" in err
    code, out, err = cli("registry", "show", "refuse", incomplete)
    assert "instruction_hash: MISSING" in out

    stale = make_version("refuse", digest="digest-old")
    code, out, err = cli("registry", "promote", "refuse", stale, "--to", "staging", *policy)
    assert code == 5 and "FAIL  eval dataset is current: eval run scored digest-old, current is digest-current" in err
    prepare_run("digest-other", lineage="lineage-2")  # another dataset prepared beside it does not make it stale
    other = make_version("refuse", digest="digest-other", lineage="lineage-2")
    code, out, err = cli("registry", "promote", "refuse", other, "--to", "staging", "--dry-run", *policy)
    assert code == 0 and "PASS  eval dataset is current" in out

    good = make_version("refuse")
    code, out, err = cli("registry", "promote", "refuse", good, "--to", "staging", "--dry-run", *policy)
    assert code == 0 and "dry run: would move" in out and alias_version("refuse", "staging") is None
    assert _moves(cli, "refuse") == []

    # a champion in production, then a challenger slightly worse than the tolerance allows
    open_policy = policy_file(aliases={"staging": {"infra_validation": False}, "production": {
        "approvals": 0, "non_regression": {"against": "production", "tolerances": {"coverage": 0.0}}}})
    for version in (good,):
        assert cli("registry", "promote", "refuse", version, "--to", "staging", "--policy", str(open_policy))[0] == 0
        assert cli("registry", "promote", "refuse", version, "--to", "production", "--policy",
                   str(open_policy))[0] == 0
    worse = make_version("refuse", quality=SLIGHTLY_WORSE)
    assert cli("registry", "promote", "refuse", worse, "--to", "staging", "--policy", str(open_policy))[0] == 0
    code, out, err = cli("registry", "promote", "refuse", worse, "--to", "production", "--policy", str(open_policy))
    assert code == 5
    assert "FAIL  gate answered_token_f1 vs champion: 0.2700 (needs >= 0.2800 = champion 0.3000 - 0.02)" in err
    assert f"PASS  non-regression coverage: 0.5000 vs champion v{good} 0.5000 (tolerance 0.0)" in err
    assert alias_version("refuse", "production") == good


@pytest.mark.parametrize("args, code, message", [
    (["promote", "nope", "1", "--to", "staging"], 4, "registered model 'nope' not found"),
    (["promote", "badin", "99", "--to", "staging"], 4, "model 'badin' version 99 not found"),
    (["promote", "badin", "1", "--to", "canary"], 2, "alias 'canary' is outside the promotion policy"),
    (["rollback", "badin", "--alias", "production", "--reason", "x"], 4, "badin@production is not set"),
    (["rollback", "badin", "--alias", "staging", "--to", "1", "--reason", "x"], 5, "v1 never held badin@staging"),
    (["history", "badin", "--at", "yesterday"], 2, "--at: expected an ISO 8601 timestamp"),
    (["history", "nope"], 4, "registered model 'nope' not found"),
    (["approve", "badin", "7", "--by", "rita"], 4, "model 'badin' version 7 not found"),
])
def test_bad_input_is_one_clear_line_and_changes_nothing(make_version, cli, args, code, message, alias_version):
    from mlflow.tracking import MlflowClient

    if not MlflowClient().search_registered_models("name = 'badin'"):
        make_version("badin")
    before = (alias_version("badin", "staging"), _moves(cli, "badin"))
    got, _out, err = cli("registry", *args)
    assert got == code, err
    assert message in err and err.count("\n") <= 2 and "Traceback" not in err
    assert (alias_version("badin", "staging"), _moves(cli, "badin")) == before


def test_a_tracking_server_that_is_down(cli, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    code, _out, err = cli("registry", "promote", "any", "1", "--to", "staging")
    assert code == 2 and "cannot use MLflow tracking store http://127.0.0.1:9" in err and "Traceback" not in err


def test_infra_validation_in_a_fresh_process(make_version, prepare_run, cli, policy_file, monkeypatch):
    prepare_run()
    version = make_version("infra")
    monkeypatch.setenv("LLMOPS_REGISTRY__SMOKE_BUDGET_MS", "0.001")
    code, out, err = cli("registry", "promote", "infra", version, "--to", "staging", "--dry-run")
    assert code == 5
    assert "FAIL  infra validation: slowest answer" in err and "> budget 0 ms" in err
    monkeypatch.delenv("LLMOPS_REGISTRY__SMOKE_BUDGET_MS")
    code, out, err = cli("registry", "promote", "infra", version, "--to", "staging", "--dry-run")
    assert code == 0, err
    assert "PASS  infra validation: loaded in" in out and "3/3 answered" in out and "requirements ok" in out
