"""The policy file is a strict model; rights decide per user, kind, alias and action."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from llmops.errors import ConfigError, NotFoundError
from registry.policy import load_policy

REPO = Path(__file__).resolve().parents[2]
SHIPPED = yaml.safe_load((REPO / "registry" / "policy.yaml").read_text(encoding="utf-8"))


def _write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data), encoding="utf-8")
    return path


def test_the_shipped_policy_loads_and_orders_production_after_staging():
    policy = load_policy(REPO / "registry" / "policy.yaml")
    assert policy.rule("production").requires_prior == ["staging"]
    assert policy.rule("staging").infra_validation and policy.rule("production").approvals >= 1
    assert policy.smoke.questions


@pytest.mark.parametrize("change, message", [
    ({"aliases": {"staging": {"gates": "staging", "typo": 1}}}, "aliases.staging.typo"),
    ({"aliases": {"production": {"requires_prior": ["qa"]}}}, "unknown alias 'qa'"),
    ({"aliases": {"production": {"approvals": -1}}}, "aliases.production.approvals"),
    ({"rights": {**SHIPPED["rights"], "models": {"production": {"set": ["admins"]}}}}, "unknown role 'admins'"),
    ({"smoke": {"questions": []}}, "smoke.questions"),
])
def test_a_bad_policy_names_the_key(tmp_path, change, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_policy(_write(tmp_path, {**SHIPPED, **change}))


def test_missing_or_malformed_policy_files(tmp_path):
    with pytest.raises(NotFoundError, match="policy file not found"):
        load_policy(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_policy(_write(tmp_path, "aliases: [unclosed"))
    with pytest.raises(ConfigError, match="alias 'canary' is outside the promotion policy"):
        load_policy(REPO / "registry" / "policy.yaml").rule("canary")


def test_rights_decide_by_role_alias_and_action():
    rights = load_policy(REPO / "registry" / "policy.yaml").rights
    assert rights.decide("ml-engineer", "model", "staging", "set")[0]
    allowed, rule = rights.decide("ml-engineer", "model", "production", "set")
    assert not allowed and rule == "only release-managers may set model alias 'production'"
    assert rights.decide("release-manager", "prompt", "production", "delete")[0]
    assert not rights.decide("stranger", "prompt", "staging", "set")[0]
    assert rights.decide("stranger", "model", "champion", "set")[0]  # unlisted_aliases: allow
