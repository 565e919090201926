"""The inference log cut into windows: per model version (never mixed), by time (`1h`) or by count (`500`), and the
operational metrics of each window."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from llmops.errors import ConfigError, DataError
from llmops.records import INFERENCE_SCHEMA_VERSION, read_inference_log

_DURATION = re.compile(r"(?P<value>\d+)\s*(?P<unit>s|m|min|h|d|w)")
_UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@dataclass(frozen=True)
class WindowSpec:
    """Windows of `seconds` of wall time, or of `rows` consecutive records."""

    seconds: int | None = None
    rows: int | None = None

    def __str__(self) -> str:
        return f"{self.rows} rows" if self.rows else _human(self.seconds or 0)


def _human(seconds: int) -> str:
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def parse_window(spec: str) -> WindowSpec:
    """`1h`, `30m`, `1d`, `45s`, `2w` (time) or a plain number of records such as `500` (count)."""
    text = str(spec).strip().lower()
    if text.isdigit():
        if int(text) < 1:
            raise ConfigError("--window needs at least 1 record per window")
        return WindowSpec(rows=int(text))
    match = _DURATION.fullmatch(text)
    if not match or int(match["value"]) < 1:
        raise ConfigError(f"--window must be a duration such as 1h, 30m, 1d or a record count such as 500, "
                          f"got {spec!r}")
    return WindowSpec(seconds=int(match["value"]) * _UNITS[match["unit"]])


@dataclass
class Window:
    model_name: str
    model_version: str
    index: int
    start: datetime
    end: datetime
    records: pa.Table

    @property
    def questions(self) -> list[str]:
        return questions_of(self.records)


def questions_of(records: pa.Table) -> list[str]:
    """Questions of the records that have one (an empty or refused request has none to compare)."""
    values = records.column("question").to_pylist()
    return [q for q in values if q]


def load_log(location: str, since: datetime | None = None, until: datetime | None = None) -> pa.Table:
    """Every record of the log (in time order), optionally within [since, until); an empty log is an error."""
    table = read_inference_log(location)
    if table.num_rows == 0:
        raise DataError(f"inference log {location} holds no records")
    newest = pc.max(table.column("schema_version")).as_py()
    if newest is not None and newest > INFERENCE_SCHEMA_VERSION:
        raise DataError(f"inference log {location} has schema version {newest}; this monitor reads up to "
                        f"{INFERENCE_SCHEMA_VERSION} (upgrade llmops)")
    for name in ("time", "model_name", "model_version"):
        if table.column(name).null_count:
            raise DataError(f"inference log {location}: {table.column(name).null_count} record(s) have no {name}")
    if since is not None:
        table = table.filter(pc.greater_equal(table.column("time"), pa.scalar(since, table.schema.field("time").type)))
    if until is not None:
        table = table.filter(pc.less(table.column("time"), pa.scalar(until, table.schema.field("time").type)))
    if table.num_rows == 0:
        raise DataError(f"inference log {location} holds no records between {since or 'the start'} and "
                        f"{until or 'now'}")
    return table.sort_by([("time", "ascending")])


def versions_in(table: pa.Table) -> list[tuple[str, str]]:
    pairs = {(n, v) for n, v in zip(table.column("model_name").to_pylist(), table.column("model_version").to_pylist(),
                                    strict=True)}
    return sorted(pairs, key=lambda p: (p[0], _version_key(p[1])))


def _version_key(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (10 ** 9, version)


def records_of(table: pa.Table, name: str, version: str) -> pa.Table:
    mask = pc.and_(pc.equal(table.column("model_name"), name), pc.equal(table.column("model_version"), version))
    return table.filter(mask)


def cut_windows(records: pa.Table, spec: WindowSpec) -> list[Window]:
    """Windows of one version's records (time-ordered): aligned time buckets, or consecutive blocks of records."""
    if records.num_rows == 0:
        return []
    name = records.column("model_name")[0].as_py()
    version = records.column("model_version")[0].as_py()
    millis = records.column("time").cast(pa.int64()).to_numpy()
    if spec.rows:
        bounds = list(range(0, records.num_rows, spec.rows)) + [records.num_rows]
        windows = []
        for index, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
            windows.append(Window(name, version, index, _at(millis[lo]), _at(millis[hi - 1]),
                                  records.slice(lo, hi - lo)))
        return windows
    width = spec.seconds * 1000
    buckets = millis // width
    windows = []
    for index, bucket in enumerate(np.unique(buckets)):
        positions = np.flatnonzero(buckets == bucket)
        windows.append(Window(name, version, index, _at(bucket * width), _at((bucket + 1) * width),
                              records.take(pa.array(positions))))
    return windows


def _at(millis: int | np.integer) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=int(millis))


def operational_metrics(window: Window) -> dict[str, float]:
    """Requests, throughput, error rates, latency percentiles, abstention / block / hit rates of one window.

    Throughput divides by the window's length (time windows) or by the span from its first to its last record
    (count windows). Error rate: status >= 500 (the server failed); client_error_rate: 400-499 (refused input).
    Rates of answers (abstention, block, hit) are over the successful requests; a hit is an answer that neither
    abstained nor was blocked and cites a source.
    """
    records = window.records
    n = records.num_rows
    status = records.column("status").to_numpy(zero_copy_only=False)
    latency = records.column("latency_ms").to_numpy(zero_copy_only=False).astype(float)
    ok = status < 400
    seconds = max((window.end - window.start).total_seconds(), 1e-3)
    metrics = {"requests": float(n), "throughput_rps": n / seconds,
               "error_rate": float(np.mean(status >= 500)) if n else 0.0,
               "client_error_rate": float(np.mean((status >= 400) & (status < 500))) if n else 0.0}
    valid = latency[~np.isnan(latency)]
    for q in (50, 95, 99):
        metrics[f"latency_p{q}_ms"] = float(np.percentile(valid, q)) if len(valid) else float("nan")
    answered = int(ok.sum())
    if answered:
        abstained = _bools(records.column("abstained"))[ok]
        blocked = _bools(records.column("safety_blocked"))[ok]
        cites = np.array([bool(c) for c in records.column("citations").to_pylist()])[ok]
        metrics.update({"abstention_rate": float(abstained.mean()), "block_rate": float(blocked.mean()),
                        "hit_rate": float((~abstained & ~blocked & cites).mean())})
    else:
        metrics.update({"abstention_rate": float("nan"), "block_rate": float("nan"), "hit_rate": float("nan")})
    return metrics


def _bools(column: pa.ChunkedArray) -> np.ndarray:
    return np.asarray(pc.fill_null(column, False).to_numpy(zero_copy_only=False), dtype=bool)


def answer_features(records: pa.Table) -> dict[str, np.ndarray]:
    """Per-row answer-side values aligned with `questions_of(records)`; NaN where a request has no answer."""
    keep = [bool(q) for q in records.column("question").to_pylist()]
    status = records.column("status").to_numpy(zero_copy_only=False)
    ok = (status < 400)
    abstained = _bools(records.column("abstained")).astype(float)
    blocked = _bools(records.column("safety_blocked")).astype(float)
    answers = records.column("answer").to_pylist()
    citations = records.column("citations").to_pylist()
    best = np.array([max((c.get("similarity") or 0.0 for c in cs), default=np.nan) if cs else np.nan
                     for cs in citations], dtype=float)
    chars = np.array([len(a) if a is not None else np.nan for a in answers], dtype=float)
    out = {}
    for name, values in (("abstention_rate", abstained), ("safety_block_rate", blocked),
                         ("citation_similarity", best), ("answer_chars", chars)):
        masked = np.where(ok, values, np.nan)
        out[name] = masked[np.array(keep, dtype=bool)] if len(keep) else masked
    return out
