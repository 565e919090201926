"""The champion on the same rows: find its evaluation on the candidate's eval rows and compare row by row.

A paired comparison needs both models scored on the same rows. The champion's own bundle eval run qualifies when
it scored the candidate's eval digest; otherwise any finished eval run of the champion version on that digest
does (`llmops eval run --model-uri models:/NAME/V --eval-uri <the candidate's eval split>` makes one). Without
one, a `beats: champion` gate fails and says which command to run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from evaluation.baselines import RELATIVE_METRICS, paired_delta
from evaluation.stats import Interval


@dataclass(frozen=True)
class ChampionComparison:
    label: str  # e.g. "so-qa v2 (eval run 1a2b...)"
    metrics: dict[str, float] | None  # the champion's eval-run metrics (for max_regression gates)
    leads: dict[str, Interval] = field(default_factory=dict)  # metric -> paired CI of candidate - champion
    note: str | None = None  # why there is no paired comparison


def champion_eval_run(client: Any, name: str, version: Any, eval_digest: str, experiment_ids: list[str]) -> Any:
    """The newest finished eval run of `name` v`version` on the rows named by `eval_digest`, or None."""
    from mlflow.exceptions import MlflowException

    own = version.tags.get("llmops.eval_run_id")
    if own:
        try:
            run = client.get_run(own)
            if run.info.status == "FINISHED" and run.data.params.get("eval_digest") == eval_digest:
                return run
        except MlflowException:
            pass
    runs = client.search_runs(
        experiment_ids,
        filter_string=(f"params.model_name = '{_quote(name)}' and params.model_version = '{version.version}' "
                       f"and params.eval_digest = '{_quote(eval_digest)}' and attributes.status = 'FINISHED'"),
        order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0] if runs else None


def _quote(text: str) -> str:
    return str(text).replace("'", "\\'")


def compare_with_champion(client: Any, candidate_run: Any, name: str, version: Any, *, samples: int,
                          confidence: float, seed: int) -> ChampionComparison:
    """Paired leads of the candidate's eval run over the champion version on the same rows."""
    from evaluation.compare import load_rows
    from llmops.tracking import get_run

    label = f"{name} v{version.version}"
    own_id = version.tags.get("llmops.eval_run_id")
    own_metrics = dict(get_run(own_id).data.metrics) if own_id else None
    digest = candidate_run.data.params.get("eval_digest", "")
    experiments = sorted({candidate_run.info.experiment_id} | ({get_run(own_id).info.experiment_id} if own_id
                                                               else set()))
    champion_run = champion_eval_run(client, name, version, digest, experiments)
    if champion_run is None:
        eval_uri = candidate_run.data.params.get("eval_uri", "<eval split>")
        return ChampionComparison(label, own_metrics, note=(
            f"champion {label} has no evaluation on the candidate's eval rows (eval_digest {digest}); run "
            f"`llmops eval run --model-uri models:/{name}/{version.version} --eval-uri {eval_uri}`"))
    candidate, champion = load_rows(candidate_run.info.run_id), load_rows(champion_run.info.run_id)
    if set(candidate["row_id"]) != set(champion["row_id"]):
        return ChampionComparison(label, own_metrics, note=f"champion {label}'s eval run scored other rows")
    candidate = candidate.set_index("row_id").sort_index()
    champion = champion.set_index("row_id").sort_index()
    abstained = candidate["response_abstained"].to_numpy(dtype=bool)
    leads = {}
    for offset, (metric, (column, _answered)) in enumerate(sorted(RELATIVE_METRICS.items())):
        if column in candidate.columns and column in champion.columns:
            leads[metric] = paired_delta(candidate[column].to_numpy(dtype=float),
                                         champion[column].to_numpy(dtype=float), abstained, metric,
                                         samples=samples, confidence=confidence, seed=seed + offset)
    return ChampionComparison(f"{label} (eval run {champion_run.info.run_id[:8]})",
                              dict(champion_run.data.metrics), leads)


def resolve_champion(model_uri: str) -> tuple[str, Any]:
    """`models:/NAME@ALIAS` -> (name, the version holding the alias); an unknown model or an unset alias is an
    error that lists the aliases the model has (a typo must not quietly skip the comparison)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from llmops.errors import ConfigError, NotFoundError

    if not model_uri.startswith("models:/") or "@" not in model_uri:
        raise ConfigError(f"--against needs a model alias URI like models:/name@production, got {model_uri!r}")
    name, alias = model_uri.removeprefix("models:/").split("@", 1)
    client = MlflowClient()
    try:
        model = client.get_registered_model(name)
    except MlflowException as exc:
        raise NotFoundError(f"registered model {name!r} not found (--against {model_uri})") from exc
    if alias not in model.aliases:
        held = ", ".join(sorted(model.aliases)) or "none"
        raise NotFoundError(f"{name} has no alias {alias!r} (its aliases: {held}); omit --against when there is "
                            "no champion yet")
    return name, client.get_model_version(name, str(model.aliases[alias]))
