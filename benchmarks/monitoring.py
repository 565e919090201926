"""Benchmark of `monitoring`: one comparison of 50k vs 50k questions (all features, p-values included) against
baselines in the same run, and the false-alarm rate and power side by side with Evidently's embedding-drift methods
on the same window pairs.

    .venv/bin/python benchmarks/monitoring.py [--rows 50000] [--pairs 40] [--sizes 200,1000]
    bash benchmarks/evidently_env.sh   # once: Evidently 0.7.23 + pandas 2 in benchmarks/.venv-evidently

Questions are real (../shared/data when present, else data/sample), drawn with replacement. Evidently 0.7 does not
import with pandas 3, so its column runs in its own venv on the very same embedding arrays (this file, in worker
mode); without that venv the column is skipped.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# run as a script, this file's folder comes first on sys.path and its name would hide the `monitoring` package
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(REPO))
EVIDENTLY_PYTHON = REPO / "benchmarks" / ".venv-evidently" / "bin" / "python"
KINDS = {"same": 0.0, "shifted5": 0.05, "shifted20": 0.2}
EVIDENTLY_METHODS = ("model()", "distance()", "ratio()", "mmd()", "mmd(bootstrap=True)")


def evidently_worker(npz_path: str) -> None:
    """Runs inside the Evidently venv: every method on every pair; prints {method: [drift...], seconds: {...}}."""
    import warnings

    import numpy as np
    import pandas as pd
    from evidently.legacy.metrics.data_drift import embedding_drift_methods as m

    warnings.filterwarnings("ignore")
    methods = {"model()": m.model(), "distance()": m.distance(), "ratio()": m.ratio(), "mmd()": m.mmd(),
               "mmd(bootstrap=True)": m.mmd(bootstrap=True)}
    data = np.load(npz_path)
    pairs = sorted({key.split("_", 1)[1] for key in data.files})
    out: dict = {name: {} for name in methods}
    seconds: dict = {name: 0.0 for name in methods}
    for pair in pairs:
        reference, current = pd.DataFrame(data[f"ref_{pair}"]), pd.DataFrame(data[f"cur_{pair}"])
        for name, method in methods.items():
            start = time.perf_counter()
            _, drift, _ = method(current, reference)
            seconds[name] += time.perf_counter() - start
            out[name][pair] = bool(drift)
    print(json.dumps({"drift": out, "seconds": seconds}))


def _pool() -> tuple[list[str], list[str], str]:
    sys.path.insert(0, str(REPO / "tests" / "monitoring"))
    from pools import SHARED, sample_questions, shared_questions

    if SHARED.is_dir():
        return list(shared_questions()), list(shared_questions("quantumcomputing.stackexchange.com")), \
            "../shared/data stackoverflow.com (shifted: quantumcomputing.stackexchange.com)"
    rows = [line for line in (REPO / "data" / "sample" / "posts_questions.jsonl").read_text().splitlines() if line]
    tags = [json.loads(r)["tags"] for r in rows]
    questions = list(sample_questions())
    return ([q for q, t in zip(questions, tags, strict=True) if "python" in t],
            [q for q, t in zip(questions, tags, strict=True) if "python" not in t],
            "data/sample python questions (shifted: other tags)")


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def speed(pool: list[str], rows: int) -> list[list[str]]:
    import numpy as np

    from monitoring.compare import compare_frames
    from monitoring.features import FeatureSpace
    from monitoring.rules import AlarmRules
    from monitoring.stats import mmd

    rng = np.random.default_rng(0)
    reference = [pool[i] for i in rng.integers(0, len(pool), rows)]
    current = [pool[i] for i in rng.integers(0, len(pool), rows)]
    out = []
    for label, rules in ((f"all features, token features on {10_000:,} rows per side (default)", AlarmRules()),
                         ("all features, every row", AlarmRules(max_model_rows=10 ** 7))):
        times = {}
        start = time.perf_counter()
        space = FeatureSpace.fit(reference + current, seed=0)
        times["fit"] = time.perf_counter() - start
        t = time.perf_counter()
        ref = space.transform(reference, max_model_rows=rules.max_model_rows, rng=rng)
        cur = space.transform(current, max_model_rows=rules.max_model_rows, rng=rng)
        times["features"] = time.perf_counter() - t
        t = time.perf_counter()
        comparison = compare_frames(ref, cur, rules)
        times["tests"] = time.perf_counter() - t
        total = time.perf_counter() - start
        out.append([f"ours: {label}", f"{rows:,}", f"{times['fit']:.2f}", f"{times['features']:.2f}",
                    f"{times['tests']:.2f}", f"{total:.2f}", str(comparison.drift)])
        embeddings = (ref.embedding, cur.embedding)
    # baseline in the same run: the exact-MMD permutation test, the estimator RFF-MMD replaces above 1k rows per side
    for size in (1000, 5000):
        t = time.perf_counter()
        mmd(embeddings[0][:size], embeddings[1][:size], np.random.default_rng(0), permutations=500,
            exact_max_rows=size)
        out.append([f"baseline: exact MMD, up to 500 permutations, {size:,} rows per side", f"{size:,}", "-", "-",
                    f"{time.perf_counter() - t:.2f}", f"{time.perf_counter() - t:.2f}", "-"])
    t = time.perf_counter()
    mmd(embeddings[0], embeddings[1], np.random.default_rng(0), exact_max_rows=1000)
    out.append(["ours: RFF-MMD alone on the embeddings of every row", f"{len(embeddings[0]):,}", "-", "-",
                f"{time.perf_counter() - t:.2f}", f"{time.perf_counter() - t:.2f}", "-"])
    return out


def calibration(base: list[str], shifted: list[str], sizes: list[int], pairs: int,
                evidently: bool) -> tuple[list[list[str]], str]:
    import numpy as np

    from monitoring.compare import compare_frames
    from monitoring.features import FeatureSpace
    from monitoring.rules import load_rules

    rules = load_rules()
    space = FeatureSpace.fit(base, seed=0)
    frame = space.transform(base + shifted)
    nb, ns = len(base), len(shifted)
    rows, arrays, ours = [], {}, {}
    rng = np.random.default_rng(123)
    for size in sizes:
        for kind, share in KINDS.items():
            alarms = embedding_alarms = 0
            for trial in range(pairs):
                reference = frame.take(rng.integers(0, nb, size))
                k = int(share * size)
                current = frame.take(np.concatenate([rng.integers(0, nb, size - k), nb + rng.integers(0, ns, k)]))
                comparison = compare_frames(reference, current, rules, seed=trial)
                alarms += comparison.drift
                embedding_alarms += comparison.feature("embedding").p_value < rules.alpha
                key = f"{size}-{kind}-{trial}"
                arrays[f"ref_{key}"], arrays[f"cur_{key}"] = reference.embedding, current.embedding
            ours[(size, kind)] = (alarms / pairs, embedding_alarms / pairs)
    theirs = None
    note = ""
    if evidently:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "pairs.npz"
            np.savez(path, **arrays)
            proc = subprocess.run([str(EVIDENTLY_PYTHON), __file__, "--evidently-worker", str(path)],
                                  capture_output=True, text=True, check=False)
        if proc.returncode == 0:
            theirs = json.loads(proc.stdout.strip().splitlines()[-1])
            note = "Evidently seconds for all pairs: " + ", ".join(f"{k} {v:.1f}" for k, v in
                                                                  theirs["seconds"].items())
        else:
            note = f"Evidently worker failed: {(proc.stderr.strip().splitlines() or [''])[-1]}"
    else:
        note = "Evidently columns skipped: run `bash benchmarks/evidently_env.sh` first"
    for size in sizes:
        for kind, share in KINDS.items():
            rate, embedding_rate = ours[(size, kind)]
            row = [f"{size:,}", "same distribution (false alarms)" if not share else f"{share:.0%} shifted (power)",
                   f"{rate:.3f}", f"{embedding_rate:.3f}"]
            for method in EVIDENTLY_METHODS:
                if theirs is None:
                    row.append("-")
                    continue
                flags = [v for k, v in theirs["drift"][method].items() if k.startswith(f"{size}-{kind}-")]
                row.append(f"{sum(flags) / len(flags):.3f}")
            rows.append(row)
    return rows, note


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000, help="Questions per side in the speed run.")
    parser.add_argument("--pairs", type=int, default=40, help="Window pairs per size and kind in the calibration.")
    parser.add_argument("--sizes", default="200,1000", help="Rows per side of the calibration windows.")
    parser.add_argument("--evidently-worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.evidently_worker:
        evidently_worker(args.evidently_worker)
        return
    import logging

    logging.disable(logging.WARNING)
    base, shifted, source = _pool()
    print(f"pool: {source}; {len(base):,} + {len(shifted):,} questions")
    print(f"\n## One comparison, {args.rows:,} vs {args.rows:,} questions (seconds)\n")
    print(_table(["what", "rows/side", "fit", "features", "tests", "total", "drift"], speed(base, args.rows)))
    sizes = [int(s) for s in args.sizes.split(",")]
    rows, note = calibration(base, shifted, sizes, args.pairs, EVIDENTLY_PYTHON.exists())
    print(f"\n## Alarm rate over {args.pairs} window pairs per row (alpha 0.05; Evidently methods at their "
          "defaults, on the same TF-IDF+SVD embeddings)\n")
    print(_table(["rows/side", "current window", "ours (rule)", "ours (embedding MMD alone)", *EVIDENTLY_METHODS], rows))
    print(f"\n{note}")


if __name__ == "__main__":
    main()
