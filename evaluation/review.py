"""Human review of an evaluation run: export rows to rate, import ratings as MLflow feedback, report agreement.

Export writes N rows (seeded sample) with the question, the answer, the reference and empty `rating` and
`comment` columns, as CSV or JSONL. Import validates the whole file first (known trace ids, ratings inside the
scale), then logs each rating with `mlflow.log_feedback` on the row's trace with a HUMAN source, and reports
the Spearman correlation between the human ratings and each automatic score on the rated rows.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evaluation.compare import load_rows
from evaluation.scorers import METRICS
from llmops.errors import DataError
from llmops.fsutil import atomic_path

EXPORT_COLUMNS = ["trace_id", "row_id", "question", "answer", "reference", "rating", "comment"]
FEEDBACK_NAME = "human_rating"


def export_for_review(run_id: str, path: Path, n: int = 20, seed: int = 0) -> int:
    """Write up to n rows of the run for rating; the format follows the suffix (.csv or .jsonl)."""
    path = Path(path)
    if path.suffix not in (".csv", ".jsonl"):
        raise DataError(f"review file must end in .csv or .jsonl, got {path.name}")
    if n < 1:
        raise DataError("--n must be at least 1")
    rows = load_rows(run_id)
    sample = rows.sample(n=min(n, len(rows)), random_state=seed).sort_values("row_id")
    records = [{**{c: r[c] for c in EXPORT_COLUMNS if c in r}, "rating": "", "comment": ""}
               for r in sample.to_dict("records")]
    return write_rows(path, EXPORT_COLUMNS, records)


def write_rows(path: Path, columns: list[str], records: list[dict[str, Any]]) -> int:
    """A review file (.csv or .jsonl by its suffix), written atomically; also the feedback component's batches."""
    path = Path(path)
    if path.suffix not in (".csv", ".jsonl"):
        raise DataError(f"review file must end in .csv or .jsonl, got {path.name}")
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8", newline="") as handle:
        if path.suffix == ".csv":
            writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(records)
        else:
            for record in records:
                handle.write(json.dumps({c: record.get(c) for c in columns}, ensure_ascii=False, default=str) + "\n")
    return len(records)


def read_rows(path: Path, what: str = "ratings file") -> list[tuple[int, dict[str, Any]]]:
    """(line number, row) of a filled-in review file; the line is where the row starts (CSV cells may span lines).
    A line that is not a JSON object, or a CSV row with more cells than the header, is named by number."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} not found: {path}")
    try:
        if path.suffix == ".csv":
            out = []
            with path.open(encoding="utf-8", newline="") as handle:
                reader = csv.DictReader(handle)
                start = 2
                for row in reader:
                    if None in row:
                        raise DataError(f"{what} {path} line {start} has more cells than the header")
                    out.append((start, row))
                    start = reader.line_num + 1
            return out
        if path.suffix == ".jsonl":
            out = []
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
                if line.strip():
                    try:
                        item = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise DataError(f"{what} {path} line {number} is not JSON: {exc.msg}") from exc
                    if not isinstance(item, dict):
                        raise DataError(f"{what} {path} line {number} is not a JSON object")
                    out.append((number, item))
            return out
    except UnicodeDecodeError as exc:
        raise DataError(f"{what} {path} is not UTF-8") from exc
    except csv.Error as exc:
        raise DataError(f"{what} {path} is not valid CSV: {exc}") from exc
    raise DataError(f"{what} must end in .csv or .jsonl, got {path.name}")


def read_ratings(path: Path) -> list[dict[str, Any]]:
    return [row for _, row in read_rows(path)]


@dataclass(frozen=True)
class Agreement:
    metric: str
    spearman: float
    n: int


@dataclass(frozen=True)
class ImportReport:
    logged: int
    skipped: int
    agreement: list[Agreement]

    def lines(self) -> list[str]:
        out = [f"logged {self.logged} human rating(s); skipped {self.skipped} unrated row(s)",
               f"{'metric':<22}{'spearman':>10}{'n':>6}"]
        out += [f"{a.metric:<22}{a.spearman:>10.3f}{a.n:>6}" for a in self.agreement]
        return out


def import_ratings(run_id: str, path: Path, reviewer: str, scale: tuple[float, float] = (1, 5)) -> ImportReport:
    """Validate every rating, then log them as HUMAN feedback on the rows' traces and report agreement."""
    import mlflow
    from mlflow.entities import AssessmentSource, AssessmentSourceType

    if not reviewer.strip():
        raise DataError("--reviewer is required: who gave these ratings")
    rows = load_rows(run_id).set_index("trace_id")
    ratings = read_ratings(path)
    parsed: list[tuple[str, float, str]] = []
    skipped = 0
    for number, item in enumerate(ratings, start=1):
        trace_id = str(item.get("trace_id") or "")
        if trace_id not in rows.index:
            raise DataError(f"ratings row {number}: trace id {trace_id!r} is not a row of run {run_id}")
        raw = item.get("rating")
        if raw is None or str(raw).strip() == "":
            skipped += 1
            continue
        try:
            value = float(raw)
        except (TypeError, ValueError) as exc:
            raise DataError(f"ratings row {number}: rating {raw!r} is not a number") from exc
        if not (scale[0] <= value <= scale[1]) or math.isnan(value):
            raise DataError(f"ratings row {number}: rating {value:g} is outside the scale {scale[0]:g}..{scale[1]:g}")
        parsed.append((trace_id, value, str(item.get("comment") or "")))
    if not parsed:
        raise DataError(f"no ratings in {path}: fill the 'rating' column ({scale[0]:g}..{scale[1]:g})")
    source = AssessmentSource(source_type=AssessmentSourceType.HUMAN, source_id=reviewer)
    for trace_id, value, comment in parsed:
        mlflow.log_feedback(trace_id=trace_id, name=FEEDBACK_NAME, value=value, rationale=comment or None,
                            source=source)
    return ImportReport(len(parsed), skipped, agreement(rows, parsed))


def agreement(rows: Any, parsed: list[tuple[str, float, str]], metrics: list[str] | None = None) -> list[Agreement]:
    """Spearman rank correlation between human ratings and each automatic score (NaN when constant); `metrics`
    names the score columns (default: the scorers' columns of `rows`)."""
    import numpy as np
    from scipy.stats import spearmanr

    human = np.array([v for _, v, _ in parsed])
    ids = [t for t, _, _ in parsed]
    out = []
    for metric in metrics if metrics is not None else [c for c in rows.columns if c in METRICS]:
        auto = rows.loc[ids, metric].to_numpy(dtype=float)
        keep = np.isfinite(auto)
        n = int(keep.sum())
        if n < 3 or np.ptp(auto[keep]) == 0 or np.ptp(human[keep]) == 0:
            out.append(Agreement(metric, math.nan, n))
            continue
        out.append(Agreement(metric, float(spearmanr(human[keep], auto[keep]).statistic), n))
    return out
