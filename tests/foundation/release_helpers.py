"""Shared by the release-path tests: each drives `llmops pipeline run` (the MLproject entry points as child runs)
in a fresh process on its own SQLite store, then reads what the steps recorded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
MODEL = "so-qa-assistant"
TOY_GATES = """# Structural gates for a tiny random model that cannot answer: the release machinery, not quality.
mode: enforced
targets:
  staging:
    - {metric: n_rows, min: 30}
    - {metric: n_train, min: 50}
    - {metric: cited/mean, min: 1.0}
  production:
    - {metric: n_rows, min: 30}
    - {metric: answered_token_f1, beats: champion, margin: -1.0}
"""

def step_env(workdir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLMOPS_", "MLFLOW_", "GOOGLE_"))
           and k != "STORAGE_EMULATOR_HOST"}
    env.update(MLFLOW_TRACKING_URI=f"sqlite:///{workdir / 'mlflow.db'}",
               LLMOPS_DATA__OUTPUT_DIR=str(workdir / "datasets"), MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false",
               PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", **extra)
    return env


def run_llmops(workdir: Path, *args: str, env: dict[str, str] | None = None,
            timeout: int = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "llmops"), *args], cwd=workdir, env=env or step_env(workdir), capture_output=True,
                          text=True, timeout=timeout, check=False)


def succeeded(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def store_client(workdir: Path):
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    return MlflowClient(uri, uri)


def step_runs(client) -> dict[str, list]:
    experiment = client.get_experiment_by_name("llmops")
    out: dict[str, list] = {}
    for run in client.search_runs([experiment.experiment_id], max_results=500):
        out.setdefault(run.data.tags.get("llmops.step", run.info.run_name), []).append(run)
    return out


def answer_in_fresh_process(workdir: Path, env: dict[str, str], alias: str = "staging") -> dict:
    script = ("import json, mlflow.pyfunc; m = mlflow.pyfunc.load_model('models:/so-qa-assistant@" + alias + "'); "
              "print('RESULT' + json.dumps(m.predict([{'question': 'How do I reverse a list in Python?'}])[0]))")
    proc = subprocess.run([sys.executable, "-c", script], cwd=workdir, env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")).removeprefix("RESULT"))


def bundle_shown(workdir: Path, version: str, env: dict[str, str] | None = None) -> dict[str, str]:
    from registry.release import BUNDLE_KEYS

    out = succeeded(run_llmops(workdir, "registry", "show", MODEL, version, env=env))
    assert "bundle: PASS" in out and "MISSING" not in out
    shown = dict(line.strip().split(": ", 1) for line in out.splitlines() if line.startswith("  ") and ": " in line)
    assert set(BUNDLE_KEYS) <= set(shown)
    return shown


