"""Benchmark: a 1,000-row evaluation with the deterministic scorers on the local backend, then with LLM judges
served by a local OpenAI-compatible fake on 127.0.0.1 (simulated latency): a cold run, and a rerun whose judge
calls all come from the on-disk cache. Prints wall times and the speed-up.

    .venv/bin/python benchmarks/eval.py [--rows 1000] [--judge-latency-ms 100]

Everything runs in a temporary directory (its own SQLite store); nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests" / "evaluation")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--judged-rows", type=int, default=None,
                        help="Rows for the two judged runs (default: --rows; fewer keeps a slow store's run short).")
    parser.add_argument("--train", type=int, default=300)
    parser.add_argument("--judge-latency-ms", type=float, default=100.0)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"

    import mlflow
    from judge_server import JudgeServer
    from synth import qa_rows

    from backends.openai_compat import OpenAICompatibleProvider
    from backends.retrieval import RetrievalAnswerer
    from evaluation.cache import JudgeCache
    from evaluation.dataset import load_eval_dataset
    from evaluation.judges import JudgeClient, make_judges
    from evaluation.run import chain_target, evaluate_target
    from llmops.settings import load_settings
    from llmops.tracking import configure_mlflow

    tmp = Path(tempfile.mkdtemp(prefix="llmops-eval-bench-"))
    settings = load_settings({"mlflow": {"tracking_uri": f"sqlite:///{tmp / 'mlflow.db'}"},
                              "evaluation": {"workers": args.workers}})
    configure_mlflow(settings)
    mlflow.genai.register_prompt("bench-qa", "Answer: {{question}}")
    train = qa_rows(args.train, seed=1, start_id=1)
    RetrievalAnswerer.fit(train).save(tmp / "retriever")
    (tmp / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in qa_rows(args.rows, seed=2, start_id=10**6)))
    judged_rows = args.judged_rows or args.rows
    (tmp / "judged.jsonl").write_text("".join(json.dumps(r) + "\n"
                                              for r in qa_rows(args.rows, seed=2, start_id=10**6)[:judged_rows]))
    (tmp / "warm.jsonl").write_text("".join(json.dumps(r) + "\n" for r in qa_rows(5, seed=3, start_id=9)))
    sources = {str(r["question_id"]) for r in train}
    target = chain_target(str(tmp / "retriever"), "prompts:/bench-qa/1")
    server = JudgeServer(delay_s=args.judge_latency_ms / 1000).start()
    judge_cfg = settings.evaluation.judge

    def timed(name: str, dataset_path: Path, judged: bool, cache_dir: Path | None = None) -> dict:
        client = None
        judges = None
        if judged:
            provider = OpenAICompatibleProvider(server.base_url, "bench-judge", max_retries=0)
            client = JudgeClient(provider, "bench-judge", JudgeCache(cache_dir),
                                 max_concurrency=judge_cfg.max_concurrency, retries=judge_cfg.retries)
            judges = make_judges(client, list(judge_cfg.judges))
        dataset = load_eval_dataset(str(dataset_path))
        before = len(server.requests)
        start = time.perf_counter()
        with mlflow.start_run(run_name=name):
            outcome = evaluate_target(target, dataset, settings=settings, judges=judges,
                                      judge_model="bench-judge" if judged else None, known_sources=sources)
        wall = time.perf_counter() - start
        return {"run": name, "rows": len(dataset.rows), "wall_s": wall, "rows_per_s": len(dataset.rows) / wall,
                "judge_http_calls": len(server.requests) - before,
                "cache_hits": client.cache.hits if client else 0,
                "token_f1": outcome.metrics.get("token_f1/mean"),
                "correctness": outcome.metrics.get("correctness/mean")}

    try:
        timed("warm-up (imports)", tmp / "warm.jsonl", judged=False)
        results = [timed("deterministic scorers", tmp / "eval.jsonl", judged=False),
                   timed("+ judges, cold cache", tmp / "judged.jsonl", judged=True, cache_dir=tmp / "cache"),
                   timed("+ judges, warm cache", tmp / "judged.jsonl", judged=True, cache_dir=tmp / "cache")]
    finally:
        server.stop()
    print(f"\nrows={args.rows} workers={args.workers} judges={','.join(judge_cfg.judges)} "
          f"judge latency={args.judge_latency_ms:g} ms, judge concurrency={judge_cfg.max_concurrency}")
    print(f"{'run':<26}{'rows':>6}{'wall s':>9}{'rows/s':>9}{'judge calls':>13}{'cache hits':>12}"
          f"{'token_f1':>10}{'correct.':>10}")
    for r in results:
        correctness = "-" if r["correctness"] is None else f"{r['correctness']:.3f}"
        print(f"{r['run']:<26}{r['rows']:>6}{r['wall_s']:>9.1f}{r['rows_per_s']:>9.1f}{r['judge_http_calls']:>13}"
              f"{r['cache_hits']:>12}{r['token_f1']:>10.3f}{correctness:>10}")
    cold, warm = results[1], results[2]
    base = results[0]["wall_s"] / results[0]["rows"] * cold["rows"]  # deterministic cost of the judged rows
    print(f"speed-up of the cached rerun over the cold judged run: {cold['wall_s'] / warm['wall_s']:.2f}x; "
          f"judge overhead over the deterministic run (same rows): cold {cold['wall_s'] - base:+.1f} s, "
          f"warm {warm['wall_s'] - base:+.1f} s; identical judge scores: {cold['correctness'] == warm['correctness']}")
    print(f"(store and artifacts in {tmp})")


if __name__ == "__main__":
    main()
