"""Loading a causal LM and its tokenizer: the shipped testbed model, a local directory or a hub id.

The testbed base model is an ordinary Hugging Face checkpoint, so it goes through exactly the
same ``AutoModelForCausalLM`` / ``AutoTokenizer`` path as Qwen2.5 or Llama.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from entropyrl.config import ModelConfig
from entropyrl.errors import UserError


def resolve_model_path(path: str) -> str:
    """``testbed`` → the shipped base model directory; anything else unchanged."""
    if path == "testbed":
        from entropyrl.testbed import BASE_DIR

        return str(BASE_DIR)
    return path


def resolve_dtype(cfg: ModelConfig) -> torch.dtype:
    """The compute dtype: ``model.dtype``, or for ``auto`` the checkpoint's own ``torch_dtype``.

    ``auto`` reads only the checkpoint's ``config.json`` (no weights).
    """
    if cfg.dtype != "auto":
        return {"float32": torch.float32, "bfloat16": torch.bfloat16}[cfg.dtype]
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(resolve_model_path(cfg.path))
    except OSError as err:
        raise UserError(
            f"cannot read the config of model {cfg.path!r}: {str(err).rstrip('.')}. Give "
            "model.path as a local directory with a Hugging Face checkpoint, a hub id (needs "
            "internet), or 'testbed'."
        ) from None
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    return dtype if dtype in (torch.bfloat16, torch.float16) else torch.float32


def resolve_device(cfg: ModelConfig) -> str:
    """``cuda`` or ``cpu``; checked before anything is loaded.

    Raises:
        UserError: ``model.device`` is ``cuda`` and no CUDA device is present.
    """
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise UserError(
            "model.device is 'cuda' but no CUDA device is available here. Use model.device=auto "
            "(CPU when there is no GPU), or check the plan for a GPU machine with "
            "`entropyrl train ... --dry-run --device-memory 80GiB`."
        )
    if cfg.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return cfg.device


def load_model_and_tokenizer(
    cfg: ModelConfig, *, override_path: Path | None = None, master_weights: bool = False
) -> tuple[Any, Any]:
    """Model (train mode) and tokenizer (left padding, pad token set).

    Args:
        cfg: model section of the config.
        override_path: load weights from here instead (a checkpoint being resumed).
        master_weights: hold the parameters in fp32 even when the compute dtype is bf16
            (the trainer then computes under bf16 autocast).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = resolve_device(cfg)  # before any download
    source = str(override_path) if override_path is not None else resolve_model_path(cfg.path)
    dtype = torch.float32 if master_weights else resolve_dtype(cfg)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model: Any = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
    except OSError as err:
        raise UserError(
            f"cannot load model {source!r}: {str(err).rstrip('.')}. Give model.path as a local "
            "directory with a Hugging Face checkpoint, a hub id (needs internet), or 'testbed'."
        ) from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    model.to(device)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    model.train()
    return model, tokenizer
