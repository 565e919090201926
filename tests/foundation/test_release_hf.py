"""Release path, hf backend: a tiny random GPT-2 built here. The default gates refuse it (it cannot beat a random
training answer); structural gates let it through dev -> staging -> production, and a fresh process answers by alias."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from release_helpers import (MODEL, REPO, TOY_GATES, answer_in_fresh_process, bundle_shown,  # noqa: E402
                             run_llmops, step_env, store_client, succeeded)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]  # whole pipelines: minutes on a loaded 2-core machine


@pytest.fixture(scope="module")
def sample_vocab_model(tmp_path_factory, tiny_lm_factory) -> Path:
    """A tiny random GPT-2 whose word-level vocabulary covers data/sample and the prompt template."""
    texts = []
    for name in ("posts_questions.jsonl", "posts_answers.jsonl"):
        for line in (REPO / "data" / "sample" / name).read_text().splitlines():
            row = json.loads(line)
            texts += [row.get("title") or "", row.get("body") or ""]
    texts.append((REPO / "prompts" / "templates" / "so-qa.yaml").read_text())
    return tiny_lm_factory(tmp_path_factory.mktemp("tiny") / "tiny-gpt2", texts)


def test_hf_pipeline_releases_a_tiny_model_only_through_the_gates(tmp_path: Path, sample_vocab_model: Path) -> None:
    env = step_env(tmp_path, LLMOPS_TUNING__HF__MAX_NEW_TOKENS="12", LLMOPS_TUNING__HF__BATCH_SIZE="8",
               LLMOPS_TUNING__HF__MAX_LENGTH="128")
    args = ("pipeline", "run", "--backend", "hf", "--base-model", str(sample_vocab_model), "--epochs", "1",
            "--limit", "200")
    refused = run_llmops(tmp_path, *args, env=env)
    assert refused.returncode == 8, refused.stdout[-2000:] + refused.stderr[-2000:]
    assert "FAIL  gate answered_token_f1 vs random_answer" in refused.stderr
    client = store_client(tmp_path)
    version = client.get_model_version(MODEL, "1")
    assert version.aliases == ["dev"]  # registered through the one path, never promoted past the gates

    gates = tmp_path / "toy-gates.yaml"
    gates.write_text(TOY_GATES)
    env["LLMOPS_EVALUATION__GATES_FILE"] = str(gates)
    out = succeeded(run_llmops(tmp_path, *args, env=env))
    assert "[tune] reusing run" in out and f"models:/{MODEL}@staging" in out
    staging = client.get_model_version_by_alias(MODEL, "staging")
    shown = bundle_shown(tmp_path, str(staging.version), env)
    assert (shown["provider"], shown["chain"], shown["tuning_backend"]) == ("hf", "so-qa-hf-lora", "hf")
    assert json.loads(shown["provider_spec"])["base_model"] == str(sample_vocab_model.resolve())
    answer = answer_in_fresh_process(tmp_path, env)
    assert answer["provider"] == "hf" and answer["chain"] == "so-qa-hf-lora"
    assert answer["model_version"] == str(staging.version) and answer["citations"]

    succeeded(run_llmops(tmp_path, "registry", "approve", MODEL, str(staging.version), "--by", "rita", env=env))
    succeeded(run_llmops(tmp_path, "registry", "promote", MODEL, str(staging.version), "--to", "production", "--reason",
                "tiny", env=env))
    assert str(client.get_model_version_by_alias(MODEL, "production").version) == str(staging.version)


