"""Fixtures for tuning tests: a registered prompt, small chat datasets, a tiny random causal LM built here
(`tiny_lm_factory`, tests/conftest.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmops.settings import repo_root

FACTS = [("python", "guido"), ("ruby", "matz"), ("perl", "larry"), ("java", "james"), ("c", "dennis"),
         ("lisp", "john"), ("rust", "graydon"), ("go", "rob"), ("scala", "martin"), ("kotlin", "andrey"),
         ("swift", "chris"), ("haskell", "simon")]


def register_prompt():
    """Sync the shipped template to the active tracking store; returns its PinnedPrompt."""
    from prompts.registry import sync_prompt
    from prompts.template import load_template

    pinned, _created = sync_prompt(load_template("so-qa", repo_root() / "prompts" / "templates"))
    return pinned


def example_rows(prompt, pairs, start_id: int = 1) -> list[dict]:
    rows = []
    for offset, (lang, author) in enumerate(pairs):
        question = f"who created {lang} ?"
        answer = f"{lang} was created by {author} ."
        qid = start_id + offset
        rows.append({"id": str(qid), "question_id": qid, "question": question, "answer": answer,
                     "input_text": prompt.format(question=question), "output_text": answer,
                     "prompt_name": prompt.name, "prompt_version": prompt.version,
                     "instruction_hash": prompt.instruction_hash})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def write_splits(directory: Path, prompt) -> tuple[str, str]:
    """Train on all facts (the model must memorise them); eval on a subset; a manifest ties the two together."""
    from llmops.dataset import manifest_for_files, write_manifest

    train = example_rows(prompt, FACTS)
    evaluation = example_rows(prompt, FACTS[:4], start_id=100)
    paths = write_jsonl(directory / "train.jsonl", train), write_jsonl(directory / "eval.jsonl", evaluation)
    write_manifest(manifest_for_files({"train": Path(paths[0]), "eval": Path(paths[1])}, "20260101T000000Z"),
                   directory)
    return paths


@pytest.fixture(scope="session")
def tuning_store(tmp_path_factory: pytest.TempPathFactory):
    """One SQLite store for the tuning tests, with the prompt registered and the small splits and tiny model on disk."""
    import mlflow

    root = tmp_path_factory.mktemp("tuning-store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    prompt = register_prompt()
    train_uri, eval_uri = write_splits(root / "data", prompt)
    mlflow.set_tracking_uri(previous)
    return {"root": root, "uri": uri, "prompt": prompt, "train_uri": train_uri, "eval_uri": eval_uri}


@pytest.fixture(scope="session")
def tiny_model(tuning_store, tiny_lm_factory) -> Path:
    """The tiny random GPT-2 and its tokenizer, saved once per session."""
    texts = [r["input_text"] + " " + r["output_text"] for r in example_rows(tuning_store["prompt"], FACTS)]
    return tiny_lm_factory(tuning_store["root"] / "tiny-gpt2", texts)


@pytest.fixture
def store(tuning_store, monkeypatch: pytest.MonkeyPatch):
    """Point this test (and its subprocesses) at the module's store."""
    import mlflow

    uri = tuning_store["uri"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    yield tuning_store
    while mlflow.active_run():
        mlflow.end_run()
