"""Promotion and rollback: run the policy's checks, then move the alias and append the ledger in one step."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from llmops.errors import AccessDeniedError, ConfigError, GateFailedError, NotFoundError
from llmops.settings import Settings
from registry.checks import (
    Check,
    bundle_of,
    check_approvals,
    check_bundle,
    check_eval_run,
    check_non_regression,
    check_order,
    check_quality_gates,
)
from registry.ledger import Ledger, Move, RemoteLedger, default_actor, open_ledger
from registry.policy import Policy, load_policy


@dataclass(frozen=True)
class Outcome:
    name: str
    version: str
    alias: str
    action: str
    checks: list[Check]
    dry_run: bool
    current: str | None
    move: Move | None = None
    notices: list[str] = field(default_factory=list)
    eval_run_id: str | None = None

    @property
    def passed(self) -> bool:
        return all(c.passed or not c.blocking for c in self.checks)

    def report(self) -> str:
        lines = [c.line() for c in self.checks]
        src = f"v{self.current}" if self.current else "nothing"
        if self.move is not None:
            verdict = f"moved ({src} -> v{self.version}, ledger #{self.move.id})"
        elif self.dry_run:
            verdict = "dry run: would move" if self.passed else "dry run: would NOT move"
        else:
            verdict = f"not moved (stays at {src})"
        lines.append(f"{self.name} v{self.version} -> @{self.alias}: {verdict}")
        return "\n".join(lines + self.notices)


def get_version(client: Any, name: str, version: str) -> Any:
    """The model version; an unknown model and an unknown version are told apart."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        _raise_denied(exc, f"read model {name!r}")
        raise NotFoundError(f"registered model {name!r} not found") from exc
    try:
        return client.get_model_version(name, str(version))
    except MlflowException as exc:
        raise NotFoundError(f"model {name!r} version {version} not found") from exc


def current_holder(client: Any, name: str, alias: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException as exc:
        _raise_denied(exc, f"read {name}@{alias}")
        return None


def _raise_denied(exc: Any, what: str) -> None:
    text = str(getattr(exc, "message", exc))
    if getattr(exc, "error_code", None) == "PERMISSION_DENIED" or "403" in text or "Permission denied" in text:
        reason = text.removeprefix("PERMISSION_DENIED: ").splitlines()[0]
        raise AccessDeniedError(f"the tracking server refused to {what}: {reason}") from exc


def _eval_metrics(client: Any, run_id: str | None) -> tuple[Any, dict[str, float]]:
    from mlflow.exceptions import MlflowException

    if not run_id:
        return None, {}
    try:
        run = client.get_run(run_id)
    except MlflowException:
        return None, {}
    return run, dict(run.data.metrics)


class Releaser:
    """Binds settings, the policy, the MLflow client and the ledger for one command."""

    def __init__(self, settings: Settings, policy: Policy | None = None,
                 ledger: Ledger | RemoteLedger | None = None) -> None:
        from mlflow.tracking import MlflowClient

        self.settings = settings
        self.policy = policy or load_policy(settings.registry.policy_file)
        self.client = MlflowClient()
        self.ledger = ledger or open_ledger(settings.registry.ledger_uri, self.client)
        self.actor = default_actor(settings.registry.actor)

    # -- promotion -----------------------------------------------------------------------------------
    def plan(self, name: str, version: str, alias: str) -> tuple[list[Check], str | None, str | None]:
        """All checks for moving `alias` to `version`: (checks, current holder, eval run id)."""
        rule = self.policy.rule(alias)
        mv = get_version(self.client, name, version)
        version = str(mv.version)
        current = current_holder(self.client, name, alias)
        bundle = bundle_of(mv)
        checks = [check_bundle(mv)]
        checks += check_order(self.ledger, name, version, alias, rule, list(mv.aliases))
        eval_run, metrics = _eval_metrics(self.client, bundle["eval_run_id"])
        if eval_run is None:
            checks.append(Check("eval run", False, f"{bundle['eval_run_id'] or 'no llmops.eval_run_id tag'} "
                                                   "not found"))
        else:
            checks += check_eval_run(self.client, eval_run, bundle, self.policy)
            champion, comparison = None, None
            if rule.non_regression is not None:
                champion = current_holder(self.client, name, rule.non_regression.against)
                if champion is not None and champion != version:
                    comparison = self._champion(eval_run, name, champion)
            checks += check_quality_gates(metrics, self.settings.evaluation.gates_file, rule.gates, comparison)
            checks += check_non_regression(metrics, champion, comparison.metrics if comparison else None, rule,
                                           version)
        checks += check_approvals(self.ledger, name, version, rule.approvals)
        if rule.infra_validation:
            checks.append(self._infra_check(name, version, checks))
        return checks, current, bundle["eval_run_id"]

    def _champion(self, eval_run: Any, name: str, champion: str) -> Any:
        """The champion scored on the candidate's eval rows (its paired comparison), or why it cannot be."""
        from evaluation.champion import compare_with_champion

        cfg = self.settings.evaluation
        return compare_with_champion(self.client, eval_run, name, self.client.get_model_version(name, champion),
                                     samples=cfg.bootstrap_samples, confidence=cfg.confidence, seed=cfg.seed)

    def _infra_check(self, name: str, version: str, earlier: list[Check]) -> Check:
        if not all(c.passed or not c.blocking for c in earlier):
            return Check("infra validation", False, "skipped: earlier checks failed")
        from registry.infra import validate

        cfg = self.settings.registry
        result = validate(f"models:/{name}/{version}", self.policy.smoke.questions, cfg.smoke_budget_ms,
                          cfg.smoke_timeout_s)
        return Check("infra validation", result.ok, result.detail)

    def promote(self, name: str, version: str, alias: str, reason: str | None = None,
                dry_run: bool = False) -> Outcome:
        outcome = self.check(name, version, alias, dry_run)
        return outcome if dry_run else self.apply(outcome, reason)

    def check(self, name: str, version: str, alias: str, dry_run: bool = False) -> Outcome:
        """Every check; raises GateFailedError (with the full report) when one that blocks fails."""
        checks, current, eval_run_id = self.plan(name, version, alias)
        outcome = Outcome(name, str(version), alias, "promote", checks, dry_run, current, eval_run_id=eval_run_id)
        if not outcome.passed:
            raise GateFailedError(outcome.report() + f"\nchecks failed: {name} v{version} stays off @{alias}")
        return outcome

    def apply(self, outcome: Outcome, reason: str | None) -> Outcome:
        """Move the alias and append the ledger (refused if the holder changed since `check`), then notify."""
        from mlflow.exceptions import MlflowException

        from registry.notify import notify

        eval_run_id = outcome.eval_run_id
        try:
            move = self.ledger.move(outcome.name, outcome.alias, outcome.version, action=outcome.action,
                                    actor=self.actor, reason=reason, eval_run_id=eval_run_id,
                                    checks=[c.as_dict() for c in outcome.checks], expected_from=outcome.current)
        except MlflowException as exc:
            _raise_denied(exc, f"move {outcome.name}@{outcome.alias} for {self.actor}")
            raise
        cfg = self.settings.registry
        notices = notify({**move.as_dict(), "event": "alias_moved"}, cfg.notify_command, cfg.notify_url,
                         cfg.notify_timeout_s)
        return Outcome(outcome.name, outcome.version, outcome.alias, outcome.action, outcome.checks,
                       outcome.dry_run, move.from_version, move, notices, eval_run_id)

    # -- rollback ------------------------------------------------------------------------------------
    def rollback(self, name: str, alias: str, to_version: str | None, reason: str, dry_run: bool = False) -> Outcome:
        """Move `alias` back to the version before the current one in the ledger (or to `to_version`)."""
        self.policy.rule(alias)
        if not reason or not reason.strip():
            raise ConfigError("a rollback needs a --reason")
        self._model_exists(name)
        current = current_holder(self.client, name, alias)
        if to_version is None:
            if current is None:
                raise NotFoundError(f"{name}@{alias} is not set: nothing to roll back")
            placed = [m for m in self.ledger.moves(name, alias) if m.to_version == current]
            if not placed or placed[-1].from_version is None:
                raise NotFoundError(f"the ledger holds no version of {name}@{alias} before v{current}")
            to_version = placed[-1].from_version
        to_version = str(to_version)
        if to_version == current:
            raise ConfigError(f"{name}@{alias} already points at v{to_version}")
        mv = get_version(self.client, name, to_version)
        if not self.ledger.held(name, alias, to_version):
            raise GateFailedError(f"rollback refused: v{to_version} never held {name}@{alias} according to the "
                                  "ledger; promote it instead")
        checks = [check_bundle(mv), Check(f"v{to_version} held {alias} before", True, "found in the ledger")]
        outcome = Outcome(name, to_version, alias, "rollback", checks, dry_run, current,
                          eval_run_id=mv.tags.get("llmops.eval_run_id"))
        if not outcome.passed:
            held_now = f"v{current}" if current else "nothing"
            raise GateFailedError(outcome.report() + f"\nrollback refused: {name}@{alias} stays at {held_now}")
        if dry_run:
            return outcome
        return self.apply(outcome, reason)

    def _model_exists(self, name: str) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(name)
        except MlflowException as exc:
            _raise_denied(exc, f"read model {name!r}")
            raise NotFoundError(f"registered model {name!r} not found") from exc

    # -- approvals and history -----------------------------------------------------------------------
    def approve(self, name: str, version: str, by: str | None, note: str | None) -> Any:
        """Embedded: recorded as `by`. With a tracking server: recorded by the server as the authenticated user
        (`by`, when given, must be that user)."""
        if not self.ledger.remote and (not by or not by.strip()):
            raise ConfigError("an approval needs --by NAME")
        get_version(self.client, name, version)
        return self.ledger.approve(name, str(version), by.strip() if by else None, note)

    def history(self, name: str, alias: str | None = None) -> list[Move]:
        self._model_exists(name)
        if alias is not None:
            self.policy.rule(alias)
        return self.ledger.moves(name, alias)

    def at(self, name: str, when_ms: int, alias: str | None = None) -> dict[str, Move | None]:
        """alias -> the move that set what it pointed at, at `when_ms` (None: unset then)."""
        self._model_exists(name)
        aliases = [alias] if alias else sorted({m.alias for m in self.ledger.moves(name)} or self.policy.aliases)
        if alias is not None:
            self.policy.rule(alias)
        return {a: self.ledger.at(name, a, when_ms) for a in aliases}


def parse_timestamp(text: str) -> int:
    """ISO 8601 (a naive time is UTC) -> epoch milliseconds."""
    from datetime import UTC, datetime

    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise ConfigError(f"--at: expected an ISO 8601 timestamp like 2026-11-23T20:15:00Z, got {text!r}") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)
