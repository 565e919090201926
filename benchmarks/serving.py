"""Serving: `mlflow models serve` vs `llmops serve start` on the same registered model, same machine, one run.

    .venv/bin/python benchmarks/serving.py                       # builds a model with `llmops pipeline run`
    .venv/bin/python benchmarks/serving.py --duration 10 --connections 1,8,32
    .venv/bin/python benchmarks/serving.py --tracking-uri sqlite:////tmp/x/mlflow.db --model models:/so-qa-assistant@staging
    .venv/bin/python benchmarks/serving.py --skip servers,swap --predict-before 9d28ca2  # predict then and now

Servers (each on 127.0.0.1, one worker, started and stopped in turn):
- `mlflow models serve` as it ships: every request writes a trace into the tracking store;
- `mlflow models serve` with traces off (`MLFLOW_TRACE_SAMPLING_RATIO=0`): the fair baseline for the server
  itself, since tracing is off by default in `llmops serve`;
- `llmops serve start`: /invocations, the inference log written (Parquet parts), /metrics.
The load generator (aiohttp, in this process) keeps N connections busy for `--duration` seconds or
`--max-requests` requests, whichever comes first, cycling four questions. Reported per level: requests/s, p50,
p99, non-2xx, transport errors, records dropped (MLflow: requests minus traces stored; llmops: the
inference log's dropped counter), how much the tracking store grew, and the server's CPU time per request (user +
system of its process tree over the level, psutil): on a shared machine req/s depends on the share of the cores
the server gets, CPU per request much less.

Then: an alias move under `--swap-connections` load (seconds from the move to the first answer of the new version,
failed requests), and one `llmops serve predict` answer in a fresh process, beside the floor (a process that only
imports what the model needs) and MLflow's own path (`mlflow.pyfunc.load_model` + predict).
The machine is shared: the load average is printed with every phase. No assertion: a measurement, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
QUESTIONS = ["How do I reverse a list in Python?", "How do I merge two dictionaries?",
             "How can I read a file line by line?", "How do I sort a dictionary by value?"]


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.2f} (5 min {five:.2f}) on {os.cpu_count()} cores"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def child_env(tracking_uri: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMOPS_") and k not in (
        "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "PYTHONDONTWRITEBYTECODE")}
    return {**env, "MLFLOW_TRACKING_URI": tracking_uri, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", **extra}


# -- the model ------------------------------------------------------------------------------------------------------
def build_store(directory: Path) -> tuple[str, str]:
    """The project's own loop on the sample data: data, tune, evaluate, register, promote to staging."""
    uri = f"sqlite:///{directory / 'mlflow.db'}"
    print(f"building a model with `llmops pipeline run` in {directory} ({load()}) ...", flush=True)
    started = time.perf_counter()
    done = subprocess.run([str(BIN / "llmops"), "pipeline", "run", "--promote-to", "staging"], cwd=directory,
                          env=child_env(uri), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"llmops pipeline run failed:\n{done.stderr[-3000:]}")
    print(f"  done in {time.perf_counter() - started:.0f} s", flush=True)
    return uri, "models:/so-qa-assistant@staging"


# -- servers --------------------------------------------------------------------------------------------------------
@dataclass
class Server:
    label: str
    command: list[str]
    env: dict[str, str]
    ready_path: str
    port: int
    workdir: Path
    process: subprocess.Popen | None = None
    output: Path = field(init=False)

    def __post_init__(self) -> None:
        self.output = self.workdir / f"{self.label.split()[0]}-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 240) -> None:
        import httpx

        with self.output.open("w") as handle:
            self.process = subprocess.Popen(self.command, env=self.env, cwd=self.workdir, stdout=handle,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                sys.exit(f"{self.label} exited {self.process.returncode}: {self.output.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + self.ready_path, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        sys.exit(f"{self.label} not ready in {timeout_s:.0f} s: {self.output.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)


def mlflow_server(uri: str, model: str, workdir: Path, traces: bool) -> Server:
    port = free_port()
    extra = {} if traces else {"MLFLOW_TRACE_SAMPLING_RATIO": "0"}
    return Server("mlflow models serve" + ("" if traces else " (traces off)"),
                  [str(BIN / "mlflow"), "models", "serve", "-m", model, "--env-manager", "local", "-h", "127.0.0.1",
                   "-p", str(port)], child_env(uri, **extra), "/ping", port, workdir)


def llmops_server(uri: str, model: str, workdir: Path, log_dir: Path, poll_s: float | None = None) -> Server:
    port = free_port()
    extra = {"LLMOPS_SERVING__POLL_INTERVAL_S": str(poll_s)} if poll_s else {}
    return Server("llmops serve start", [str(BIN / "llmops"), "serve", "start", "--model", model, "--host",
                                         "127.0.0.1", "--port", str(port), "--log", str(log_dir)],
                  child_env(uri, **extra), "/ready", port, workdir)


# -- load -----------------------------------------------------------------------------------------------------------
@dataclass
class Level:
    connections: int
    seconds: float
    latencies: list[float]
    statuses: dict[int, int]
    errors: int
    versions: list[tuple[float, str | None, int]] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return len(self.latencies)

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, max(0, -(-int(q * len(ordered) * 100) // 100) - 1))] * 1000

    @property
    def non_2xx(self) -> int:
        return sum(n for status, n in self.statuses.items() if not 200 <= status < 300)


async def _drive(url: str, connections: int, duration_s: float, max_requests: int,
                 versions: list[tuple[float, str | None, int]] | None = None,
                 stop: asyncio.Event | None = None) -> Level:
    """Keep `connections` requests in flight until the deadline, the request budget or `stop`; `versions`, when
    given, collects (time, X-Model-Version, status) of each answer as it comes."""
    import aiohttp

    bodies = [json.dumps({"dataframe_records": [{"question": q}]}).encode() for q in QUESTIONS]
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors = 0
    sent = 0
    timeout = aiohttp.ClientTimeout(total=120)
    started = time.perf_counter()
    deadline = started + duration_s
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections), timeout=timeout) as session:
        async def worker(index: int) -> None:
            nonlocal sent, errors
            while time.perf_counter() < deadline and sent < max_requests and not (stop and stop.is_set()):
                sent += 1
                body = bodies[(sent + index) % len(bodies)]
                t0 = time.perf_counter()
                try:
                    async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
                        await r.read()
                        status = r.status
                        version = r.headers.get("X-Model-Version")
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - t0)
                statuses[status] = statuses.get(status, 0) + 1
                if versions is not None:
                    versions.append((time.perf_counter(), version, status))

        await asyncio.gather(*(worker(i) for i in range(connections)))
    return Level(connections, time.perf_counter() - started, latencies, statuses, errors, versions or [])


def drive(url: str, connections: int, duration_s: float, max_requests: int) -> Level:
    return asyncio.run(_drive(url, connections, duration_s, max_requests))


def count_traces(uri: str) -> int:
    from mlflow.tracking import MlflowClient

    import mlflow

    mlflow.set_tracking_uri(uri)
    client = MlflowClient()
    locations = [e.experiment_id for e in client.search_experiments()]
    total, token = 0, None
    while True:
        page = client.search_traces(locations=locations, max_results=500, page_token=token)
        total += len(page)
        token = page.token
        if not token:
            return total


def log_dropped(server: Server) -> float:
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(server.url + "/metrics", timeout=10).text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "llmops_log_records_dropped_total")


def db_mb(uri: str) -> float:
    path = Path(uri.removeprefix("sqlite:///"))
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*")) / 1e6 if path.exists() else 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its children (uvicorn workers, MLflow's scoring subprocess)."""
    import psutil

    root = psutil.Process(pid)
    total = 0.0
    for process in [root, *root.children(recursive=True)]:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def bench_server(server: Server, uri: str, levels: list[int], duration: float, max_requests: int,
                 warmup_s: float) -> list[dict]:
    server.start()
    rows = []
    try:
        drive(server.url + "/invocations", 4, warmup_s, 10**9)
        traced = "traces off" not in server.label and server.label.startswith("mlflow")
        for connections in levels:
            before_db, before_traces = db_mb(uri), count_traces(uri) if traced else 0
            before_dropped = log_dropped(server) if server.label.startswith("llmops") else 0.0
            print(f"  {server.label}: {connections} connection(s) for {duration:.0f} s ({load()})", flush=True)
            cpu_before = cpu_seconds(server.process.pid)
            level = drive(server.url + "/invocations", connections, duration, max_requests)
            if traced:
                time.sleep(3)  # MLflow writes traces asynchronously (their CPU counts too)
            cpu_ms = 1000 * (cpu_seconds(server.process.pid) - cpu_before) / max(1, level.requests)
            if traced:
                dropped = max(0, level.requests - (count_traces(uri) - before_traces))
            elif server.label.startswith("llmops"):
                dropped = int(log_dropped(server) - before_dropped)
            else:
                dropped = None
            rows.append({"server": server.label, "connections": connections, "requests": level.requests,
                         "rps": level.requests / level.seconds, "p50": level.pct(0.50), "p99": level.pct(0.99),
                         "non_2xx": level.non_2xx, "errors": level.errors, "dropped": dropped,
                         "db_growth_mb": db_mb(uri) - before_db, "cpu_ms": cpu_ms, "load": os.getloadavg()[0]})
    finally:
        server.stop()
    return rows


# -- the swap -------------------------------------------------------------------------------------------------------
def bench_swap(uri: str, model: str, workdir: Path, connections: int, hold_s: float) -> dict:
    """Serve @bench-swap at v_old; under load, move it to v_new through the ledger; time to the first new answer."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from registry.ledger import open_ledger
    from registry.release import register

    mlflow.set_tracking_uri(uri)
    client = MlflowClient()
    name, alias = model.removeprefix("models:/").split("@")
    old = str(client.get_model_version_by_alias(name, alias).version)
    tags = client.get_model_version(name, old).tags
    from llmops.settings import load_settings

    settings = load_settings({"mlflow": {"tracking_uri": uri}})
    experiment = client.get_experiment_by_name("llmops")
    mlflow.set_experiment(experiment_id=experiment.experiment_id)
    print(f"  registering a second version for the swap ({load()}) ...", flush=True)
    with mlflow.start_run(run_name="benchmark swap version"):
        new = register(settings, name, tags["llmops.tune_run_id"], tags["llmops.eval_run_id"], alias="bench-new")
    ledger = open_ledger(None, client)
    ledger.move(name, "bench-swap", old, action="promote", actor="benchmark", reason="swap benchmark: start")
    server = llmops_server(uri, f"models:/{name}@bench-swap", workdir, workdir / "swap-log")
    server.start()
    try:
        drive(server.url + "/invocations", 4, 2, 10**9)
        async def scenario() -> tuple[Level, float]:
            stop, seen = asyncio.Event(), []
            task = asyncio.create_task(_drive(server.url + "/invocations", connections, 600, 10**9, seen, stop))
            await asyncio.sleep(hold_s)
            moved = time.perf_counter()
            await asyncio.to_thread(ledger.move, name, "bench-swap", new, action="promote", actor="benchmark",
                                    reason="swap benchmark: move")
            while not any(v == new for _, v, _ in seen) and time.perf_counter() - moved < 120:
                await asyncio.sleep(0.05)
            await asyncio.sleep(hold_s)
            stop.set()
            return await task, moved

        print(f"  swap under {connections} connections ({load()})", flush=True)
        level, moved = asyncio.run(scenario())
    finally:
        server.stop()
    first_new = min((t for t, v, _ in level.versions if v == new), default=None)
    return {"connections": connections, "old": old, "new": new, "requests": level.requests,
            "swap_s": None if first_new is None else first_new - moved, "non_2xx": level.non_2xx,
            "errors": level.errors, "load": os.getloadavg()[0]}


# -- predict in a fresh process ----------------------------------------------------------------------------------
def code_at(commit: str, directory: Path) -> Path:
    """The repository's packages as of `commit` (git archive), to run the same command as it was then."""
    target = directory / f"code-{commit[:12]}"
    target.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", commit], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


def bench_predict(uri: str, model: str, runs: int, before: Path | None = None) -> list[tuple[str, list[float]]]:
    question = "How do I reverse a list in Python?"
    floor = "import mlflow, sklearn.feature_extraction.text, langchain_core.runnables, langchain_core.tracers"
    mlflow_path = ("import mlflow.pyfunc, pandas as pd, sys; m = mlflow.pyfunc.load_model(sys.argv[1]); "
                   "print(m.predict(pd.DataFrame({'question': [sys.argv[2]]})))")
    cases = [("llmops serve predict", [str(BIN / "llmops"), "serve", "predict", "--model", model, "--question",
                                       question]),
             ("floor: python importing mlflow, scikit-learn, langchain-core", [sys.executable, "-c", floor]),
             ("MLflow's path: pyfunc.load_model + predict", [sys.executable, "-c", mlflow_path, model, question])]
    if before is not None:
        cases.insert(1, (f"llmops serve predict before ({before.name.removeprefix('code-')})",
                         [sys.executable, "-m", "llmops.cli", "serve", "predict", "--model", model, "--question",
                          question]))
    results = []
    for label, command in cases:
        times = []
        extra = {"PYTHONPATH": str(before)} if "before (" in label else {}
        for _ in range(runs + 1):  # the first run warms the OS file cache and writes bytecode; not counted
            started = time.perf_counter()
            done = subprocess.run(command, env=child_env(uri, **extra), capture_output=True, text=True, check=False)
            if done.returncode != 0:
                sys.exit(f"{label} failed: {done.stderr[-2000:]}")
            times.append(time.perf_counter() - started)
        results.append((label, times[1:]))
        print(f"  {label}: median {statistics.median(times[1:]):.2f} s ({load()})", flush=True)
    return results


# -- report ---------------------------------------------------------------------------------------------------------
def table(rows: list[dict]) -> str:
    lines = ["| server | conns | requests | req/s | p50 ms | p99 ms | p99/p50 | non-2xx | errors | dropped | "
             "store growth MB | server CPU ms/req | load |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        dropped = "-" if r["dropped"] is None else str(r["dropped"])
        lines.append(f"| {r['server']} | {r['connections']} | {r['requests']} | {r['rps']:.0f} | {r['p50']:.1f} | "
                     f"{r['p99']:.1f} | {r['p99'] / r['p50']:.1f} | {r['non_2xx']} | {r['errors']} | {dropped} | "
                     f"{r['db_growth_mb']:.1f} | {r['cpu_ms']:.2f} | {r['load']:.1f} |")
    return "\n".join(lines)


def ratios(rows: list[dict]) -> list[str]:
    out = []
    ours = {r["connections"]: r for r in rows if r["server"] == "llmops serve start"}
    for baseline in ("mlflow models serve", "mlflow models serve (traces off)"):
        theirs = {r["connections"]: r for r in rows if r["server"] == baseline}
        for connections, mine in sorted(ours.items()):
            if connections in theirs:
                out.append(f"llmops / {baseline} at {connections} connection(s): "
                           f"{mine['rps'] / theirs[connections]['rps']:.1f}x req/s")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracking-uri", help="An existing store (default: build one in a temp dir).")
    parser.add_argument("--model", default="models:/so-qa-assistant@staging")
    parser.add_argument("--connections", default="1,8,32")
    parser.add_argument("--duration", type=float, default=30.0, help="Seconds per level.")
    parser.add_argument("--max-requests", type=int, default=50_000, help="Requests per level, at most.")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--servers", default="mlflow,mlflow-untraced,llmops")
    parser.add_argument("--swap-connections", type=int, default=32)
    parser.add_argument("--predict-runs", type=int, default=5)
    parser.add_argument("--predict-before", metavar="COMMIT", help="Also time `llmops serve predict` as of this "
                        "commit (e.g. the one before the server), with the same model and environment.")
    parser.add_argument("--skip", default="", help="Comma list of phases to skip: servers, swap, predict.")
    args = parser.parse_args()
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    workdir = Path(tempfile.mkdtemp(prefix="llmops-serving-bench-"))
    uri, model = (args.tracking_uri, args.model) if args.tracking_uri else build_store(workdir)
    levels = [int(c) for c in args.connections.split(",")]
    skip = set(filter(None, args.skip.split(",")))
    print(f"serving benchmark: {model} on {uri}; {load()}")
    rows = []
    if "servers" not in skip:
        makers = {"mlflow": lambda: mlflow_server(uri, model, workdir, traces=True),
                  "mlflow-untraced": lambda: mlflow_server(uri, model, workdir, traces=False),
                  "llmops": lambda: llmops_server(uri, model, workdir, workdir / "inference-log")}
        for key in args.servers.split(","):
            rows += bench_server(makers[key](), uri, levels, args.duration, args.max_requests, args.warmup)
    swap = None if "swap" in skip else bench_swap(uri, model, workdir, args.swap_connections, hold_s=5)
    before = code_at(args.predict_before, workdir) if args.predict_before else None
    predict = [] if "predict" in skip else bench_predict(uri, model, args.predict_runs, before)

    print()
    if rows:
        print(table(rows))
        for line in ratios(rows):
            print(line)
    if swap:
        swap_s = "never" if swap["swap_s"] is None else f"{swap['swap_s']:.1f} s"
        print(f"\nalias move v{swap['old']} -> v{swap['new']} under {swap['connections']} connections "
              f"(poll interval 10 s, no notification): first answer of the new version after {swap_s}; "
              f"{swap['requests']} requests, {swap['non_2xx']} non-2xx, {swap['errors']} transport errors; "
              f"load {swap['load']:.1f}")
    for label, times in predict:
        print(f"fresh process, one answer: {label}: median {statistics.median(times):.2f} s, min {min(times):.2f} s "
              f"over {len(times)} runs")
    print(f"\n{load()} at the end; files in {workdir}")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
