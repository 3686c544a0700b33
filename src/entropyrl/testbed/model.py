"""The testbed model: a tiny Qwen2 (the Qwen2.5 architecture) and the shipped base checkpoint.

The shipped checkpoint in ``testbed/base/`` is an ordinary Hugging Face directory
(``config.json``, ``model.safetensors``, tokenizer files, ``generation_config.json``), so the
testbed goes through exactly the code path of Qwen2.5: ``AutoModelForCausalLM`` and
``AutoTokenizer``. ``build_info.json`` beside it records how it was built and what it scores.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from transformers import Qwen2Config

BASE_DIR = Path(__file__).resolve().parent / "base"


def base_config(vocab_size: int, hidden: int = 96) -> Qwen2Config:
    """The shipped base model's architecture (about 0.34 M parameters, tied embeddings).

    ``hidden`` over 4 heads sets the head size: the shipped 96 gives 24; 128 gives 32, which
    vLLM's CPU attention runs (about 0.6 M parameters).
    """
    return _qwen2(vocab_size, hidden=hidden, layers=3, heads=4, kv_heads=2,
                  intermediate=3 * hidden)


def micro_config(vocab_size: int) -> Qwen2Config:
    """A very small Qwen2 (about 20 k parameters) for fast tests that build a fresh model."""
    return _qwen2(vocab_size, hidden=32, layers=2, heads=4, kv_heads=2, intermediate=64)


def vllm_micro_config(vocab_size: int) -> Qwen2Config:
    """A micro Qwen2 that vLLM's CPU attention runs (about 0.3 M parameters).

    vLLM's CPU attention supports only some head sizes: 32 works, the base model's 24 and the
    micro model's 8 do not ("Unsupported CPU attention configuration"). Hidden 128 over 4
    heads gives 32.
    """
    return _qwen2(vocab_size, hidden=128, layers=2, heads=4, kv_heads=2, intermediate=256)


def _qwen2(
    vocab_size: int, *, hidden: int, layers: int, heads: int, kv_heads: int, intermediate: int
) -> Qwen2Config:
    from entropyrl.testbed.tokenizer import BOS, EOS, PAD, SPECIAL_TOKENS

    ids = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    return Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        bos_token_id=ids[BOS],
        eos_token_id=ids[EOS],
        pad_token_id=ids[PAD],
        use_cache=True,
    )


def load_base(path: str | Path | None = None) -> tuple[Any, Any]:
    """Load a testbed checkpoint (default: the shipped base model) in eval mode on CPU.

    Args:
        path: a directory written by ``entropyrl testbed build``; ``None`` = the
            shipped :data:`BASE_DIR`.

    Returns:
        ``(model, tokenizer)`` from ``AutoModelForCausalLM`` / ``AutoTokenizer`` (left padding).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory = Path(path) if path is not None else BASE_DIR
    if not (directory / "config.json").is_file():
        raise ValueError(
            f"path: expected a testbed checkpoint directory with config.json, got {directory}; "
            "build one with `entropyrl testbed build --out DIR`"
        )
    tokenizer = AutoTokenizer.from_pretrained(directory)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(directory)
    model.eval()
    return model, tokenizer


def read_build_info(path: str | Path | None = None) -> dict[str, Any]:
    """The ``build_info.json`` of a checkpoint directory (default: the shipped one)."""
    directory = Path(path) if path is not None else BASE_DIR
    with open(directory / "build_info.json", encoding="utf-8") as fh:
        info: dict[str, Any] = json.load(fh)
    return info
