"""Release path, vertex backend: the real SDKs against a fake Google Cloud on 127.0.0.1 (tests/tuning/vertex_rest.py),
through the default gates to staging (the "tuned" endpoint learned the uploaded training file), then production."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tuning"))
from vertex_rest import ENDPOINT, FakeGoogleCloud  # noqa: E402
from release_helpers import (MODEL, answer_in_fresh_process, bundle_shown,  # noqa: E402
                             run_llmops, step_env, step_runs, store_client, succeeded)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]  # whole pipelines: minutes on a loaded 2-core machine


def test_vertex_pipeline_through_the_real_sdks_to_staging(tmp_path: Path) -> None:
    cloud = FakeGoogleCloud()
    try:
        env = step_env(tmp_path, **cloud.environment(tmp_path), LLMOPS_TUNING__VERTEX__GCS_URI="gs://llmops-tuning/sft",
                   LLMOPS_TUNING__VERTEX__POLL_INITIAL_S="0", LLMOPS_CHAIN__PROVIDER__MAX_RETRIES="0")
        pipeline = run_llmops(tmp_path, "pipeline", "run", "--backend", "vertex", env=env)
        out = succeeded(pipeline)
        assert "github.com" not in pipeline.stderr  # no network but the fake cloud (MLflow's price catalog: bundled)
        assert f"models:/{MODEL}@staging (version 1)" in out
        client = store_client(tmp_path)
        (tune,) = step_runs(client)["tune"]
        assert tune.data.tags["llmops.vertex_endpoint"] == ENDPOINT
        uploads = cloud.buckets["llmops-tuning"]
        digest = tune.data.params["dataset_digest"]
        assert set(uploads) == {f"sft/{digest}/train.jsonl", f"sft/{digest}/validation.jsonl"}
        evaluated = len(cloud.generate_calls)  # the eval rows, and the staging smoke questions
        assert evaluated >= int(step_runs(client)["evaluate"][0].data.metrics["n_rows"])
        assert all(call.endswith(f"{ENDPOINT}:generateContent") for call in cloud.generate_calls)
        shown = bundle_shown(tmp_path, "1", env)
        assert (shown["provider"], shown["model_id"], shown["chain"]) == ("vertex", ENDPOINT, "so-qa-vertex")
        answer = answer_in_fresh_process(tmp_path, env)
        assert len(cloud.generate_calls) == evaluated + 1 and cloud.generate_calls[-1].endswith(
            f"{ENDPOINT}:generateContent")
        assert answer["provider"] == "vertex" and answer["model_id"] == ENDPOINT and answer["answer"]
        # and on to production with the default gates (no champion yet), after an approval
        succeeded(run_llmops(tmp_path, "registry", "approve", MODEL, "1", "--by", "rita", env=env))
        promoted = succeeded(run_llmops(tmp_path, "registry", "promote", MODEL, "1", "--to", "production", "--reason",
                               "tuned gemini", env=env))
        assert "PASS  gate answered_token_f1 vs champion" in promoted
        assert str(client.get_model_version_by_alias(MODEL, "production").version) == "1"
    finally:
        cloud.stop()


