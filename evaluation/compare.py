"""Paired comparison of evaluation runs on the same rows: per metric B - A, a seeded bootstrap CI, a verdict.

Runs are paired by row id from their `eval/rows.json` tables. Runs scored on different dataset digests are
refused unless explicitly allowed; runs whose row ids differ are always refused. Everything is checked and
computed before anything is logged, so a refused comparison leaves no artifact behind.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from evaluation.run import ROWS_ARTIFACT
from evaluation.scorers import METRICS
from evaluation.stats import paired_bootstrap, verdict
from llmops.errors import DataError, NotFoundError
from llmops.tracking import get_run

COMPARISON_ARTIFACT = "comparison.json"


@dataclass(frozen=True)
class MetricComparison:
    metric: str
    mean_a: float
    mean_b: float
    diff: float
    ci_low: float
    ci_high: float
    n: int
    verdict: str


@dataclass(frozen=True)
class Comparison:
    run_a: str
    run_b: str
    eval_digest_a: str
    eval_digest_b: str
    rows: int
    confidence: float
    samples: int
    seed: int
    metrics: list[MetricComparison]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "metrics": [asdict(m) for m in self.metrics]}


def load_rows(run_id: str) -> Any:
    """The per-row table of an evaluation run (NotFoundError for a run that does not exist or has none)."""
    import mlflow.artifacts
    import pandas as pd
    from mlflow.exceptions import MlflowException

    run = get_run(run_id)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path=ROWS_ARTIFACT,
                                                       dst_path=tmp)
        except (MlflowException, OSError) as exc:
            raise NotFoundError(f"run {run_id} has no {ROWS_ARTIFACT}: is it an `llmops eval run` run?") from exc
        payload = json.loads(Path(path).read_text(encoding="utf-8"))
    frame = pd.DataFrame(payload["data"], columns=payload["columns"])
    frame["row_id"] = frame["row_id"].astype(str)
    return frame


def _metric_columns(frame: Any) -> list[str]:
    return [c for c in frame.columns if c in METRICS]


def compare_runs(run_a: str, run_b: str, *, allow_different_datasets: bool = False, samples: int = 1000,
                 confidence: float = 0.95, seed: int = 0) -> Comparison:
    """B relative to A, metric by metric, over the rows both runs scored."""
    import numpy as np

    digest_a = get_run(run_a).data.params.get("eval_digest", "")
    digest_b = get_run(run_b).data.params.get("eval_digest", "")
    if digest_a != digest_b and not allow_different_datasets:
        raise DataError(f"runs were evaluated on different datasets (eval_digest {digest_a or '?'} vs "
                        f"{digest_b or '?'}); pass --allow-different-datasets to compare anyway")
    a, b = load_rows(run_a), load_rows(run_b)
    ids_a, ids_b = set(a["row_id"]), set(b["row_id"])
    if ids_a != ids_b:
        raise DataError(f"runs scored different rows: {len(ids_a - ids_b)} only in {run_a}, "
                        f"{len(ids_b - ids_a)} only in {run_b}; a paired comparison needs the same rows")
    a, b = a.set_index("row_id").sort_index(), b.set_index("row_id").sort_index()
    shared = [m for m in _metric_columns(a) if m in b.columns]
    if not shared:
        raise DataError(f"runs {run_a} and {run_b} have no scorer in common")
    results = []
    for offset, metric in enumerate(sorted(shared)):
        va, vb = a[metric].to_numpy(dtype=float), b[metric].to_numpy(dtype=float)
        interval = paired_bootstrap(va, vb, samples=samples, confidence=confidence, seed=seed + offset)
        both = np.isfinite(va) & np.isfinite(vb)
        mean_a = float(va[both].mean()) if both.any() else math.nan
        mean_b = float(vb[both].mean()) if both.any() else math.nan
        results.append(MetricComparison(metric, mean_a, mean_b, interval.estimate, interval.low, interval.high,
                                        interval.n, verdict(interval, METRICS[metric].direction)))
    return Comparison(run_a, run_b, digest_a, digest_b, len(ids_a), confidence, samples, seed, results)


def format_table(comparison: Comparison) -> str:
    head = (f"A = {comparison.run_a}  B = {comparison.run_b}  rows = {comparison.rows}  "
            f"({comparison.confidence:.0%} paired bootstrap CI of B - A, {comparison.samples} samples, "
            f"seed {comparison.seed})")
    lines = [head, f"{'metric':<22}{'A':>11}{'B':>11}{'B - A':>11}{'CI low':>11}{'CI high':>11}{'n':>6}  verdict"]
    for m in comparison.metrics:
        lines.append(f"{m.metric:<22}{m.mean_a:>11.4g}{m.mean_b:>11.4g}{m.diff:>11.4g}{m.ci_low:>11.4g}"
                     f"{m.ci_high:>11.4g}{m.n:>6}  {m.verdict}")
    return "\n".join(lines)


def comparison_name(comparisons: list[Comparison]) -> str:
    """`compare so-qa@v1 retrieval-tfidf vs so-qa@v2 retrieval-tfidf`: the compared runs' own names."""
    def label(run_id: str) -> str:
        return (get_run(run_id).info.run_name or run_id[:8]).removeprefix("eval ")

    return f"compare {label(comparisons[0].run_a)} vs {', '.join(label(c.run_b) for c in comparisons)}"


def log_comparison(comparisons: list[Comparison]) -> str:
    """One `compare` run holding comparison.json (and the table); returns its run id."""
    import mlflow

    from llmops.tracking import link_dataset_inputs

    with mlflow.start_run(run_name=comparison_name(comparisons)) as run:
        mlflow.set_tags({"llmops.step": "compare", "llmops.baseline_run": comparisons[0].run_a,
                         "llmops.compared_runs": ",".join(c.run_b for c in comparisons)})
        link_dataset_inputs([comparisons[0].run_a, *(c.run_b for c in comparisons)])
        mlflow.log_dict({"comparisons": [c.to_dict() for c in comparisons]}, COMPARISON_ARTIFACT)
        mlflow.log_text("\n\n".join(format_table(c) for c in comparisons), "comparison.txt")
    return run.info.run_id
