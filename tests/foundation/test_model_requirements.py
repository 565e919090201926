"""A registered version carries what reproduces it: a fresh virtual environment built only from the version's logged
`requirements.txt` (exact pins, nothing from this project installed) loads it by alias and answers.

It guards against the failure a loose range allowed: `scikit-learn>=1.4,<2` accepted 1.4.2, which loaded the
pickled TF-IDF index and then failed every predict (`NotFittedError`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

pytestmark = pytest.mark.e2e

ANSWER = """
import json, sys
import mlflow.pyfunc
model = mlflow.pyfunc.load_model(sys.argv[1])
print("RESULT" + json.dumps(model.predict([{"question": "How can I reverse a list in Python?"}])[0]))
"""


def test_a_fresh_venv_from_the_logged_requirements_answers(tracking_uri, tmp_path: Path, tuned_chain) -> None:
    from mlflow.tracking import MlflowClient

    from prompts.registry import sync_prompt
    from prompts.template import load_template
    from registry.release import register

    prompt = sync_prompt(load_template("so-qa", Path(__file__).resolve().parents[2] / "prompts" / "templates"))[0]
    runs = tuned_chain(prompt)
    with mlflow.start_run(run_name="register"):
        version = register(runs["settings"], "venv-model", runs["tune_run_id"], runs["eval_run_id"])
    local = Path(mlflow.artifacts.download_artifacts(f"models:/venv-model/{version}", dst_path=str(tmp_path / "m")))
    requirements = (local / "requirements.txt").read_text().split()
    assert requirements and all("==" in line for line in requirements)  # exact pins only
    assert requirements == MlflowClient().get_model_version("venv-model", version).tags["llmops.requirements"].split(",")

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLMOPS_", "PYTHON"))}
    env["MLFLOW_TRACKING_URI"] = tracking_uri
    install = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-compile",
                              "-r", str(local / "requirements.txt")], capture_output=True, text=True, env=env,
                             timeout=1200, check=False)
    assert install.returncode == 0, install.stderr[-3000:]
    probe = subprocess.run([str(venv / "bin" / "python"), "-c", "import llmops"], capture_output=True, text=True,
                           env=env, cwd=tmp_path, timeout=60, check=False)
    assert probe.returncode != 0, "the project itself must not be importable in the fresh venv"

    answered = subprocess.run([str(venv / "bin" / "python"), "-c", ANSWER, "models:/venv-model@dev"],
                              capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600, check=False)
    assert answered.returncode == 0, answered.stderr[-3000:]
    line = next(ln for ln in answered.stdout.splitlines() if ln.startswith("RESULT"))
    answer = json.loads(line.removeprefix("RESULT"))
    assert answer["answer"].startswith("Use slicing") and answer["model_version"] == version
