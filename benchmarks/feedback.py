"""Benchmark: resolving feedback through the inference log, and POST /feedback on a real uvicorn server.

For logs of N records (parts of 1,000, as a rotating writer leaves them) it times, in one run:
- the baseline: read the whole log (`llmops.records.read_inference_log`) and filter it for one request id;
- the index (`feedback.resolve.InferenceLog`): the first lookup (which reads every part's request ids once), then
  lookups of random ids (one part read each), and the index's memory;
- POST /feedback end to end (validate, resolve, store one part) over HTTP on 127.0.0.1, sequential requests.

    .venv/bin/python benchmarks/feedback.py [--sizes 10000 100000] [--lookups 200] [--posts 200]

Everything runs in a temporary directory; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
import tracemalloc
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO)]


def _log(location: Path, n: int, part_rows: int = 1000) -> list[str]:
    from tests.feedback.helpers import served

    from llmops.records import write_inference_records

    ids = []
    t0 = datetime(2026, 11, 30, tzinfo=UTC)
    for start in range(0, n, part_rows):
        rows = [served(f"Question {i} about Python lists and dictionaries?", f"Answer {i}: use a comprehension.",
                       when=t0 + timedelta(seconds=i)) for i in range(start, min(n, start + part_rows))]
        ids += [r["request_id"] for r in rows]
        write_inference_records(str(location), rows)
    return ids


def _ms(seconds: list[float]) -> tuple[float, float]:
    values = sorted(s * 1000 for s in seconds)
    return statistics.median(values), values[min(len(values) - 1, int(len(values) * 0.99))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--lookups", type=int, default=200)
    parser.add_argument("--baseline-lookups", type=int, default=3)
    parser.add_argument("--posts", type=int, default=200)
    args = parser.parse_args()

    import random

    import httpx
    import pyarrow.compute as pc
    from fastapi import FastAPI

    from feedback.http import feedback_router
    from feedback.resolve import InferenceLog
    from llmops.records import read_inference_log
    from llmops.settings import load_settings
    from tests.feedback.helpers import uvicorn_server

    rng = random.Random(0)
    tmp = Path(tempfile.mkdtemp(prefix="llmops-feedback-bench-"))
    rows = []
    for n in args.sizes:
        location = tmp / f"log-{n}"
        ids = _log(location, n)
        base = []
        for _ in range(args.baseline_lookups):
            target = rng.choice(ids)
            started = time.perf_counter()
            table = read_inference_log(str(location))
            assert table.filter(pc.equal(table.column("request_id"), target)).num_rows == 1
            base.append(time.perf_counter() - started)
        gc.collect()
        tracemalloc.start()
        index = InferenceLog(str(location))
        started = time.perf_counter()
        assert index.find(ids[0]) is not None
        first = time.perf_counter() - started
        memory = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        lookups = []
        for _ in range(args.lookups):
            target = rng.choice(ids)
            started = time.perf_counter()
            assert index.find(target)["request_id"] == target
            lookups.append(time.perf_counter() - started)
        settings = load_settings({"feedback": {"log_uri": str(location), "store_uri": str(tmp / f"store-{n}")}})
        app = FastAPI()
        app.include_router(feedback_router(settings))
        posts = []
        with uvicorn_server(app) as url, httpx.Client() as client:
            for i in range(args.posts):
                body = {"request_id": rng.choice(ids), "rating": i % 2, "user": f"u{i}"}
                started = time.perf_counter()
                response = client.post(url + "/feedback", json=body)
                posts.append(time.perf_counter() - started)
                assert response.status_code == 201, response.text
        rows.append((n, _ms(base)[0], first * 1000, *_ms(lookups), memory / n, *_ms(posts)))
        print(f"  ({n:,} records in {len(ids) // 1000} parts; unknown-id check: "
              f"{index.find(uuid.uuid4().hex) is None})", flush=True)
    print(f"\n{'log records':>12} {'baseline ms':>12} {'index build ms':>15} {'lookup p50':>11} {'lookup p99':>11} "
          f"{'index B/rec':>12} {'POST p50 ms':>12} {'POST p99 ms':>12}")
    for n, baseline, build, p50, p99, per_record, post50, post99 in rows:
        print(f"{n:>12,} {baseline:>12.1f} {build:>15.1f} {p50:>11.2f} {p99:>11.2f} {per_record:>12.0f} "
              f"{post50:>12.2f} {post99:>12.2f}")


if __name__ == "__main__":
    main()
