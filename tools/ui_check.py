"""The MLflow UI as a user sees it after the loop, checked in a real browser (headless Chromium via Playwright).

    .venv/bin/python -m tools.ui_check [--out DIR] [--chromium PATH] [--store DIR]

Runs `llmops pipeline run` on the sample data into a new SQLite store, evaluates the staged model again
(`llmops eval run --model-uri models:/so-qa-assistant@staging`), compares the two evaluations
(`llmops eval compare`), starts `mlflow server` on 127.0.0.1 and opens its pages. It checks, and exits 1 when
one fails:

- runs are named by what they are (`data python ...`, `tune local retrieval-tfidf so-qa@v1`,
  `eval so-qa@v1 retrieval-tfidf`, `register so-qa-assistant v1 retrieval`, `promote ... -> staging`, `compare`);
- the compare view of the two evaluation runs lists the `Headline/` metrics first and plots
  `Headline/answered_token_f1` by default;
- the eval rows are an MLflow evaluation dataset on the Datasets page, and runs name their datasets.

Screenshots go to --out (default: a temporary folder): runs.png, compare.png, datasets.png, evaluation-runs.png.
Chromium comes from the system (`apt-get install chromium`), never downloaded: Playwright drives it through
`executable_path`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@dataclass
class Report:
    checks: list[tuple[str, bool, str]] = field(default_factory=list)
    screenshots: dict[str, str] = field(default_factory=dict)

    def check(self, name: str, passed: bool, detail: str = "") -> None:
        self.checks.append((name, bool(passed), detail))

    @property
    def passed(self) -> bool:
        return all(ok for _, ok, _ in self.checks)

    def lines(self) -> list[str]:
        return [f"{'PASS' if ok else 'FAIL'}  {name}{': ' + detail if detail else ''}" for name, ok, detail in
                self.checks] + [f"screenshot {name}: {path}" for name, path in self.screenshots.items()]


def find_chromium(explicit: str | None = None) -> str | None:
    for candidate in (explicit, os.environ.get("LLMOPS_CHROMIUM"), shutil.which("chromium"),
                      shutil.which("chromium-browser"), shutil.which("google-chrome")):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def _llmops(*args: str, env: dict[str, str], cwd: Path, timeout: int = 900) -> str:
    result = subprocess.run([str(BIN / "llmops"), *args], capture_output=True, text=True, cwd=cwd, env=env,
                            timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"llmops {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result.stdout


def build_store(folder: Path) -> dict:
    """The loop on the sample data, a second evaluation of the staged model, and their comparison."""
    folder.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "LLMOPS_DATA__OUTPUT_DIR": str(folder / "datasets")}
    env.pop("MLFLOW_RUN_ID", None)
    _llmops("pipeline", "run", env=env, cwd=folder)
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(uri)
    client = MlflowClient()
    experiment = client.get_experiment_by_name("llmops")
    runs = client.search_runs([experiment.experiment_id])
    first_eval = next(r for r in runs if r.data.tags.get("llmops.step") == "evaluate")
    eval_uri = first_eval.data.params["eval_uri"]
    second = json.loads(_llmops("eval", "run", "--model-uri", "models:/so-qa-assistant@staging", "--eval-uri",
                                eval_uri, "--json", "--quiet", env=env, cwd=folder))
    compared = json.loads(_llmops("eval", "compare", first_eval.info.run_id, second["run_id"], "--json",
                                  env=env, cwd=folder))
    return {"uri": uri, "experiment_id": experiment.experiment_id, "eval_runs": [first_eval.info.run_id,
            second["run_id"]], "compare_run": compared["logged_run"], "eval_digest": first_eval.data.params[
            "eval_digest"]}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(uri: str, folder: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    log = (folder / "server.log").open("w")
    proc = subprocess.Popen([str(BIN / "mlflow"), "server", "--backend-store-uri", uri, "--host", "127.0.0.1",
                             "--port", str(port), "--workers", "1"], stdout=log, stderr=subprocess.STDOUT,
                            cwd=folder, env={**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"})
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited {proc.returncode}: {(folder / 'server.log').read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(base + "/health", timeout=2) as response:
                if response.status == 200:
                    return proc, base
        except OSError:
            time.sleep(0.5)
    proc.terminate()
    raise RuntimeError("mlflow server did not become healthy within 120 s")


def _settle(page, ms: int = 3000, expect: str | None = None) -> None:
    """The UI polls forever (no network idle): wait for `expect` to show (a loaded machine renders slowly), then a
    little longer, then close the assistant side panel if it opened."""
    if expect:
        try:
            page.get_by_text(expect).first.wait_for(timeout=90_000)
        except Exception:  # noqa: BLE001 - the check that reads the page names what is missing
            pass
    page.wait_for_timeout(ms)
    close = page.locator("button[aria-label='Close']")
    if close.count():
        try:
            close.first.click(timeout=2000)
            page.wait_for_timeout(500)
        except Exception:  # noqa: BLE001 - a panel that is not there is fine
            pass


def browse(world: dict, base: str, out: Path, chromium: str, report: Report) -> None:
    from playwright.sync_api import sync_playwright

    experiment = world["experiment_id"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_context(viewport={"width": 1400, "height": 700}).new_page()

        # 1. the runs list, pipeline expanded: every run named by what it is
        page.goto(f"{base}/#/experiments/{experiment}/runs?workflowType=machine_learning", wait_until="load",
                  timeout=120_000)
        _settle(page, expect="pipeline local")
        parent = page.locator("[role=row]", has_text="pipeline local").first
        expander = parent.locator("button[data-component-id*='runnamecellrenderer']")
        if expander.count():
            expander.first.click()
            _settle(page, 1000, expect="register so-qa-assistant")
        resize = page.locator(".ag-header-cell", has_text="Run Name").locator(".ag-header-cell-resize")
        if resize.count():  # the column fits its longest name (as a user double-clicking its edge)
            try:
                resize.first.dblclick(timeout=5000)
                page.wait_for_timeout(1000)
            except Exception:  # noqa: BLE001 - a narrower column still holds the names the checks read
                pass
        page.screenshot(path=str(out / "runs.png"))
        report.screenshots["runs"] = str(out / "runs.png")
        text = page.inner_text("body")
        for expected in ("pipeline local", "data python ", "tune local retrieval-tfidf so-qa@v1",
                         "eval so-qa@v1 retrieval-tfidf", "register so-qa-assistant v1 retrieval",
                         "promote so-qa-assistant v1 -> staging", "eval so-qa-assistant@staging v1 so-qa@v1",
                         "compare so-qa@v1 retrieval-tfidf vs so-qa-assistant@staging v1 so-qa@v1"):
            report.check(f"runs list shows {expected!r}", expected in text)

        # 2. the compare view of the two evaluations: names, then the Headline/ metrics first
        page.set_viewport_size({"width": 1400, "height": 1500})
        runs = json.dumps(world["eval_runs"])
        page.goto(f"{base}/#/compare-runs?runs={runs}&experiments={json.dumps([experiment])}", wait_until="load",
                  timeout=120_000)
        _settle(page, 5000, expect="Headline/answered_token_f1")
        text = page.inner_text("body")
        parameters = page.get_by_text("Parameters", exact=True)
        if parameters.count():  # folded, so one screen shows the run names, the plot and the metrics table
            parameters.last.click()
            page.wait_for_timeout(1500)
        page.screenshot(path=str(out / "compare.png"))
        report.screenshots["compare"] = str(out / "compare.png")
        report.check("compare view names both runs", "eval so-qa@v1 retrieval-tfidf" in text
                     and "eval so-qa-assistant@staging v1 so-qa@v1" in text)
        metrics_part = text[text.find("Metrics", text.find("Parameters", text.find("Run details"))):]
        order = [line.strip() for line in metrics_part.splitlines() if "/" in line or "_" in line][:8]
        report.check("compare metrics table starts with the Headline/ metrics",
                     bool(order) and all(n.startswith("Headline/") for n in order[:5]), f"first rows: {order[:6]}")
        plotted = page.locator("text=Headline/answered_token_f1").count()
        report.check("parallel coordinates plot Headline/answered_token_f1 by default", plotted >= 2,
                     f"{plotted} mention(s) on the page")

        # 3. the Datasets page (MLflow evaluation datasets) and the evaluation runs
        page.set_viewport_size({"width": 1400, "height": 900})
        page.goto(f"{base}/#/experiments/{experiment}/datasets?workflowType=genai", wait_until="load",
                  timeout=120_000)
        _settle(page, expect="so-qa-eval@")
        page.screenshot(path=str(out / "datasets.png"))
        report.screenshots["datasets"] = str(out / "datasets.png")
        name = f"so-qa-eval@{world['eval_digest']}"
        report.check(f"Datasets page lists {name}", name in page.inner_text("body"))
        page.goto(f"{base}/#/experiments/{experiment}/evaluation-runs?workflowType=genai", wait_until="load",
                  timeout=120_000)
        _settle(page, expect="Headline/")
        page.screenshot(path=str(out / "evaluation-runs.png"))
        report.screenshots["evaluation-runs"] = str(out / "evaluation-runs.png")
        report.check("evaluation runs page shows Headline/ columns", "Headline/" in page.inner_text("body"))
        browser.close()


def run_check(out: Path, chromium: str, store: Path | None = None) -> Report:
    out.mkdir(parents=True, exist_ok=True)
    folder = store or Path(tempfile.mkdtemp(prefix="llmops-ui-"))
    report = Report()
    world = build_store(folder)
    server, base = start_server(world["uri"], folder)
    try:
        browse(world, base, out, chromium, report)
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="Folder for the screenshots.")
    parser.add_argument("--chromium", default=None, help="Chromium binary (default: chromium on PATH).")
    parser.add_argument("--store", type=Path, default=None, help="Folder for the store (default: temporary).")
    args = parser.parse_args()
    chromium = find_chromium(args.chromium)
    if chromium is None:
        raise SystemExit("no Chromium found: apt-get install -y chromium, or pass --chromium PATH")
    out = args.out or Path(tempfile.mkdtemp(prefix="llmops-ui-shots-"))
    report = run_check(out, chromium, args.store)
    print("\n".join(report.lines()))
    sys.exit(0 if report.passed else 1)


if __name__ == "__main__":
    main()
