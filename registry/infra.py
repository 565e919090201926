"""Infrastructure validation: does the version load in a fresh process and answer in budget?

The parent runs `python -m registry.infra MODEL_URI` with the current interpreter, smoke questions as JSON on
stdin. The child downloads the version, checks that every line of its logged `requirements.txt` is satisfied
by the installed distributions (we validate in this environment rather than building a new one: no network
at promotion time, and serving runs with `--env-manager local` in this same environment), loads it as pyfunc,
answers each question and prints one JSON object. Nothing of the parent's state (imports, caches) leaks in.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class InfraResult:
    ok: bool
    detail: str
    load_s: float | None = None
    latencies_ms: tuple[float, ...] = ()
    unsatisfied: tuple[str, ...] = ()


def validate(model_uri: str, questions: list[str], budget_ms: float, timeout_s: float) -> InfraResult:
    """Run the child and judge its report against the budget."""
    import mlflow

    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow.get_tracking_uri(),
           "MLFLOW_REGISTRY_URI": mlflow.get_registry_uri()}
    env.pop("MLFLOW_RUN_ID", None)  # the child must not attach to the promote run
    try:
        proc = subprocess.run([sys.executable, "-m", "registry.infra", model_uri], input=json.dumps(questions),
                              capture_output=True, text=True, timeout=timeout_s, env=env, check=False)
    except subprocess.TimeoutExpired:
        return InfraResult(False, f"fresh process did not finish within {timeout_s:.0f} s")
    report = _last_json(proc.stdout)
    if report is None:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return InfraResult(False, f"fresh process failed (exit {proc.returncode}): {tail}")
    if report.get("error"):
        return InfraResult(False, f"fresh process: {report['error']}", report.get("load_s"))
    latencies = tuple(report["latencies_ms"])
    unsatisfied = tuple(report["unsatisfied"])
    slowest = max(latencies) if latencies else 0.0
    problems = []
    if unsatisfied:
        problems.append(f"requirements not satisfied: {', '.join(unsatisfied)}")
    if slowest > budget_ms:
        problems.append(f"slowest answer {slowest:.0f} ms > budget {budget_ms:.0f} ms")
    if report["answered"] != len(questions):
        problems.append(f"answered {report['answered']} of {len(questions)} smoke questions")
    summary = (f"loaded in {report['load_s']:.1f} s, {report['answered']}/{len(questions)} answered, "
               f"slowest {slowest:.0f} ms (budget {budget_ms:.0f} ms), {report['requirements']} requirements ok"
               if not problems else "; ".join(problems))
    return InfraResult(not problems, summary, report["load_s"], latencies, unsatisfied)


def _last_json(stdout: str) -> dict[str, Any] | None:
    for line in reversed(stdout.strip().splitlines()):
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    return None


def unsatisfied_requirements(lines: list[str]) -> tuple[int, list[str]]:
    """(checked, unsatisfied) for pip requirement lines against the installed distributions."""
    from importlib.metadata import PackageNotFoundError, version

    from packaging.requirements import InvalidRequirement, Requirement

    checked, missing = 0, []
    for raw in lines:
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        try:
            req = Requirement(line)
        except InvalidRequirement:
            missing.append(f"{line} (unparsable)")
            continue
        if req.marker is not None and not req.marker.evaluate():
            continue
        checked += 1
        try:
            installed = version(req.name)
        except PackageNotFoundError:
            missing.append(f"{req.name} (not installed)")
            continue
        if req.specifier and not req.specifier.contains(installed, prereleases=True):
            missing.append(f"{req.name}{req.specifier} (installed {installed})")
    return checked, missing


def _child(model_uri: str, questions: list[str]) -> dict[str, Any]:
    from pathlib import Path

    import mlflow.artifacts
    import mlflow.pyfunc
    import pandas as pd

    started = time.perf_counter()
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri))
    req_file = local / "requirements.txt"
    lines = req_file.read_text(encoding="utf-8").splitlines() if req_file.exists() else []
    checked, unsatisfied = unsatisfied_requirements(lines)
    model = mlflow.pyfunc.load_model(str(local))
    load_s = time.perf_counter() - started
    latencies, answered = [], 0
    for question in questions:
        t0 = time.perf_counter()
        out = model.predict(pd.DataFrame({"question": [question]}))
        latencies.append((time.perf_counter() - t0) * 1000)
        if out is not None and len(out) == 1:
            answered += 1
    return {"load_s": load_s, "latencies_ms": latencies, "answered": answered, "requirements": checked,
            "unsatisfied": unsatisfied}


def main() -> None:
    model_uri = sys.argv[1]
    questions = json.loads(sys.stdin.read())
    try:
        report = _child(model_uri, questions)
    except Exception as exc:  # noqa: BLE001 - the parent turns any failure into one FAIL line
        report = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
