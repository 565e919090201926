"""The data step: query the warehouse, build instruction examples, split, write and log a versioned dataset."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from llmops.errors import DataError
from llmops.fsutil import atomic_path
from llmops.settings import Settings
from llmops.tracking import storage_uri
from projects.data.transform import build_examples, check_columns, dataset_digest, split_of
from projects.data.warehouse import Warehouse, load_query
from prompts.registry import PinnedPrompt

TRAIN_FILE = "train.jsonl"
EVAL_FILE = "eval.jsonl"
STATS_FILE = "stats.json"
ARTIFACT_DIR = "datasets"


@dataclass(frozen=True)
class PreparedData:
    train: list[dict[str, Any]]
    eval: list[dict[str, Any]]
    digest: str
    prompt: PinnedPrompt
    stats: dict[str, Any] = field(default_factory=dict)


def query_params(settings: Settings) -> dict[str, Any]:
    data = settings.data
    return {"tag_pattern": data.tag_pattern, "answer_date_cutoff": data.answer_date_cutoff, "limit": data.limit}


def prepare(settings: Settings, warehouse: Warehouse, prompt: PinnedPrompt) -> PreparedData:
    """Pure apart from the warehouse read: the same rows and prompt version give the same digest."""
    table = warehouse.query(load_query(settings.data.query), query_params(settings))
    check_columns(table.column_names)
    rows = table.to_pylist()
    examples, dropped = build_examples(rows, prompt)
    if not examples:
        raise DataError(
            f"zero examples after filtering ({len(rows)} row(s) from the query; dropped: {dropped}); "
            "check data.tag_pattern and data.answer_date_cutoff"
        )
    train = [e for e in examples if split_of(e["question_id"], settings.data.eval_percent) == "train"]
    evaluation = [e for e in examples if split_of(e["question_id"], settings.data.eval_percent) == "eval"]
    if not train or not evaluation:
        raise DataError(f"split left an empty side (train={len(train)}, eval={len(evaluation)}); add data")
    stats = {
        "rows_from_query": len(rows),
        "examples": len(examples),
        "train": len(train),
        "eval": len(evaluation),
        "dropped": dropped,
        "query": settings.data.query,
        "params": query_params(settings),
    }
    return PreparedData(train, evaluation, dataset_digest(examples), prompt, stats)


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def write_dataset(prepared: PreparedData, output_dir: Path, now: datetime | None = None) -> Path:
    """Write `<created>-<digest>/` with train/eval JSONL and stats; atomic, so no half-written version exists."""
    created = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    target = Path(output_dir) / f"{created}-{prepared.digest}"
    try:
        with atomic_path(target) as tmp:
            tmp.mkdir()
            write_jsonl(tmp / TRAIN_FILE, prepared.train)
            write_jsonl(tmp / EVAL_FILE, prepared.eval)
            stats = {**prepared.stats, "digest": prepared.digest, "created": created, **prepared.prompt.as_config()}
            (tmp / STATS_FILE).write_text(json.dumps(stats, indent=2), encoding="utf-8")
    except OSError as exc:
        raise DataError(f"cannot write dataset to {output_dir}: {exc.strerror or exc}") from exc
    return target


def log_dataset(prepared: PreparedData, directory: Path) -> dict[str, str]:
    """Log files as artifacts and the splits as MLflow dataset inputs of the active run; returns their URIs."""
    import mlflow
    import mlflow.data
    import pandas as pd

    run = mlflow.active_run()
    mlflow.log_params(
        {
            "dataset_digest": prepared.digest,
            "prompt_name": prepared.prompt.name,
            "prompt_version": prepared.prompt.version,
            "instruction_hash": prepared.prompt.instruction_hash,
            "query": prepared.stats["query"],
            **{f"query.{k}": v for k, v in prepared.stats["params"].items()},
        }
    )
    mlflow.log_metrics({"n_train": len(prepared.train), "n_eval": len(prepared.eval),
                        "n_rows_from_query": prepared.stats["rows_from_query"]})
    mlflow.log_artifacts(str(directory), ARTIFACT_DIR)
    uris = {
        split: f"runs:/{run.info.run_id}/{ARTIFACT_DIR}/{name}"
        for split, name in (("train", TRAIN_FILE), ("eval", EVAL_FILE))
    }
    for split, rows in (("train", prepared.train), ("eval", prepared.eval)):
        frame = pd.DataFrame(rows)[["id", "input_text", "output_text"]]
        dataset = _from_pandas(
            frame, source=storage_uri(uris[split]), targets="output_text", name=f"so-qa-{split}", digest=prepared.digest
        )
        mlflow.log_input(dataset, context="training" if split == "train" else "evaluation")
    mlflow.set_tags({"llmops.step": "prepare_data", "llmops.dataset_digest": prepared.digest,
                     "llmops.train_uri": uris["train"], "llmops.eval_uri": uris["eval"]})
    return uris


def _from_pandas(*args, **kwargs):
    """mlflow.data.from_pandas, without its warning that two local source types both match."""
    import warnings

    import mlflow.data

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
        return mlflow.data.from_pandas(*args, **kwargs)
