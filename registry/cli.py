"""`llmops registry`: register, show a release bundle, approve, promote, roll back, read the alias ledger."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from typing import Any, Literal

import typer

from llmops.cli_support import TrackingUri, blank_to_none, echo, setting_option, start

app = typer.Typer(no_args_is_help=True)

PolicyFile = setting_option("registry.policy_file", "Promotion policy YAML.", "--policy")
Json = typer.Option(False, "--json", help="Print the result as JSON (stdout holds nothing else).")


def _json(payload: Any) -> None:
    echo(json.dumps(payload, indent=2, default=str))


def _outcome(outcome: Any) -> dict[str, Any]:
    return {**asdict(outcome), "passed": outcome.passed, "moved": outcome.move is not None}


def _releaser(tracking_uri: str | None, policy: str | None, model_name: str | None = None,
              store: Literal["read", "write"] = "write"):
    """Every command here works on registered versions: the store must exist (a mistyped path is refused)."""
    from registry.promote import Releaser

    settings = start(store, **{"mlflow.tracking_uri": tracking_uri, "registry.policy_file": policy,
                               "model.registered_name": blank_to_none(model_name)})
    return settings, Releaser(settings)


@app.command("register")
def register_command(
    tune_run_id: str = typer.Option(..., help="The tuning run whose provider spec is packaged (any backend)."),
    eval_run_id: str = typer.Option(..., help="The evaluation of that tuning run's chain."),
    model_name: str = setting_option("model.registered_name", "Registered model name."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Plan and check only: print the bundle, log nothing."),
    as_json: bool = Json,
    tracking_uri: str = TrackingUri,
) -> None:
    """Log the tuned chain as a pyfunc from code, register it as a new version with alias dev."""
    import mlflow

    from llmops.tracking import link_dataset_inputs, name_run
    from registry.release import apply_release, plan_from_runs

    settings = start("read", **{"model.registered_name": blank_to_none(model_name),
                                "mlflow.tracking_uri": tracking_uri})
    name = settings.model.registered_name
    plan = plan_from_runs(settings, name, tune_run_id, eval_run_id)  # every check, before any run exists
    if dry_run and as_json:
        _json({"dry_run": True, "model_name": name, "provider_kind": plan.spec.kind, "bundle": plan.bundle,
               "requirements": plan.requirements})
        return
    if dry_run:
        for key, value in plan.bundle.items():
            echo(f"  {key}: {value}")
        echo(f"dry run: would register {name} ({plan.spec.kind}, {len(plan.requirements)} pinned requirements)")
        return
    with mlflow.start_run(run_name=f"register {name} {plan.spec.kind}") as run:
        version = apply_release(plan, ledger_uri=settings.registry.ledger_uri, actor=settings.registry.actor)
        name_run(f"register {name} v{version} {plan.spec.kind}")
        link_dataset_inputs([tune_run_id, eval_run_id])  # the run page links the data behind the version
    if as_json:
        _json({"model_name": name, "version": version, "alias": "dev", "model_uri": f"models:/{name}/{version}",
               "run_id": run.info.run_id, "provider_kind": plan.spec.kind})
        return
    echo(f"registered models:/{name}/{version} (alias dev)")


@app.command("promote")
def promote_command(
    name: str = typer.Argument(..., help="Registered model name ('' = settings model.registered_name)."),
    version: str = typer.Argument(..., help="Model version to promote."),
    alias: str = typer.Option("staging", "--to", "--alias", help="Target alias from the policy (staging, production)."),
    reason: str = typer.Option(None, "--reason", help="Why; stored in the ledger."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Run every check, move nothing."),
    policy: str = PolicyFile,
    as_json: bool = Json,
    tracking_uri: str = TrackingUri,
) -> None:
    """Run the policy's checks on the version and move the alias only when all pass (recorded in the ledger).
    A refused move exits 5 with the report on stderr, with or without --json."""
    import mlflow

    settings, releaser = _releaser(tracking_uri, policy, name, store="read")
    model_name = settings.model.registered_name
    if os.environ.get("MLFLOW_RUN_ID"):  # inside an MLflow Project step: tag the step's run with the outcome
        from llmops.tracking import link_dataset_inputs, name_run

        with mlflow.start_run():
            name_run(f"promote {model_name} v{version} -> {alias}")
            mlflow.set_tags({"llmops.step": "promote", "llmops.alias": alias, "llmops.model_version": version})
            outcome = releaser.promote(model_name, version, alias, reason, dry_run)
            eval_run = releaser.client.get_model_version(model_name, version).tags.get("llmops.eval_run_id")
            link_dataset_inputs([eval_run] if eval_run else [])  # the rows the gates judged
            mlflow.set_tag("llmops.moved", str(outcome.move is not None).lower())
    else:
        outcome = releaser.promote(model_name, version, alias, reason, dry_run)
    if as_json:
        _json(_outcome(outcome))
        return
    echo(outcome.report())


@app.command("rollback")
def rollback_command(
    name: str = typer.Argument(..., help="Registered model name."),
    alias: str = typer.Option("production", "--alias", help="Alias to move back."),
    to_version: str = typer.Option(None, "--to", help="Version to move to (default: the previous one in the ledger)."),
    reason: str = typer.Option(..., "--reason", help="Why; stored in the ledger."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Say what would happen, move nothing."),
    policy: str = PolicyFile,
    as_json: bool = Json,
    tracking_uri: str = TrackingUri,
) -> None:
    """Move the alias back to the version it held before (per the ledger), recorded like any move."""
    _, releaser = _releaser(tracking_uri, policy, store="read")
    outcome = releaser.rollback(name, alias, to_version, reason, dry_run)
    if as_json:
        _json(_outcome(outcome))
        return
    echo(outcome.report())


@app.command("approve")
def approve_command(
    name: str = typer.Argument(..., help="Registered model name."),
    version: str = typer.Argument(..., help="Model version approved."),
    by: str = typer.Option(None, "--by", help="Who approves (embedded store; a tracking server records the "
                                             "authenticated user)."),
    note: str = typer.Option(None, "--note", help="What was reviewed."),
    policy: str = PolicyFile,
    as_json: bool = Json,
    tracking_uri: str = TrackingUri,
) -> None:
    """Record an approval of a version (the policy may require N distinct approvers per alias)."""
    _, releaser = _releaser(tracking_uri, policy, store="read")
    approval = releaser.approve(name, version, by, note)
    total = len({a.approver for a in releaser.ledger.approvals(name, version)})
    if as_json:
        _json({**asdict(approval), "distinct_approvers": total})
        return
    echo(f"approved {name} v{version} by {approval.approver} ({total} distinct approver(s))")


@app.command("history")
def history_command(
    name: str = typer.Argument(..., help="Registered model name."),
    alias: str = typer.Option(None, "--alias", help="Only this alias."),
    at: str = typer.Option(None, "--at", help="ISO 8601 time (naive = UTC): what each alias pointed at then."),
    as_json: bool = Json,
    policy: str = PolicyFile,
    tracking_uri: str = TrackingUri,
) -> None:
    """The ledger of alias moves, or what each alias pointed at a given time."""
    from registry.promote import parse_timestamp

    when = parse_timestamp(at) if at is not None else None  # bad input fails before touching the store
    _, releaser = _releaser(tracking_uri, policy, store="read")
    if when is None:
        moves = releaser.history(name, alias)
        if as_json:
            echo(json.dumps([m.as_dict() for m in moves], indent=2))
            return
        for move in moves:
            echo(move.line())
        if not moves:
            echo(f"no alias moves of {name} recorded")
        return
    state = releaser.at(name, when, alias)
    if as_json:
        echo(json.dumps({"at": at, "aliases": {a: (m.to_version if m else None) for a, m in state.items()},
                         "moves": {a: (m.as_dict() if m else None) for a, m in state.items()}}, indent=2))
        return
    for alias_name, move in state.items():
        shown = f"v{move.to_version} (since {move.moved_at}, ledger #{move.id})" if move and move.to_version else "-"
        echo(f"{name}@{alias_name} at {at}: {shown}")


@app.command("show")
def show_command(name: str = typer.Argument(...), version: str = typer.Argument(...),
                 policy: str = PolicyFile, as_json: bool = Json, tracking_uri: str = TrackingUri) -> None:
    """Print a version's release bundle, aliases, approvals and alias moves."""
    from registry.checks import bundle_of, check_bundle
    from registry.promote import get_version

    _, releaser = _releaser(tracking_uri, policy, store="read")
    mv = get_version(releaser.client, name, version)
    if as_json:
        bundle = check_bundle(mv)
        _json({"name": name, "version": str(mv.version), "aliases": list(mv.aliases),
               "bundle": bundle_of(mv), "bundle_check": bundle.as_dict(),
               "tags": {k.removeprefix("llmops."): v for k, v in mv.tags.items() if k.startswith("llmops.")},
               "approvals": [asdict(a) for a in releaser.ledger.approvals(name, str(mv.version))],
               "moves": [m.as_dict() for m in releaser.ledger.moves(name, version=str(mv.version))]})
        return
    echo(f"{name} v{mv.version}  aliases: {', '.join(mv.aliases) or '-'}")
    echo(f"bundle: {check_bundle(mv).line()}")
    for key, value in bundle_of(mv).items():
        echo(f"  {key}: {value if value is not None else 'MISSING'}")
    extra = sorted(k for k in mv.tags if k.startswith("llmops.") and k.removeprefix("llmops.") not in bundle_of(mv))
    for key in extra:
        echo(f"  {key.removeprefix('llmops.')}: {mv.tags[key]}")
    approvals = releaser.ledger.approvals(name, str(mv.version))
    echo(f"approvals: {len(approvals)}")
    for approval in approvals:
        echo(f"  {approval.approver}: {approval.note or ''}")
    moves = releaser.ledger.moves(name, version=str(mv.version))
    echo(f"alias moves: {len(moves)}")
    for move in moves:
        echo(f"  {move.line()}")
