"""The checks a promotion runs, each a pure-ish function returning `Check`s with their numbers.

Order: bundle -> order (ledger) -> eval run and dataset -> gates -> non-regression -> approvals -> infra.
"""

from __future__ import annotations

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
    from registry.release import BUNDLE_KEYS

    return BUNDLE_KEYS


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


def current_dataset_digest(client: Any, experiment_ids: list[str], lineage: str | None,
                           policy: Policy) -> tuple[str | None, str]:
    """(digest, where it came from): pinned in the policy, else the newest finished data-step run of the same
    lineage (same query, parameters and tables): preparing other datasets beside it does not make it stale."""
    if policy.dataset.pinned_digest:
        return policy.dataset.pinned_digest, "pinned in the policy"
    if not lineage or lineage == "none":
        return None, "the dataset has no lineage (not written by the data step); pin dataset.pinned_digest"
    runs = client.search_runs(experiment_ids,
                              filter_string=("tags.`llmops.step` = 'prepare_data' and attributes.status = 'FINISHED' "
                                             f"and tags.`llmops.dataset_lineage` = '{lineage}'"),
                              order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        return None, f"no finished prepare_data run of lineage {lineage}"
    run = runs[0]
    return run.data.tags.get("llmops.dataset_digest"), f"newest prepare_data run {run.info.run_id[:8]} of lineage " \
                                                      f"{lineage}"


def check_eval_run(client: Any, eval_run: Any, bundle: dict[str, str | None], policy: Policy) -> list[Check]:
    """The eval run is finished, scored this version's dataset (same digest and lineage), and that dataset is the
    current version of its lineage."""
    checks = []
    status = eval_run.info.status
    checks.append(Check("eval run", status == "FINISHED", f"{eval_run.info.run_id} status {status}"))
    params = eval_run.data.params
    digest = params.get("dataset_digest") or eval_run.data.tags.get("llmops.dataset_digest")
    lineage = params.get("dataset_lineage")
    same = bool(digest) and digest == bundle["dataset_digest"] and lineage == bundle["dataset_lineage"]
    checks.append(Check("eval dataset = bundle dataset", same,
                        f"eval run scored {digest or 'unknown'} (lineage {lineage or 'unknown'}), bundle says "
                        f"{bundle['dataset_digest'] or 'unknown'} (lineage {bundle['dataset_lineage'] or 'unknown'})"))
    if policy.dataset.require_current:
        current, source = current_dataset_digest(client, [eval_run.info.experiment_id], bundle["dataset_lineage"],
                                                 policy)
        checks.append(Check("eval dataset is current", current is not None and digest == current,
                            f"eval run scored {digest or 'unknown'}, current is {current or 'unknown'} ({source})"))
    return checks


def check_quality_gates(metrics: dict[str, float], gates_file: str, target: str | None,
                        champion: Any = None) -> list[Check]:
    """The gates file's `target` on the eval run's metrics; `champion` is an evaluation.champion.ChampionComparison
    (None: no version holds the alias compared against)."""
    if target is None:
        return []
    gates = load_gates(gates_file)
    if gates.mode == "disabled":
        return [Check(f"gates {target}", True, "disabled in the gates file", blocking=False)]
    blocking = gates.mode == "enforced"
    extra = {} if champion is None else {"champion_metrics": champion.metrics, "champion_leads": champion.leads,
                                         "champion_note": champion.note}
    return [Check(f"gate {r.metric}", r.passed,
                  f"{'missing' if r.value is None else f'{r.value:.4f}'} (needs {r.bound})"
                  + (f" [{r.note}]" if r.note else ""), blocking=blocking)
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
