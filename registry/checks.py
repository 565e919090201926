"""The checks a promotion runs, each a pure-ish function returning `Check`s with their numbers.

Order: bundle -> order (ledger) -> eval run and dataset -> gates -> non-regression -> approvals -> infra.
"""

from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass
from typing import Any

from evaluation.gates import check_gates, load_gates
from registry.ledger import Ledger
from registry.policy import AliasRule, Policy


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str
    blocking: bool = True

    def line(self) -> str:
        status = "PASS" if self.passed else ("FAIL" if self.blocking else "WARN")
        return f"{status}  {self.name}: {self.detail}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def bundle_tags() -> tuple[str, ...]:
    from registry.register import BUNDLE_TAGS

    return tuple(BUNDLE_TAGS)


def bundle_of(model_version: Any) -> dict[str, str | None]:
    return {key: (model_version.tags.get(f"llmops.{key}") or None) for key in bundle_tags()}


def check_bundle(model_version: Any) -> Check:
    bundle = bundle_of(model_version)
    missing = [key for key, value in bundle.items() if value is None]
    if missing:
        return Check("bundle", False, f"missing tag(s) {', '.join('llmops.' + k for k in missing)}")
    return Check("bundle", True, f"complete ({len(bundle)} tags: prompt {bundle['prompt_name']} "
                                 f"v{bundle['prompt_version']}, dataset {bundle['dataset_digest']})")


def check_order(ledger: Ledger, name: str, version: str, alias: str, rule: AliasRule,
                aliases_now: list[str]) -> list[Check]:
    checks = []
    for prior in rule.requires_prior:
        if ledger.held(name, prior, version):
            checks.append(Check(f"order {prior} -> {alias}", True, f"v{version} was in {prior} (ledger)"))
        else:
            now = " (holds it now, but the move is not in the ledger)" if prior in aliases_now else ""
            checks.append(Check(f"order {prior} -> {alias}", False,
                                f"v{version} has never been in {prior} according to the ledger{now}"))
    return checks


def current_dataset_digest(client: Any, experiment_id: str, policy: Policy) -> tuple[str | None, str]:
    """(digest, where it came from): pinned in the policy, else the newest finished prepare_data run."""
    if policy.dataset.pinned_digest:
        return policy.dataset.pinned_digest, "pinned in the policy"
    runs = client.search_runs([experiment_id],
                              filter_string="tags.`llmops.step` = 'prepare_data' and attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        return None, "no finished prepare_data run in the experiment"
    run = runs[0]
    return run.data.tags.get("llmops.dataset_digest"), f"prepare_data run {run.info.run_id[:8]}"


def check_eval_run(client: Any, eval_run: Any, bundle_digest: str | None, policy: Policy) -> list[Check]:
    """The eval run is finished, scored this version's dataset, and that dataset is the current one."""
    checks = []
    status = eval_run.info.status
    checks.append(Check("eval run", status == "FINISHED", f"{eval_run.info.run_id} status {status}"))
    digest = eval_run.data.tags.get("llmops.dataset_digest") or eval_run.data.params.get("dataset_digest")
    checks.append(Check("eval dataset = bundle dataset", bool(digest) and digest == bundle_digest,
                        f"eval run scored {digest or 'unknown'}, bundle says {bundle_digest or 'unknown'}"))
    if policy.dataset.require_current:
        current, source = current_dataset_digest(client, eval_run.info.experiment_id, policy)
        checks.append(Check("eval dataset is current", current is not None and digest == current,
                            f"eval run scored {digest or 'unknown'}, current is {current or 'unknown'} ({source})"))
    return checks


def gates_compare_champions() -> bool:
    """Whether evaluation's `check_gates` takes the champion's metrics (gates with `max_regression`)."""
    return "champion_metrics" in inspect.signature(check_gates).parameters


def check_quality_gates(metrics: dict[str, float], gates_file: str, target: str | None,
                        champion_metrics: dict[str, float] | None = None) -> list[Check]:
    if target is None:
        return []
    gates = load_gates(gates_file)
    if gates.mode == "disabled":
        return [Check(f"gates {target}", True, "disabled in the gates file", blocking=False)]
    blocking = gates.mode == "enforced"
    extra = {"champion_metrics": champion_metrics} if champion_metrics is not None else {}
    return [Check(f"gate {r.metric}", r.passed,
                  f"{'missing' if r.value is None else f'{r.value:.4f}'} (needs {r.bound})"
                  + (f" [{r.note}]" if getattr(r, "note", "") else ""), blocking=blocking)
            for r in check_gates(metrics, gates, target, **extra)]


def check_non_regression(metrics: dict[str, float], champion_version: str | None,
                         champion_metrics: dict[str, float] | None, rule: AliasRule, version: str) -> list[Check]:
    """Who the champion is, and candidate >= champion - tolerance for each of the policy's own tolerances."""
    nr = rule.non_regression
    if nr is None:
        return []
    if champion_version is None:
        return [Check(f"non-regression vs @{nr.against}", True, f"no version holds {nr.against} yet")]
    if champion_version == str(version):
        return [Check(f"non-regression vs @{nr.against}", True, f"v{version} already holds {nr.against}")]
    checks = [Check(f"non-regression vs @{nr.against}", champion_metrics is not None,
                    f"champion v{champion_version}" + ("" if champion_metrics is not None
                                                       else ": its eval run is missing, cannot compare"))]
    for metric, tolerance in nr.tolerances.items():
        value, best = metrics.get(metric), (champion_metrics or {}).get(metric)
        if value is None or best is None:
            checks.append(Check(f"non-regression {metric}", False,
                                f"v{version} {value}, champion v{champion_version} {best}: metric missing"))
            continue
        checks.append(Check(f"non-regression {metric}", value >= best - tolerance,
                            f"{value:.4f} vs champion v{champion_version} {best:.4f} (tolerance {tolerance})"))
    return checks


def check_approvals(ledger: Ledger, name: str, version: str, needed: int) -> list[Check]:
    if needed == 0:
        return []
    approvers = sorted({a.approver for a in ledger.approvals(name, version)})
    shown = ", ".join(approvers) or "none"
    return [Check("approvals", len(approvers) >= needed, f"{len(approvers)} of {needed} needed ({shown})")]
