"""LoRA supervised fine-tuning of a local causal LM on the chat-formatted splits (CPU is enough for small models).

A plain, seeded torch loop (no Trainer): the loss is taken on the answer tokens only, the same seed and inputs give
the same adapter bit for bit, and the loss curve goes to MLflow in batches.
"""

from __future__ import annotations

import random
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backends.hf import check_model_dir, load_tokenizer, prompt_text
from llmops.errors import BackendError, DataError
from llmops.settings import HFTuningSettings
from projects.tuning.common import TuningData, chat_pair

ADAPTER_ARTIFACT = "adapter"


@dataclass
class HFTrainResult:
    adapter_dir: Path
    train_loss: list[tuple[int, float]] = field(default_factory=list)
    eval_loss: list[tuple[int, float]] = field(default_factory=list)  # on the validation split
    steps: int = 0
    trainable_params: int = 0
    max_length: int = 0


def hyperparams(cfg: HFTuningSettings) -> dict[str, Any]:
    return {"epochs": cfg.epochs, "learning_rate": cfg.learning_rate, "batch_size": cfg.batch_size,
            "lora_r": cfg.lora_r, "lora_alpha": cfg.lora_alpha, "lora_dropout": cfg.lora_dropout,
            "max_length": cfg.max_length, "target_modules": ",".join(cfg.target_modules or []) or "peft-default"}


def encode(tokenizer: Any, chat: dict[str, Any], max_length: int) -> tuple[list[int], list[int]]:
    """(input ids, labels): prompt tokens are masked with -100 so only the answer is learned."""
    user, answer = chat_pair(chat)
    prompt_ids = tokenizer(prompt_text(tokenizer, user), add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is not None:
        answer_ids = answer_ids + [tokenizer.eos_token_id]
    ids = (prompt_ids + answer_ids)[:max_length]
    labels = ([-100] * len(prompt_ids) + answer_ids)[:max_length]
    return ids, labels


def _batch(examples: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, Any]:
    import torch

    width = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, (ids, labs) in enumerate(examples):
        input_ids[row, :len(ids)] = torch.tensor(ids)
        labels[row, :len(labs)] = torch.tensor(labs)
        mask[row, :len(ids)] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": mask}


def effective_max_length(model: Any, requested: int) -> int:
    """Never more tokens than the model has positions for."""
    limit = getattr(model.config, "max_position_embeddings", None)
    return min(requested, int(limit)) if limit else requested


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)


def _mean_loss(model: Any, examples: list[tuple[list[int], list[int]]], pad_id: int, batch_size: int) -> float:
    """Token-weighted mean loss over the answer tokens."""
    import torch

    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            batch = _batch(examples[start:start + batch_size], pad_id)
            tokens = int((batch["labels"][:, 1:] != -100).sum())
            if tokens:
                total += float(model(**batch).loss) * tokens
                count += tokens
    model.train()
    return total / count if count else float("nan")


def train_lora(base_path: Path, data: TuningData, cfg: HFTuningSettings, seed: int, output_dir: Path,
               on_epoch: Callable[[HFTrainResult], None] = lambda result: None,
               on_step: Callable[[int, int], None] = lambda step, total: None) -> HFTrainResult:
    """Fit a LoRA adapter; returns the loss curves and the saved adapter directory."""
    import torch
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForCausalLM

    seed_everything(seed)
    tokenizer = load_tokenizer(base_path)
    model = AutoModelForCausalLM.from_pretrained(str(base_path), dtype=torch.float32)
    max_length = effective_max_length(model, cfg.max_length)
    train = [encode(tokenizer, chat, max_length) for chat in data.fit_chats]
    evaluation = [encode(tokenizer, chat, max_length) for chat in data.validation_chats]
    if not any(label != -100 for _, labels in train for label in labels):
        raise DataError(f"no answer tokens left after truncation to {max_length} tokens; prompts are too long "
                        "for tuning.hf.max_length or the model's context")
    model = get_peft_model(model, LoraConfig(
        task_type=TaskType.CAUSAL_LM, r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
        target_modules=cfg.target_modules,
    ))
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.learning_rate)
    order = torch.Generator().manual_seed(seed)
    pad_id = tokenizer.pad_token_id
    result = HFTrainResult(adapter_dir=output_dir, trainable_params=sum(p.numel() for p in trainable),
                           max_length=max_length)
    result.eval_loss.append((0, _mean_loss(model, evaluation, pad_id, cfg.batch_size)))
    model.train()
    step = 0
    total = cfg.epochs * -(-len(train) // cfg.batch_size)
    on_step(0, total)
    for _epoch in range(cfg.epochs):
        permutation = torch.randperm(len(train), generator=order).tolist()
        for start in range(0, len(train), cfg.batch_size):
            batch = _batch([train[i] for i in permutation[start:start + cfg.batch_size]], pad_id)
            loss = model(**batch).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            result.train_loss.append((step, float(loss.detach())))
            on_step(step, total)
        result.eval_loss.append((step, _mean_loss(model, evaluation, pad_id, cfg.batch_size)))
        result.steps = step
        on_epoch(result)
    model.save_pretrained(str(output_dir))
    tokenizer.save_pretrained(str(output_dir))
    return result


def _step_progress(progress: Any) -> Callable[[int, int], None]:
    """Training steps on the command's progress bar (started with the total at step 0)."""
    def on_step(step: int, total: int) -> None:
        if progress is None:
            return
        if step == 0:
            progress.start(total)
        else:
            progress.set(completed=step)

    return on_step


def tune_hf(data: TuningData, cfg: HFTuningSettings, seed: int, progress: Any = None) -> dict[str, Any]:
    """Train in the active run (loss on the validation split), log the curves and the adapter."""
    import mlflow

    from projects.tuning.tracking import log_series

    base = check_model_dir(cfg.base_model_path)
    logged = {"train_loss": 0, "validation_loss": 0}

    def flush(result: HFTrainResult) -> None:  # curves go out once per epoch, in one batch
        fresh = {"train_loss": result.train_loss[logged["train_loss"]:],
                 "validation_loss": [p for p in result.eval_loss[logged["validation_loss"]:] if p[1] == p[1]]}
        log_series(fresh)
        logged.update(train_loss=len(result.train_loss), validation_loss=len(result.eval_loss))

    with tempfile.TemporaryDirectory() as tmp:
        try:
            result = train_lora(base, data, cfg, seed, Path(tmp) / ADAPTER_ARTIFACT, on_epoch=flush,
                                on_step=_step_progress(progress))
        except (RuntimeError, IndexError, ValueError) as exc:  # torch/transformers failures, in one line
            raise BackendError(f"hf training failed: {type(exc).__name__}: {exc}".splitlines()[0]) from exc
        mlflow.log_param("tuning.effective_max_length", result.max_length)
        summary = {"final_train_loss": result.train_loss[-1][1],
                   "initial_validation_loss": result.eval_loss[0][1],
                   "final_validation_loss": result.eval_loss[-1][1], "steps": float(result.steps),
                   "trainable_params": float(result.trainable_params)}
        mlflow.log_metrics({k: v for k, v in summary.items() if v == v})  # no validation rows: no loss
        mlflow.log_artifacts(str(result.adapter_dir), ADAPTER_ARTIFACT)
        run_id = mlflow.active_run().info.run_id
        mlflow.set_tags({"llmops.adapter_uri": f"runs:/{run_id}/{ADAPTER_ARTIFACT}",
                         "llmops.base_model_path": str(base)})
        return {"adapter_uri": f"runs:/{run_id}/{ADAPTER_ARTIFACT}", **summary}
