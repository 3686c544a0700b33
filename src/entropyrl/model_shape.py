"""Architecture numbers of a dense decoder, read without weights: shape, parameter counts.

Legend as in :mod:`entropyrl.plan`: ``L`` layers, ``h`` hidden size, ``i`` MLP intermediate
size, ``V`` vocabulary. Sources, in order: a local directory's ``config.json``, the table of
published configs :data:`KNOWN_SHAPES`, or ``AutoConfig`` (config.json only).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

from entropyrl.errors import UserError

ITEMSIZE = {"float32": 4, "bfloat16": 2, "float16": 2}


class ModelShape(NamedTuple):
    """The architecture numbers of a dense Qwen2/Qwen3/Llama/Mistral-style decoder."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied: bool  # LM head shares the embedding matrix
    qkv_bias: bool = False  # Qwen2 has biases on q/k/v
    qk_norm: bool = False  # Qwen3 has RMSNorms (head_dim) on q and k
    dtype: str = "bfloat16"  # the checkpoint's own dtype (model.dtype=auto)


def _qwen25(layers: int, hidden: int, heads: int, kv: int, inter: int, vocab: int,
            tied: bool) -> ModelShape:  # fmt: skip
    return ModelShape(layers, hidden, heads, kv, hidden // heads, inter, vocab, tied, True)


# Published config.json numbers of common hub ids, so that planning needs no network.
# Parameter counts (param_count): 0.49 B, 1.54 B, 3.09 B, 7.62 B, 14.77 B, 32.76 B, 72.71 B.
_QWEN25 = {
    "0.5B": _qwen25(24, 896, 14, 2, 4864, 151936, True),
    "1.5B": _qwen25(28, 1536, 12, 2, 8960, 151936, True),
    "3B": _qwen25(36, 2048, 16, 2, 11008, 151936, True),
    "7B": _qwen25(28, 3584, 28, 4, 18944, 152064, False),
    "14B": _qwen25(48, 5120, 40, 8, 13824, 152064, False),
    "32B": _qwen25(64, 5120, 40, 8, 27648, 152064, False),
    "72B": _qwen25(80, 8192, 64, 8, 29568, 152064, False),
}
KNOWN_SHAPES: dict[str, ModelShape] = {
    **{f"Qwen/Qwen2.5-{size}": shape for size, shape in _QWEN25.items()},
    **{f"Qwen/Qwen2.5-{size}-Instruct": shape for size, shape in _QWEN25.items()},
    "Qwen/Qwen2.5-Math-7B": _QWEN25["7B"],
    "Qwen/Qwen2.5-Math-7B-Instruct": _QWEN25["7B"],
}

# ----------------------------------------------------------------------------- parameters


def layer_param_count(shape: ModelShape) -> int:
    """Parameters of one decoder layer.

    ``q: h·(H·d)``, ``k, v: h·(K·d)`` each (+ their biases for Qwen2), ``o: (H·d)·h``,
    ``gate, up, down: 3·h·i``, two RMSNorms ``2·h`` (+ ``2·d`` for Qwen3's q/k norms), with
    ``H`` heads, ``K`` key-value heads and ``d`` the head dimension.
    """
    q, kv = shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim
    attn = shape.hidden * (q + 2 * kv) + q * shape.hidden
    if shape.qkv_bias:
        attn += q + 2 * kv
    norms = 2 * shape.hidden + (2 * shape.head_dim if shape.qk_norm else 0)
    return attn + 3 * shape.hidden * shape.intermediate + norms


def root_param_count(shape: ModelShape) -> int:
    """Parameters outside the layers: embeddings ``V·h``, final norm ``h``, LM head ``V·h``."""
    embed = shape.vocab * shape.hidden
    return embed + shape.hidden + (0 if shape.tied else embed)


def param_count(shape: ModelShape) -> int:
    """Total parameters ``P = L·layer + root`` (a tied LM head counted once)."""
    return shape.layers * layer_param_count(shape) + root_param_count(shape)


# ----------------------------------------------------------------------------- per token


def kv_bytes_per_token(shape: ModelShape, itemsize: int) -> int:
    """KV cache of one token: ``2 (K and V) · L · K · d · c``."""
    return 2 * shape.layers * shape.kv_heads * shape.head_dim * itemsize


def layer_activation_bytes(shape: ModelShape, itemsize: int) -> int:
    """Tensors one decoder layer saves for backward, per token: ``c·(8h + 4i) + 8h``.

    Counted for HF Qwen2/Llama with a fused (SDPA/flash) attention kernel, so no ``T²`` scores:
    each RMSNorm keeps its fp32 upcast (``4h``) and its output (``c·h``); the q/k/v input
    (``c·h``); attention's q, k, v (k, v repeated to all heads) and output (``4·c·h``); the
    gate/up input (``c·h``); gate, up, SiLU(gate) and their product (``4·c·i``).
    """
    h, i = shape.hidden, shape.intermediate
    return itemsize * (8 * h + 4 * i) + 8 * h


# ----------------------------------------------------------------------------- the plan


_DENSE_TYPES = ("qwen2", "qwen3", "llama", "mistral")


def shape_from_config(config: dict[str, Any]) -> ModelShape:
    """A :class:`ModelShape` from a Hugging Face ``config.json`` mapping."""
    kind = config.get("model_type")
    if kind not in _DENSE_TYPES:
        raise UserError(f"the dry-run plans dense {'/'.join(_DENSE_TYPES)} models; model_type "
                        f"{kind!r} is not one of them.")  # fmt: skip
    try:
        hidden, heads = int(config["hidden_size"]), int(config["num_attention_heads"])
        dtype = str(config.get("torch_dtype") or config.get("dtype") or "float32")
        return ModelShape(
            layers=int(config["num_hidden_layers"]), hidden=hidden, heads=heads,
            kv_heads=int(config.get("num_key_value_heads") or heads),
            head_dim=int(config.get("head_dim") or hidden // heads),
            intermediate=int(config["intermediate_size"]), vocab=int(config["vocab_size"]),
            tied=bool(config.get("tie_word_embeddings", False)),
            qkv_bias=kind == "qwen2" or bool(config.get("attention_bias", False)),
            qk_norm=kind == "qwen3",
            dtype=dtype.removeprefix("torch.") if dtype.removeprefix("torch.") in ITEMSIZE
            else "float32",
        )  # fmt: skip
    except (KeyError, TypeError, ValueError) as err:
        raise UserError(f"config.json: missing or bad architecture field {err}.") from None


def load_shape(path: str) -> tuple[ModelShape, str]:
    """The architecture of ``path`` and where it came from, without loading any weights.

    A local directory's ``config.json``, else :data:`KNOWN_SHAPES`, else
    ``AutoConfig.from_pretrained`` (downloads config.json only).
    """
    if Path(path).is_dir():
        file = Path(path) / "config.json"
        try:
            return shape_from_config(json.loads(file.read_text())), str(file)
        except (OSError, json.JSONDecodeError) as err:
            raise UserError(f"cannot read the architecture from {file}: {err}. Point "
                            "model.path at a Hugging Face checkpoint directory.") from None
    if path in KNOWN_SHAPES:
        return KNOWN_SHAPES[path], f"{path} (built-in table of published configs)"
    try:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(path).to_dict()
    except (OSError, ValueError, KeyError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(
            f"the dry-run could not get the architecture of {path!r} ({first}). Give "
            "model.path as a local directory holding the model's config.json (the weights are "
            "not needed), or run where the Hugging Face hub is reachable."
        ) from None
    return shape_from_config(config), f"{path} (config.json from the hub)"
