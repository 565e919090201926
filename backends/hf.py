"""A local causal language model (optionally with a LoRA adapter) as a `Backend`: sends the rendered prompt.

Training (projects/tuning/hf.py) and generation share `prompt_text`, so the model sees at serving time exactly
the text layout it was tuned on. Needs the `hf` extra (torch, transformers, peft).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from backends.base import Generation
from llmops.errors import BackendError, ConfigError

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")
PLAIN_USER = "### User:\n"
PLAIN_ASSISTANT = "\n### Assistant:\n"


def check_model_dir(path: str | Path | None) -> Path:
    """A usable base model directory: config, weights and a tokenizer. Checked before any training starts."""
    if not path:
        raise ConfigError("no base model path: set tuning.hf.base_model_path or pass --base-model")
    directory = Path(path).expanduser()
    if not directory.is_dir():
        raise ConfigError(f"base model path {directory} does not exist or is not a directory")
    if not (directory / "config.json").is_file():
        raise ConfigError(f"base model path {directory} has no config.json")
    if not any((directory / name).is_file() for name in WEIGHT_FILES):
        raise ConfigError(f"base model path {directory} has no weights (expected one of {', '.join(WEIGHT_FILES)})")
    if not any((directory / name).is_file() for name in TOKENIZER_FILES):
        raise ConfigError(f"base model path {directory} has no tokenizer files")
    return directory.resolve()


def check_adapter_dir(path: str | Path) -> Path:
    directory = Path(path)
    if not (directory / "adapter_config.json").is_file():
        raise ConfigError(f"no LoRA adapter in {directory} (adapter_config.json missing)")
    return directory


def prompt_text(tokenizer: Any, user_text: str) -> str:
    """The text before the answer: the tokenizer's chat template when it has one, else a plain layout."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": user_text}], tokenize=False,
                                             add_generation_prompt=True)
    return f"{PLAIN_USER}{user_text}{PLAIN_ASSISTANT}"


def load_tokenizer(base_path: str | Path) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(base_path))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


class HFBackend:
    """Greedy decoding, so the same weights and prompt always give the same text."""

    name = "hf"

    def __init__(self, lm: Any, tokenizer: Any, max_new_tokens: int = 256, model_id: str = "local-causal-lm") -> None:
        self.lm = lm
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.model = model_id  # the id the chain reports (`model_id`), as for remote providers
        self._lock = threading.Lock()  # the chain may call from threads; one generation at a time on CPU

    @classmethod
    def load(cls, base_path: str | Path, adapter_path: str | Path | None = None,
             max_new_tokens: int = 256) -> HFBackend:
        import torch
        from transformers import AutoModelForCausalLM

        base = check_model_dir(base_path)
        tokenizer = load_tokenizer(base)
        model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
        if adapter_path is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(check_adapter_dir(adapter_path)))
        model.eval()
        model_id = base.name + (f"+lora:{Path(adapter_path).name}" if adapter_path is not None else "")
        return cls(model, tokenizer, max_new_tokens, model_id)

    def generate(self, question: str, prompt: str) -> Generation:
        import torch

        text = prompt_text(self.tokenizer, prompt)
        encoded = self.tokenizer(text, return_tensors="pt", add_special_tokens=False)
        max_new = self.max_new_tokens
        limit = getattr(self.lm.config, "max_position_embeddings", None)
        if limit:  # keep the end of an over-long prompt (where the question and the answer cue are)
            keep = max(1, int(limit) - self.max_new_tokens)
            encoded = {k: v[:, -keep:] for k, v in encoded.items()}
            max_new = min(max_new, int(limit) - int(encoded["input_ids"].shape[1]))
        try:
            with self._lock, torch.no_grad():
                output = self.lm.generate(
                    **encoded, max_new_tokens=max_new, do_sample=False,
                    pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self.tokenizer.eos_token_id,
                )
        except (RuntimeError, ValueError) as exc:
            raise BackendError(f"local model generation failed: {exc}") from exc
        prompt_tokens = int(encoded["input_ids"].shape[1])
        new_tokens = output[0, prompt_tokens:]
        answer = self.tokenizer.decode(new_tokens, skip_special_tokens=True).strip()
        return Generation(text=answer, usage={"prompt_tokens": prompt_tokens,
                                              "completion_tokens": int(new_tokens.shape[0])})
