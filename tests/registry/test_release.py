"""One registration path: a tuning run's provider spec + its eval run -> a pure plan -> an apply that logs the one
models-from-code file, tags the full bundle and points `dev` at it. The runs come from the real tuning and
evaluation steps (never hand-written), so a step that disagrees with registration fails here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from tests.support.stub_server import Reply, StubChatServer
from llmops.dataset import read_manifest
from llmops.errors import ConfigError, DataError, NotFoundError
from llmops.settings import load_settings
from prompts.registry import set_alias, sync_prompt
from prompts.template import load_template_file
from registry.release import BUNDLE_KEYS, RunView, plan_from_runs, plan_release, register

REPO = Path(__file__).resolve().parents[2]
RELOAD = """
import json, sys
import mlflow.pyfunc
model = mlflow.pyfunc.load_model(sys.argv[1])
print(json.dumps(model.predict([{"question": q} for q in sys.argv[2:]])))
"""


@pytest.fixture
def store(tracking_uri, request):
    mlflow.set_experiment(request.node.name[:60])
    yield tracking_uri


def synced(tmp_path: Path, source: str, name: str, **changes):
    import yaml

    data = yaml.safe_load((REPO / "prompts" / "templates" / f"{source}.yaml").read_text())
    data.update(name=name, **changes)
    path = tmp_path / "t" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return sync_prompt(load_template_file(path))[0]


def reload_in_fresh_process(uri: str, *questions: str) -> list[dict]:
    done = subprocess.run([sys.executable, "-c", RELOAD, uri, *questions], capture_output=True, text=True, check=False,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def versions(model: str) -> list[str]:
    return sorted(str(v.version) for v in MlflowClient().search_model_versions(f"name='{model}'"))


def _register(settings, name: str, runs: dict) -> str:
    with mlflow.start_run(run_name="register"):
        return register(settings, name, runs["tune_run_id"], runs["eval_run_id"])


def test_local_chain_registers_with_the_full_bundle_and_pinned_requirements(store, tmp_path, tuned_chain):
    prompt = synced(tmp_path, "so-qa", "rel-default")
    runs = tuned_chain(prompt)
    version = _register(runs["settings"], "chain-default", runs)

    client = MlflowClient()
    mv = client.get_model_version("chain-default", version)
    bundle = {key: mv.tags[f"llmops.{key}"] for key in BUNDLE_KEYS}
    tune = client.get_run(runs["tune_run_id"]).data
    evaluation = client.get_run(runs["eval_run_id"]).data
    assert bundle["tune_run_id"] == runs["tune_run_id"] and bundle["eval_run_id"] == runs["eval_run_id"]
    assert bundle["dataset_digest"] == tune.params["dataset_digest"] == evaluation.params["dataset_digest"]
    manifest = read_manifest(runs["train_uri"])  # hand-made files, tied together by `llmops data manifest`
    assert (bundle["dataset_scope"], bundle["dataset_lineage"]) == ("train+eval", manifest.lineage_key)
    assert bundle["chain_config"] == evaluation.params["chain_config"]  # what was evaluated is what is served
    assert (bundle["provider"], bundle["chain"], bundle["tuning_backend"]) == ("retrieval", "so-qa-retrieval", "local")
    assert json.loads(bundle["provider_spec"])["artifacts"]["retriever"] == tune.tags["llmops.retriever_uri"]
    assert bundle["prompt_version"] == "1" and bundle["consistency"] == "match"
    assert str(client.get_model_version_by_alias("chain-default", "dev").version) == version

    # every library whose state the model serializes or imports is pinned to the version it was built with
    local = Path(mlflow.artifacts.download_artifacts(f"models:/chain-default/{version}", dst_path=str(tmp_path / "m")))
    pins = dict(line.split("==") for line in (local / "requirements.txt").read_text().split() if "==" in line)
    from importlib.metadata import version as installed

    for dist in ("scikit-learn", "joblib", "scipy", "numpy", "langchain-core", "mlflow", "pydantic"):
        assert pins[dist] == installed(dist), dist
    assert bundle["requirements"].split(",") == [f"{k}=={v}" for k, v in pins.items()]

    first, second = reload_in_fresh_process("models:/chain-default@dev", "How can I reverse a list in Python?",
                                            "zzz qqq unrelated")
    assert first["answer"].startswith("Use slicing") and not first["abstained"]
    assert first["citations"][0]["source_id"] == "1000" and first["model_version"] == version
    assert first["chain"] == "so-qa-retrieval" and second["citations"]


def test_the_chain_is_evaluated_as_it_is_registered(store, tmp_path, tuned_chain):
    """A prompt chosen by settings must be evaluated before it is registered: the eval run's chain config is the
    registered one, or registration refuses."""
    v1 = synced(tmp_path, "so-qa", "rel-swap")
    runs = tuned_chain(v1)
    v2 = synced(tmp_path, "so-qa", "rel-swap", template="{{instruction}}\n\nThe question, verbatim:\n{{question}}")
    set_alias("rel-swap", v2.version, "candidate")
    swapped = load_settings({"chain": {"prompt_uri": "prompts:/rel-swap@candidate"}})
    with pytest.raises(ConfigError, match="scored chain config .* evaluate again"):
        _register(swapped, "chain-swap", runs)
    assert versions("chain-swap") == []
    again = tuned_chain(v1, overrides={"chain": {"prompt_uri": "prompts:/rel-swap@candidate"}}, tag="v2")
    version = _register(again["settings"], "chain-swap", again)
    set_alias("rel-swap", v1.version, "candidate")  # the alias moves on; the registered model stays pinned
    assert MlflowClient().get_model_version("chain-swap", version).tags["llmops.prompt_version"] == "2"


def test_instruction_mismatch_refuses_or_warns(store, tmp_path, tuned_chain):
    v1 = synced(tmp_path, "so-qa", "rel-drift")
    v2 = synced(tmp_path, "so-qa", "rel-drift", instruction="Answer like a pirate.")
    assert v2.instruction_hash != v1.instruction_hash
    drifted = {"chain": {"prompt_uri": f"prompts:/rel-drift/{v2.version}"}}
    runs = tuned_chain(v1, overrides=drifted)
    with pytest.raises(ConfigError, match=r"instruction hash .* but the training data was built with"):
        _register(runs["settings"], "chain-drift", runs)
    assert versions("chain-drift") == []
    warned = load_settings({"chain": {**drifted["chain"], "consistency": "warn"}})
    version = _register(warned, "chain-drift", runs)
    assert MlflowClient().get_model_version("chain-drift", version).tags["llmops.consistency"] == "mismatch-warned"


def test_bad_release_inputs_register_nothing(store, tmp_path, tuned_chain, qa_pairs):
    prompt = synced(tmp_path, "so-qa", "rel-bad")
    runs = tuned_chain(prompt)
    other = tuned_chain(prompt, pairs=[(f"{q} (again)", a) for q, a in qa_pairs], tag="other")
    settings = runs["settings"]
    client = MlflowClient()
    cases = [
        (runs["eval_run_id"], runs["eval_run_id"], ConfigError, "records no provider spec"),  # not a tuning run
        ("0" * 32, runs["eval_run_id"], NotFoundError, "not found"),
        (runs["tune_run_id"], other["eval_run_id"], ConfigError, "evaluated tuning run .*, not"),
    ]
    for tune_id, eval_id, error, message in cases:
        with pytest.raises(error, match=message):
            plan_from_runs(settings, "chain-bad", tune_id, eval_id)
    # an eval run of the same tuning run on another dataset
    tune = RunView.of(client.get_run(runs["tune_run_id"]))
    evaluation = RunView.of(client.get_run(runs["eval_run_id"]))
    moved = RunView(evaluation.run_id, "FINISHED", {**evaluation.params, "dataset_lineage": "abc123"},
                    evaluation.tags)
    plan_args = {"model_name": "chain-bad", "tune": tune, "prompt": prompt, "chain_settings": settings.chain,
                 "consistency_mode": "error", "installed": lambda name: "1.0"}
    with pytest.raises(DataError, match="dataset of another lineage"):
        plan_release(evaluation=moved, **plan_args)
    # an unknown provider kind in the spec, a spec missing its artifact, a library that is not installed
    spec = json.loads(tune.tags["llmops.provider_spec"])
    for changed, message in [({**spec, "kind": "bedrock"}, "unknown provider kind 'bedrock'"),
                             ({**spec, "artifacts": {}}, "lacks artifact"),
                             ({**spec, "temperature": 1}, "unknown key")]:
        bad = RunView(tune.run_id, "FINISHED", tune.params, {**tune.tags, "llmops.provider_spec": json.dumps(changed)})
        with pytest.raises(ConfigError, match=message):
            plan_release(evaluation=evaluation, **{**plan_args, "tune": bad})
    with pytest.raises(ConfigError, match="not installed here"):
        plan_release(evaluation=evaluation, **{**plan_args, "installed": lambda name: None})
    assert versions("chain-bad") == []


def test_openai_compatible_chain_reloads_with_grounding_safety_and_citations(store, tmp_path, tuned_chain):
    plain = synced(tmp_path, "so-qa", "rel-oa")
    grounded = synced(tmp_path, "so-qa-grounded", "rel-oa-grounded")
    with StubChatServer(default=Reply(text="Slice it: xs[::-1] [1000]")) as server:
        overrides = {"chain": {"prompt_uri": f"prompts:/{grounded.name}/1", "grounding_k": 2,
                               "provider": {"base_url": server.base_url, "model": "qwen-coder", "timeout_s": 5,
                                            "max_retries": 1}}}
        runs = tuned_chain(plain, backend="openai_compat", overrides=overrides)
        evaluated = len(server.requests)
        assert evaluated == 4  # the eval split, once each
        version = _register(runs["settings"], "chain-oa", runs)
        assert len(server.requests) == evaluated  # nothing was called at log time
        mv = MlflowClient().get_model_version("chain-oa", version)
        assert (mv.tags["llmops.provider"], mv.tags["llmops.model_id"], mv.tags["llmops.chain"]) == \
            ("openai_compat", "qwen-coder", "so-qa-openai-compat")
        assert mv.tags["llmops.consistency"] == "match"  # same instruction as the training prompt
        [answer] = reload_in_fresh_process(f"models:/chain-oa/{version}", "How do I reverse a list?")
    sent = server.requests[-1]
    assert sent["model"] == "qwen-coder" and sent["temperature"] == 0.2 and sent["max_tokens"] == 1024
    assert "] Question: How do I reverse a list in Python?" in sent["messages"][-1]["content"]
    assert answer["answer"] == "Slice it: xs[::-1] [1000]" and answer["provider"] == "openai_compat"
    assert answer["safety"]["source"] == "local-lexicon-v1" and not answer["safety"]["blocked"]
    assert answer["citations"][0]["kind"] == "grounding" and answer["citations"][0]["source_id"] == "1000"


def test_the_release_path_from_the_command_line(store, tmp_path, tuned_chain, cli):
    """`llmops tune` alone makes a tuning run that `llmops eval run` and `llmops registry register` take; bad
    inputs at the command line are one line and a non-zero exit, and register nothing."""
    prompt = synced(tmp_path, "so-qa", "rel-cli")
    data = tuned_chain(prompt)  # only for its dataset files (with their manifest)
    code, out, err = cli("tune", "--train-uri", data["train_uri"], "--eval-uri", data["eval_uri"])
    assert code == 0, err
    tune_id = dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)["run_id"]
    code, out, err = cli("eval", "run", "--tune-run-id", tune_id, "--eval-uri", data["eval_uri"])
    assert code == 0, err
    assert "vs/random_answer/answered_token_f1: " in out
    eval_id = out.strip().splitlines()[-1].split()[-1]
    for args, exit_code, message in [
        (("--tune-run-id", eval_id, "--eval-run-id", eval_id), 2, "records no provider spec"),
        (("--tune-run-id", tune_id, "--eval-run-id", data["eval_run_id"]), 2, "evaluated tuning run"),
        (("--tune-run-id", "f" * 32, "--eval-run-id", eval_id), 4, "not found"),
    ]:
        code, _, err = cli("registry", "register", *args, "--model-name", "chain-cli")
        assert code == exit_code and message in err and err.count("\n") == 1, err
    assert versions("chain-cli") == []
    code, out, err = cli("registry", "register", "--tune-run-id", tune_id, "--eval-run-id", eval_id,
                         "--model-name", "chain-cli", "--dry-run")
    assert code == 0 and "dry run: would register chain-cli (retrieval" in out and versions("chain-cli") == []
    code, out, err = cli("registry", "register", "--tune-run-id", tune_id, "--eval-run-id", eval_id,
                         "--model-name", "chain-cli")
    assert code == 0 and "registered models:/chain-cli/1 (alias dev)" in out, err


def test_a_provider_that_is_down_is_a_backend_error_not_bad_input(store, tmp_path, tuned_chain):
    """`llmops serve predict` against a registered chain whose provider is down exits 6 (backend), not 7."""
    import os

    prompt = synced(tmp_path, "so-qa", "rel-down")
    with StubChatServer(default=Reply(text="ok")) as server:
        overrides = {"chain": {"provider": {"base_url": server.base_url, "model": "m", "max_retries": 0}}}
        runs = tuned_chain(prompt, backend="openai_compat", overrides=overrides)
        version = _register(runs["settings"], "chain-down", runs)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMOPS_")}
    base = [str(Path(sys.executable).parent / "llmops"), "serve", "predict", "--model", f"models:/chain-down/{version}"]
    down = subprocess.run([*base, "--question", "How do I reverse a list?"], capture_output=True, text=True,
                          env=env, timeout=300, check=False)
    assert down.returncode == 6, down.stderr[-2000:]
    (error,) = [line for line in down.stderr.splitlines() if line.startswith("error:")]
    assert "cannot connect" in error and "Traceback" not in down.stderr
    empty = subprocess.run([*base, "--question", "   "], capture_output=True, text=True, env=env, timeout=300,
                           check=False)
    assert empty.returncode == 7 and "question is empty" in empty.stderr
