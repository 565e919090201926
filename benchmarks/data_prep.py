"""Data step at warehouse scale vs the seeds' naive pandas approach, on synthetic BigQuery-shaped Parquet.

    .venv/bin/python benchmarks/data_prep.py                      # 100k and 1M questions
    .venv/bin/python benchmarks/data_prep.py --sizes 10M --skip-pandas
    .venv/bin/python benchmarks/data_prep.py --sizes 1M --clean-in threads,processes

For each size it generates `posts_questions.parquet` / `posts_answers.parquet` (1 KB HTML bodies, ~20% python
tags, ~85% accepted, answer dates 2008-2024), then runs, each in its own subprocess so peak memory is measured
apart: the full step (`llmops data prepare`: query, clean, dedup, template, split, JSONL + Vertex JSONL
(+ Parquet), MLflow logging) and the naive approach (read all into pandas, merge, `str.contains`,
`train_test_split`, `to_json`). Peak RSS is the sum over the process tree, sampled every 50 ms. The ratios are against "pandas + cleaning", the
naive flow doing the step's HTML routing, conversion and exact dedup (the fair baseline). After the table, the
step's own `time:` line says where its wall time went.
Prints a table; no assertion - this is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
QUESTIONS = "bigquery-public-data.stackoverflow.posts_questions"
ANSWERS = "bigquery-public-data.stackoverflow.posts_answers"
SIZES = {"100k": 100_000, "1M": 1_000_000, "10M": 10_000_000}


def generate(n: int, directory: Path) -> None:
    """Synthetic tables in BigQuery's column layout, written by DuckDB (seconds even at 10M)."""
    import duckdb

    directory.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    filler = ("<p>I tried several approaches from the documentation and a few answers here, but the result "
              "is still not what I expect. Here is a minimal example that shows the problem:</p>")
    body = (f"'<p>Question ' || i || ' about ' || md5(i::VARCHAR) || '</p>{filler}"
            "<pre><code>def f_' || i || '(x):\n    return x * ' || (i % 97) || '\n</code></pre>"
            f"{filler}{filler}{filler}{filler}<p>Why does this happen, and what is the idiomatic fix?</p>'")
    answer = (f"'<p>Answer ' || i || ': use <code>' || md5((i * 7)::VARCHAR) || '</code> instead.</p>"
              f"{filler}<pre><code>result = f_' || i || '(3)\nprint(result)\n</code></pre>{filler}{filler}{filler}{filler}'")
    tags = "CASE i % 5 WHEN 0 THEN 'python|pandas' WHEN 1 THEN 'java|spring' WHEN 2 THEN 'javascript|react' " \
           "WHEN 3 THEN 'python|numpy' ELSE 'sql|duckdb' END"
    qdate = "TIMESTAMPTZ '2008-08-01' + to_seconds((hash(i) % 500000000)::BIGINT)"
    con.execute(f"""COPY (SELECT i AS id, 'How to fix error ' || md5(i::VARCHAR)[:10] || ' in case ' || i AS title,
        {body} AS body, {tags} AS tags, {qdate} AS creation_date,
        CASE WHEN hash(i * 3) % 100 < 85 THEN 1000000000 + i END AS accepted_answer_id,
        1::BIGINT AS answer_count, (hash(i) % 50)::BIGINT AS score, (hash(i) % 10000)::BIGINT AS view_count,
        (hash(i) % 100000)::BIGINT AS owner_user_id
        FROM range(1, {n} + 1) t(i)) TO '{directory / 'posts_questions.parquet'}' (FORMAT PARQUET)""")
    con.execute(f"""COPY (SELECT 1000000000 + i AS id, {answer} AS body,
        {qdate} + INTERVAL 3 DAY AS creation_date, i AS parent_id, (hash(i) % 30)::BIGINT AS score,
        (hash(i * 5) % 100000)::BIGINT AS owner_user_id
        FROM range(1, {n} + 1) t(i)) TO '{directory / 'posts_answers.parquet'}' (FORMAT PARQUET)""")


PANDAS_SCRIPT = r"""
import sys, json
import pandas as pd
from sklearn.model_selection import train_test_split
data, out, instruction = sys.argv[1], sys.argv[2], sys.argv[3]
q = pd.read_parquet(f"{data}/posts_questions.parquet")
a = pd.read_parquet(f"{data}/posts_answers.parquet")
m = q.merge(a, left_on="accepted_answer_id", right_on="id", suffixes=("_q", "_a"))
m = m[m["tags"].str.contains("python") & (m["creation_date_a"] >= pd.Timestamp("2020-01-01", tz="UTC"))]
m = m.sort_values("id_q").head(1_000_000)
m["input_text"] = instruction + "\n\nQuestion:\n" + m["title"] + "\n\n" + m["body_q"]
m["output_text"] = m["body_a"]
train, test = train_test_split(m[["id_q", "input_text", "output_text"]], test_size=0.2, random_state=42)
train.to_json(f"{out}/train.jsonl", orient="records", lines=True)
test.to_json(f"{out}/eval.jsonl", orient="records", lines=True)
print(json.dumps({"examples": len(m)}))
"""

# The same naive pandas flow doing the cleaning the step does (same routing and converter, one process,
# `.apply` style): the fair baseline - it does the work the step does, minus keys, splits and MLflow.
PANDAS_CLEANING_SCRIPT = PANDAS_SCRIPT.replace(
    'm["input_text"] = instruction + "\\n\\nQuestion:\\n" + m["title"] + "\\n\\n" + m["body_q"]\n'
    'm["output_text"] = m["body_a"]\n',
    'from projects.data.clean import html_to_text, question_text\n'
    'm["question"] = [question_text(t, b) for t, b in zip(m["title"], m["body_q"])]\n'
    'm["output_text"] = [html_to_text(b) for b in m["body_a"]]\n'
    'm = m.assign(k=m["question"].str.lower() + "\\x00" + m["output_text"].str.lower()).drop_duplicates("k")\n'
    'm["input_text"] = instruction + "\\n\\nQuestion:\\n" + m["question"]\n',
)


REPEAT = 1  # set from --repeat


def measure(cmd: list[str], env: dict[str, str]) -> tuple[float, float, int, str, float]:
    """The fastest of REPEAT runs (a shared machine's other load only ever slows a run down), with the highest peak
    RSS seen over all of them: (wall s, peak RSS MiB, return code, stdout, CPU s)."""
    runs = [_measure_once(cmd, env) for _ in range(REPEAT)]
    best = min(runs, key=lambda run: (run[2] != 0, run[0]))
    return best[0], max(run[1] for run in runs), best[2], best[3], best[4]


def _measure_once(cmd: list[str], env: dict[str, str]) -> tuple[float, float, int, str, float]:
    """(wall s, peak RSS MiB of the process tree, return code, stdout, CPU s of the tree)."""
    import resource

    import psutil

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    root = psutil.Process(proc.pid)
    peak = 0
    cpu_by_pid: dict[int, float] = {}  # worker processes of a forkserver are never reaped by us: sample them
    while proc.poll() is None:
        rss = 0
        try:
            for process in [root, *root.children(recursive=True)]:
                with process.oneshot():
                    rss += process.memory_info().rss
                    times = process.cpu_times()
                    cpu_by_pid[process.pid] = times.user + times.system
        except psutil.Error:
            pass
        peak = max(peak, rss)
        time.sleep(0.05)
    out, err = proc.communicate()
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = max((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), sum(cpu_by_pid.values()))
    if proc.returncode:
        sys.stderr.write(err[-2000:])
    return wall, peak / 2**20, proc.returncode, out, cpu


def run_size(label: str, n: int, work: Path, skip_pandas: bool, clean_in: list[str],
             cleaning_baseline: bool) -> list[dict]:
    data = work / f"data-{label}"
    if not (data / "posts_answers.parquet").exists():
        t = time.perf_counter()
        generate(n, data)
        print(f"generated {label} ({n:,} questions) in {time.perf_counter() - t:.1f}s", file=sys.stderr)
    rows = []
    out = work / f"out-{label}"
    shutil.rmtree(out, ignore_errors=True)
    db = work / f"mlflow-{label}.db"
    db.unlink(missing_ok=True)
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{db}",
           "LLMOPS_WAREHOUSE__TABLES": json.dumps({QUESTIONS: str(data / "posts_questions.parquet"),
                                                   ANSWERS: str(data / "posts_answers.parquet")}),
           "LLMOPS_DATA__OUTPUT_DIR": str(out), "LLMOPS_DATA__LIMIT": "100000000",
           "LLMOPS_DATAPREP__REUSE_BY_DIGEST": "false",  # every mode does the whole step, none reuses a digest
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPYCACHEPREFIX": str(work / "pycache")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    # Before the clock starts: the tracking store exists (as a real tracking server would) and both sides'
    # imports are byte-compiled, so neither pays a one-off compile that a normal install would not.
    warm = ("import mlflow, pandas, sklearn.model_selection, projects.data.prepare, projects.data.cli, llmops.cli; "
            f"mlflow.set_tracking_uri({env['MLFLOW_TRACKING_URI']!r}); mlflow.search_experiments()")
    subprocess.run([sys.executable, "-c", warm], check=True, env=env, capture_output=True, cwd=REPO)
    llmops = str(Path(sys.executable).parent / "llmops")
    for mode in clean_in:
        shutil.rmtree(out, ignore_errors=True)
        wall, peak, code, stdout, cpu = measure([llmops, "data", "prepare"],
                                                {**env, "LLMOPS_DATAPREP__CLEAN_IN": mode})
        examples = sum(int(part.split()[0]) for line in stdout.splitlines() if line.startswith("dataset ")
                       for part in line.split(": ", 1)[1].split(" -> ")[0].split(" / "))
        phases = next((line.removeprefix("time: ") for line in stdout.splitlines() if line.startswith("time: ")), "")
        rows.append({"size": label, "approach": f"llmops ({mode})", "wall_s": wall, "rows_s": n / wall,
                     "peak_mib": peak, "examples": examples, "ok": code == 0, "cpu_s": cpu, "phases": phases})
    if not skip_pandas:
        pout = work / f"pandas-{label}"
        shutil.rmtree(pout, ignore_errors=True)
        pout.mkdir(parents=True)
        wall, peak, code, stdout, cpu = measure([sys.executable, "-c", PANDAS_SCRIPT, str(data), str(pout),
                                                 "You are a helpful Python expert."], env)
        examples = json.loads(stdout.strip().splitlines()[-1])["examples"] if code == 0 else 0
        rows.append({"size": label, "approach": "naive pandas", "wall_s": wall, "rows_s": n / wall,
                     "peak_mib": peak, "examples": examples, "ok": code == 0, "cpu_s": cpu})
        if cleaning_baseline:
            wall, peak, code, stdout, cpu = measure([sys.executable, "-c", PANDAS_CLEANING_SCRIPT, str(data),
                                                     str(pout), "You are a helpful Python expert."], env)
            examples = json.loads(stdout.strip().splitlines()[-1])["examples"] if code == 0 else 0
            rows.append({"size": label, "approach": "pandas + cleaning", "wall_s": wall, "rows_s": n / wall,
                         "peak_mib": peak, "examples": examples, "ok": code == 0, "cpu_s": cpu})
        shutil.rmtree(pout, ignore_errors=True)
    return rows


def print_table(rows: list[dict]) -> None:
    print(f"{'size':>5} | {'approach':<20} | {'wall s':>8} | {'CPU s':>7} | {'questions/s':>12} | "
          f"{'peak RSS MiB':>12} | {'examples':>9} | {'vs pandas+cleaning':>26}")
    print("-" * 124)
    by_size: dict[str, dict[str, dict]] = {}
    for row in rows:
        by_size.setdefault(row["size"], {})[row["approach"]] = row
    for row in rows:
        # the fair baseline does the same cleaning; naive pandas when that row was not run
        base = by_size[row["size"]].get("pandas + cleaning") or by_size[row["size"]].get("naive pandas")
        versus = ""
        if base and row["approach"] != base["approach"] and base["ok"] and row["ok"]:
            versus = f"{base['wall_s'] / row['wall_s']:.2f}x speed, {row['peak_mib'] / base['peak_mib']:.3f}x mem"
        status = "" if row["ok"] else " FAILED"
        print(f"{row['size']:>5} | {row['approach']:<20} | {row['wall_s']:8.1f} | {row['cpu_s']:7.1f} | "
              f"{row['rows_s']:12,.0f} | {row['peak_mib']:12,.0f} | {row['examples']:9,} | {versus:>26}{status}")
    print("\nwhere the step's time goes (its own `time:` line; the rest of the wall time is start-up: imports, "
          "settings, MLflow run and prompt sync):")
    for row in rows:
        if row.get("phases"):
            accounted = sum(float(part.rsplit(" ", 2)[1]) for part in row["phases"].split(", "))
            print(f"  {row['size']:>4} {row['approach']:<20} start-up {row['wall_s'] - accounted:.1f} s, {row['phases']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100k,1M", help="comma-separated: 100k, 1M, 10M")
    parser.add_argument("--workdir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "llmops-bench")
    parser.add_argument("--skip-pandas", action="store_true", help="only the llmops step (e.g. at 10M)")
    parser.add_argument("--keep-data", action="store_true", help="keep generated tables for the next run")
    parser.add_argument("--pandas-with-cleaning", action=argparse.BooleanOptionalAction, default=True,
                        help="also run the naive pandas flow with the step's cleaning and dedup: the fair baseline "
                             "the ratios are computed against (on by default)")
    parser.add_argument("--clean-in", default="threads",
                        help="comma-separated cleaning modes to run: threads, processes (dataprep.clean_in)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run each approach N times, keep the fastest wall time and the highest peak memory")
    args = parser.parse_args()
    global REPEAT
    REPEAT = max(1, args.repeat)
    modes = args.clean_in.split(",")
    if not set(modes) <= {"threads", "processes"}:
        parser.error(f"unknown --clean-in {args.clean_in!r}; choose from threads, processes")
    rows: list[dict] = []
    for label in args.sizes.split(","):
        if label not in SIZES:
            parser.error(f"unknown size {label!r}; choose from {', '.join(SIZES)}")
        rows.extend(run_size(label, SIZES[label], args.workdir, args.skip_pandas, modes,
                             args.pandas_with_cleaning))
        if not args.keep_data:
            shutil.rmtree(args.workdir / f"data-{label}", ignore_errors=True)
        shutil.rmtree(args.workdir / f"out-{label}", ignore_errors=True)
    print_table(rows)


if __name__ == "__main__":
    main()
