"""Release-path refusals are gates, not crashes: a dataset too small to gate, and real Stack Exchange data where a
random training answer scores nearly as well as the model (refused, naming the baseline)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from release_helpers import (MODEL, run_llmops, step_env, store_client)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]  # whole pipelines: minutes on a loaded 2-core machine


def test_a_dataset_too_small_to_gate_is_refused_by_a_gate_not_a_crash(tmp_path: Path) -> None:
    refused = run_llmops(tmp_path, "pipeline", "run", "--limit", "40")
    assert refused.returncode == 8, refused.stdout[-2000:] + refused.stderr[-2000:]
    assert "Traceback" not in refused.stderr
    assert any(line.startswith("FAIL  gate n_rows: ") and "(needs >= 30.0)" in line
               for line in refused.stderr.splitlines())
    client = store_client(tmp_path)
    assert client.get_model_version(MODEL, "1").aliases == ["dev"]


def test_real_data_where_a_random_answer_does_as_well_is_refused_naming_the_baseline(tmp_path: Path,
                                                                                   shared_data: Path) -> None:
    folder = shared_data / "stackexchange"
    tables = {"bigquery-public-data.stackoverflow.posts_questions": str(folder / "posts_questions.parquet"),
              "bigquery-public-data.stackoverflow.posts_answers": str(folder / "posts_answers.parquet")}
    env = step_env(tmp_path, LLMOPS_WAREHOUSE__TABLES=json.dumps(tables))
    refused = run_llmops(tmp_path, "pipeline", "run", "--tag-pattern", ".*", "--answer-date-cutoff", "1970-01-01",
                      env=env)
    assert refused.returncode == 8, refused.stdout[-2000:] + refused.stderr[-2000:]
    lines = refused.stderr.splitlines()
    # the absolute floor alone would have let it through; the lead over a random training answer does not
    assert any(line.startswith("PASS  gate answered_token_f1: ") for line in lines)
    (lead,) = [line for line in lines if line.startswith("FAIL  gate answered_token_f1 vs random_answer")]
    assert "model - random_answer = +0.0" in lead and "needs lower bound >= +0.050" in lead
    client = store_client(tmp_path)
    assert client.get_model_version(MODEL, "1").aliases == ["dev"]
