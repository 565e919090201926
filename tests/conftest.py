"""Shared fixtures: a real SQLite MLflow store per test, settings isolated from the developer's machine."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
VENV_BIN = Path(sys.executable).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The end-to-end files first (a stable sort): `pytest -n N --dist loadfile` hands files out in this order, so
    the longest ones start at once instead of ending the run alone on one worker."""
    whole_loops = {item.path for item in items if item.get_closest_marker("e2e")}
    items.sort(key=lambda item: item.path not in whole_loops)


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Every test runs in its own directory with no LLMOPS_* / MLflow variables leaking in."""
    for key in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_TRACKING_URI",
                "MLFLOW_REGISTRY_URI"):
        # mlflow.set_experiment() / set_registry_uri() in a session or module fixture write these into os.environ;
        # deleting them through monkeypatch would put them back after every test, and the next module's fixtures
        # (set up before any test's isolation) would talk to that fixture's store or server.
        os.environ.pop(key, None)
    for key in list(os.environ):
        if key.startswith("LLMOPS_"):
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # MLflow fetches a model price catalog from github.com for spans that name a known model (gemini-*): no network
    monkeypatch.setenv("MLFLOW_MODEL_CATALOG_URI", "")
    monkeypatch.setenv("PATH", f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    _reset_mlflow_globals()


def _reset_mlflow_globals() -> None:
    """MLflow keeps the tracking/registry URI in module globals and mirrors them into os.environ: undo both."""
    import mlflow
    import mlflow.tracking._model_registry.utils as registry_utils

    import mlflow.tracking.fluent as fluent

    while mlflow.active_run():
        mlflow.end_run()
    fluent._active_experiment_id = None  # else the next test's store is asked for this store's experiment
    mlflow.set_tracking_uri(None)
    registry_utils._registry_uri = None
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID",
                "MLFLOW_EXPERIMENT_NAME"):
        os.environ.pop(key, None)


@pytest.fixture
def tracking_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh SQLite tracking + registry store for this test, active in this process and its children."""
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    yield uri


@pytest.fixture
def sample_dir() -> Path:
    return REPO / "data" / "sample"


@pytest.fixture
def shared_data() -> Path:
    """The real Stack Overflow / Stack Exchange samples beside the repo; skipped cleanly when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


@pytest.fixture
def copy_sample(tmp_path: Path, sample_dir: Path) -> Path:
    """A private copy of data/sample that a test may damage."""
    target = tmp_path / "sample"
    shutil.copytree(sample_dir, target)
    return target


QA_PAIRS = [
    ("How do I reverse a list in Python?", "Use slicing: `xs[::-1]` or `xs.reverse()` in place."),
    ("How do I sort a dictionary by value?", "Use `sorted(d.items(), key=lambda kv: kv[1])`."),
    ("How do I read a file line by line?", "Iterate over the file object: `for line in open(path): ...`."),
    ("How do I merge two dictionaries?", "Use `{**a, **b}` or `a | b` in Python 3.9+."),
    ("How do I check if a key exists in a dictionary?", "Use `key in d`."),
    ("How do I get the current time in Python?", "Use `datetime.datetime.now()`."),
    ("How do I remove duplicates from a list?", "Use `list(dict.fromkeys(xs))` to keep order."),
    ("How do I convert a string to an int?", "Use `int(s)`; it raises ValueError for bad input."),
    ("How can I flip a list so the last item comes first?", "Slice with a step of -1: `xs[::-1]`."),
    ("What is the way to combine two dicts into one?", "Unpack both: `{**a, **b}`; in 3.9+ `a | b`."),
    ("How to parse a string into an integer?", "Call `int(s)`; catch ValueError for bad input."),
    ("Read a text file one line at a time", "Loop over the open file: `for line in open(path): ...`."),
]


@pytest.fixture
def qa_pairs() -> list[tuple[str, str]]:
    return list(QA_PAIRS)


def qa_rows(prompt, pairs, start_id: int = 1000) -> list[dict]:
    """Dataset rows in the data step's shape, rendered with `prompt` (a PinnedPrompt)."""
    return [{"id": str(start_id + i), "question_id": start_id + i, "question": q, "answer": a,
             "link": f"https://stackoverflow.com/questions/{start_id + i}", "split": "",
             "input_text": prompt.format(question=q), "output_text": a, "prompt_name": prompt.name,
             "prompt_version": prompt.version, "instruction_hash": prompt.instruction_hash}
            for i, (q, a) in enumerate(pairs)]


def run_release_steps(directory: Path, prompt, *, backend: str = "local", overrides: dict | None = None,
                      pairs=QA_PAIRS, n_eval: int = 4, tag: str = "d", vertex_clients=None) -> dict:
    """Tune and evaluate with the real steps (`run_tuning`, then `run_evaluate_step` on the eval split) on a small
    dataset written to `directory` with its manifest; returns the runs, ready for `registry.release`."""
    import json
    from datetime import UTC, datetime

    import mlflow

    from evaluation.run import run_evaluate_step
    from llmops.dataset import manifest_for_files, write_manifest
    from llmops.settings import load_settings
    from projects.tuning.run import run_tuning

    directory = directory / f"data-{prompt.name}-{prompt.version}-{tag}"
    directory.mkdir(parents=True, exist_ok=True)
    rows = qa_rows(prompt, pairs)
    uris = {}
    for split, part in (("train", rows[:-n_eval]), ("eval", rows[-n_eval:])):
        path = directory / f"{split}.jsonl"
        path.write_text("".join(json.dumps({**r, "split": split}) + "\n" for r in part), encoding="utf-8")
        uris[split] = str(path)
    write_manifest(manifest_for_files({k: Path(v) for k, v in uris.items()},
                                      datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")), directory)
    settings = load_settings({"tuning": {"backend": backend}, **(overrides or {})})
    out = run_tuning(settings, uris["train"], uris["eval"], vertex_clients=vertex_clients)
    with mlflow.start_run(run_name="evaluate") as run:
        run_evaluate_step(out["run_id"], uris["eval"], settings=settings,
                          client=vertex_clients[0] if vertex_clients else None)
    return {"tune_run_id": out["run_id"], "eval_run_id": run.info.run_id, "settings": settings,
            "train_uri": uris["train"], "eval_uri": uris["eval"], **out}


@pytest.fixture
def tuned_chain(tmp_path: Path):
    """tuned_chain(prompt, backend=..., overrides=..., pairs=...) -> `run_release_steps` in this test's folder."""
    return lambda prompt, **kwargs: run_release_steps(tmp_path, prompt, **kwargs)


@pytest.fixture(scope="session")
def release_steps():
    """`run_release_steps` for module-scoped fixtures (which pass their own folder)."""
    return run_release_steps


def build_tiny_model(directory: Path, texts: list[str], seed: int = 0) -> Path:
    """A 2-layer GPT-2 with random weights and a word-level tokenizer over `texts`: no downloads."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    from backends.hf import PLAIN_ASSISTANT, PLAIN_USER

    splitter = pre_tokenizers.Whitespace()
    words = sorted({w for text in [*texts, PLAIN_USER, PLAIN_ASSISTANT] for w, _ in splitter.pre_tokenize_str(text)})
    vocab = {tok: i for i, tok in enumerate(["<unk>", "<pad>", "<eos>", *words])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = splitter
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", pad_token="<pad>",
                                        eos_token="<eos>")
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=len(vocab), n_positions=256, n_embd=64, n_layer=2, n_head=2,
                        bos_token_id=2, eos_token_id=2, pad_token_id=1)
    model = GPT2LMHeadModel(config)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))
    return directory


@pytest.fixture(scope="session")
def tiny_lm_factory():
    """`build_tiny_model(directory, texts)`: a tiny random causal LM made in the test (no downloads)."""
    return build_tiny_model
