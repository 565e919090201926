"""Logging and registering the chain (models-from-code), the training/serving check, and reloading the model in a
fresh process. One SQLite store for the module; each test uses its own prompt names."""

from __future__ import annotations

import json
import subprocess
import sys

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from backends.stub_server import Reply, StubChatServer
from llmops.errors import ConfigError, NotFoundError
from llmops.settings import load_settings
from prompts.registry import set_alias, sync_prompt
from prompts.template import load_template_file
from registry.register import register_chain

RELOAD = """
import json, sys
import mlflow.pyfunc
model = mlflow.pyfunc.load_model(sys.argv[1])
print(json.dumps(model.predict([{"question": q} for q in sys.argv[2:]])))
"""


def register(model: str, tune_id: str, eval_id: str, **chain) -> str:
    settings = load_settings({"chain": chain}) if chain else load_settings()
    with mlflow.start_run(run_name="register"):
        return register_chain(model, tune_id, eval_id, settings=settings)


def reload_in_fresh_process(uri: str, *questions: str) -> list[dict]:
    done = subprocess.run([sys.executable, "-c", RELOAD, uri, *questions], capture_output=True, text=True, check=False,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def synced(template_copier, tmp_path, source: str, name: str, **changes):
    return sync_prompt(load_template_file(template_copier(tmp_path / "t", source, name, **changes)))[0]


def versions(model: str) -> list[str]:
    return sorted(str(v.version) for v in MlflowClient().search_model_versions(f"name='{model}'"))


def test_default_chain_registers_with_its_bundle_and_reloads(store, tmp_path, template_copier, tune_run_factory):
    prompt = synced(template_copier, tmp_path, "so-qa", "reg-default")
    tune_id, eval_id = tune_run_factory(prompt.name, prompt.version, prompt.instruction_hash)
    version = register("chain-default", tune_id, eval_id)

    mv = MlflowClient().get_model_version("chain-default", version)
    assert {k: mv.tags[k] for k in ("llmops.prompt_name", "llmops.prompt_version", "llmops.instruction_hash",
                                    "llmops.tune_run_id", "llmops.eval_run_id", "llmops.chain", "llmops.provider",
                                    "llmops.model_id", "llmops.consistency", "llmops.dataset_digest")} == {
        "llmops.prompt_name": "reg-default", "llmops.prompt_version": "1",
        "llmops.instruction_hash": prompt.instruction_hash, "llmops.tune_run_id": tune_id,
        "llmops.eval_run_id": eval_id, "llmops.chain": "so-qa-retrieval", "llmops.provider": "retrieval",
        "llmops.model_id": "retrieval", "llmops.consistency": "match", "llmops.dataset_digest": "d" * 16}
    assert str(MlflowClient().get_model_version_by_alias("chain-default", "dev").version) == version
    register_run = mlflow.get_run(mv.run_id)
    assert register_run.data.params["consistency.outcome"] == "match"
    assert "reg-default" in register_run.data.tags.get("mlflow.linkedPrompts", "")

    answers = reload_in_fresh_process("models:/chain-default@dev", "How can I reverse a list in Python?",
                                      "zzz qqq unrelated")
    first, second = answers
    assert first["answer"].startswith("Use slicing") and not first["abstained"]
    assert first["citations"][0]["source_id"] == "1000"
    assert first["citations"][0]["link"] == "https://stackoverflow.com/questions/1000"
    assert first["safety"] == {"blocked": False, "categories": first["safety"]["categories"],
                               "source": "local-lexicon-v1", "reason": None}
    assert first["model_version"] == version and first["prompt_version"] == 1
    assert second["abstained"]


def test_prompt_version_is_a_settings_change_and_runs_compare(store, tmp_path, template_copier, tune_run_factory):
    v1 = synced(template_copier, tmp_path, "so-qa", "reg-swap")
    tune_id, eval_id = tune_run_factory(v1.name, 1, v1.instruction_hash)
    template = "{{instruction}}\n\nThe question, verbatim:\n{{question}}"
    v2 = synced(template_copier, tmp_path, "so-qa", "reg-swap", template=template)
    set_alias("reg-swap", v2.version, "candidate")

    first = register("chain-swap", tune_id, eval_id)
    second = register("chain-swap", tune_id, eval_id, prompt_uri="prompts:/reg-swap@candidate")
    set_alias("reg-swap", v1.version, "candidate")  # the alias moves on; the registered model stays pinned
    runs = mlflow.search_runs(filter_string="attributes.run_name = 'register'", order_by=["start_time ASC"])
    runs = runs[runs["params.bundle.prompt_name"] == "reg-swap"]
    assert runs["params.bundle.prompt_version"].tolist() == ["1", "2"]
    assert runs["params.prompt_uri"].tolist() == ["prompts:/reg-swap/1", "prompts:/reg-swap@candidate"]
    client = MlflowClient()
    assert client.get_model_version("chain-swap", first).tags["llmops.prompt_version"] == "1"
    assert client.get_model_version("chain-swap", second).tags["llmops.prompt_version"] == "2"


def test_instruction_mismatch_refuses_or_warns(store, tmp_path, template_copier, tune_run_factory):
    v1 = synced(template_copier, tmp_path, "so-qa", "reg-drift")
    tune_id, eval_id = tune_run_factory(v1.name, 1, v1.instruction_hash)
    v2 = synced(template_copier, tmp_path, "so-qa", "reg-drift", instruction="Answer like a pirate.")
    assert v2.instruction_hash != v1.instruction_hash

    with pytest.raises(ConfigError, match=r"instruction hash .* but the training data was built with"):
        register("chain-drift", tune_id, eval_id, prompt_uri=f"prompts:/reg-drift/{v2.version}")
    assert versions("chain-drift") == []  # nothing registered
    refused = mlflow.search_runs(filter_string="tags.`llmops.consistency` = 'mismatch-refused'")
    assert len(refused) == 1

    version = register("chain-drift", tune_id, eval_id, prompt_uri=f"prompts:/reg-drift/{v2.version}",
                       consistency="warn")
    mv = MlflowClient().get_model_version("chain-drift", version)
    assert mv.tags["llmops.consistency"] == "mismatch-warned"
    assert mlflow.get_run(mv.run_id).data.params["consistency.training_instruction_hash"] == v1.instruction_hash


def test_missing_prompt_alias_or_tune_run_registers_nothing(store, tmp_path, template_copier, tune_run_factory):
    v1 = synced(template_copier, tmp_path, "so-qa", "reg-missing")
    tune_id, eval_id = tune_run_factory(v1.name, 1, v1.instruction_hash)
    with pytest.raises(NotFoundError, match="prompts:/reg-missing@nope not found"):
        register("chain-missing", tune_id, eval_id, prompt_uri="prompts:/reg-missing@nope")
    with pytest.raises(NotFoundError, match="not found"):
        register("chain-missing", "0" * 32, eval_id)
    with pytest.raises(ConfigError, match="prompt URI must look like"):
        register("chain-missing", tune_id, eval_id, prompt_uri="reg-missing@prod")
    assert versions("chain-missing") == []


def test_openai_compatible_chain_reloads_with_grounding_safety_and_citations(store, tmp_path, template_copier,
                                                                             tune_run_factory):
    plain = synced(template_copier, tmp_path, "so-qa", "reg-oa")
    grounded = synced(template_copier, tmp_path, "so-qa-grounded", "reg-oa-grounded")
    tune_id, eval_id = tune_run_factory(plain.name, 1, plain.instruction_hash)
    with StubChatServer(default=Reply(text="Slice it: xs[::-1] [1000]")) as server:
        version = register("chain-oa", tune_id, eval_id, prompt_uri=f"prompts:/{grounded.name}/1", grounding_k=2,
                           provider={"kind": "openai_compat", "base_url": server.base_url, "model": "qwen-coder",
                                     "timeout_s": 5, "max_retries": 1})
        assert server.requests == []  # nothing was called at log time
        mv = MlflowClient().get_model_version("chain-oa", version)
        assert (mv.tags["llmops.provider"], mv.tags["llmops.model_id"], mv.tags["llmops.chain"]) == \
            ("openai_compat", "qwen-coder", "so-qa-grounded-openai_compat")
        assert mv.tags["llmops.consistency"] == "match"  # same instruction as the training prompt
        [answer] = reload_in_fresh_process(f"models:/chain-oa/{version}", "How do I reverse a list?")
    sent = server.requests[0]
    assert sent["model"] == "qwen-coder" and sent["temperature"] == 0.2 and sent["max_tokens"] == 1024
    assert "[1000] Question: How do I reverse a list in Python?" in sent["messages"][-1]["content"]
    assert answer["answer"] == "Slice it: xs[::-1] [1000]" and answer["provider"] == "openai_compat"
    assert answer["safety"]["source"] == "local-lexicon-v1" and not answer["safety"]["blocked"]
    assert answer["citations"][0]["kind"] == "grounding"
    assert answer["citations"][0]["source_id"] == "1000"
