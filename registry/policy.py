"""The promotion policy as a strict model: which aliases exist, what each requires, who may move them."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from llmops.errors import ConfigError
from llmops.yamlfile import load_yaml_model


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NonRegression(_Strict):
    """Compare with the version holding `against`: the gates' own `max_regression` tolerances, plus these."""

    against: str = "production"
    tolerances: dict[str, float] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _non_negative(self) -> NonRegression:
        for metric, tolerance in self.tolerances.items():
            if tolerance < 0:
                raise ValueError(f"tolerance for {metric!r} must be >= 0")
        return self


class AliasRule(_Strict):
    requires_prior: list[str] = Field(default_factory=list)
    gates: str | None = None
    infra_validation: bool = False
    non_regression: NonRegression | None = None
    approvals: int = Field(default=0, ge=0)


class DatasetRule(_Strict):
    require_current: bool = True
    pinned_digest: str | None = None


class Smoke(_Strict):
    questions: list[str] = Field(min_length=1)


class AliasRights(_Strict):
    set: list[str] = Field(default_factory=list)
    delete: list[str] = Field(default_factory=list)


class Rights(_Strict):
    roles: dict[str, list[str]] = Field(default_factory=dict)
    models: dict[str, AliasRights] = Field(default_factory=dict)
    prompts: dict[str, AliasRights] = Field(default_factory=dict)
    unlisted_aliases: Literal["allow", "deny"] = "allow"
    approvers: list[str] = Field(default_factory=list)
    self_approval: Literal["allow", "forbid"] = "forbid"

    @model_validator(mode="after")
    def _known_roles(self) -> Rights:
        for kind, table in (("models", self.models), ("prompts", self.prompts)):
            for alias, rights in table.items():
                for role in (*rights.set, *rights.delete):
                    if role not in self.roles:
                        raise ValueError(f"rights.{kind}.{alias} names unknown role {role!r}")
        for role in self.approvers:
            if role not in self.roles:
                raise ValueError(f"rights.approvers names unknown role {role!r}")
        return self

    def may_approve(self, user: str) -> tuple[bool, str]:
        """Approvers: members of the `approvers` roles (none listed: any authenticated user)."""
        if not self.approvers or any(user in self.roles.get(role, []) for role in self.approvers):
            return True, ""
        return False, f"only {', '.join(self.approvers)} may approve"

    def decide(self, user: str, kind: Literal["model", "prompt"], alias: str,
               action: Literal["set", "delete"]) -> tuple[bool, str]:
        """(allowed, the rule in words) for `user` doing `action` on a model's or prompt's `alias`."""
        table = self.models if kind == "model" else self.prompts
        rights = table.get(alias)
        if rights is None:
            allowed = self.unlisted_aliases == "allow"
            return allowed, f"{kind} alias {alias!r} is not in the policy (unlisted_aliases: {self.unlisted_aliases})"
        roles = rights.set if action == "set" else rights.delete
        allowed = any(user in self.roles.get(role, []) for role in roles)
        who = ", ".join(roles) or "nobody"
        return allowed, f"only {who} may {action} {kind} alias {alias!r}"


class Policy(_Strict):
    aliases: dict[str, AliasRule] = Field(min_length=1)
    dataset: DatasetRule = Field(default_factory=DatasetRule)
    smoke: Smoke
    rights: Rights = Field(default_factory=Rights)

    @model_validator(mode="after")
    def _consistent(self) -> Policy:
        for alias, rule in self.aliases.items():
            for prior in rule.requires_prior:
                if prior not in self.aliases:
                    raise ValueError(f"aliases.{alias}.requires_prior names unknown alias {prior!r}")
            if rule.non_regression and rule.non_regression.against not in self.aliases:
                raise ValueError(f"aliases.{alias}.non_regression.against names unknown alias "
                                 f"{rule.non_regression.against!r}")
        return self

    def rule(self, alias: str) -> AliasRule:
        if alias not in self.aliases:
            raise ConfigError(f"alias {alias!r} is outside the promotion policy "
                              f"(allowed: {', '.join(self.aliases)})")
        return self.aliases[alias]


def load_policy(path: str | Path) -> Policy:
    return load_yaml_model(path, Policy, "policy file")
