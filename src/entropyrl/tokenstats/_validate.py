"""Argument checks of the token-statistics functions: a ``ValueError`` naming the argument."""

from __future__ import annotations

from typing import Any

import torch

from entropyrl._checks import check_float, check_positive, check_same_dtype


def check_tokens(tokens: Any, rows_shape: torch.Size, ref: torch.Tensor, vocab: int) -> None:
    if not isinstance(tokens, torch.Tensor):
        raise ValueError(f"tokens: expected a torch.Tensor, got {type(tokens).__name__}")
    if tokens.dtype == torch.bool or tokens.is_floating_point() or tokens.is_complex():
        raise ValueError(f"tokens: expected an integer tensor of token ids, got {tokens.dtype}")
    if tokens.shape != rows_shape:
        raise ValueError(
            f"tokens: expected shape {list(rows_shape)} (the leading dims of the logits), "
            f"got {list(tokens.shape)}"
        )
    if tokens.device != ref.device:
        raise ValueError(f"tokens: expected device {ref.device}, got {tokens.device}")
    if tokens.numel():
        low, high = (int(v) for v in torch.aminmax(tokens))
        if low < 0 or high >= vocab:
            raise ValueError(f"tokens: expected ids in [0, {vocab}), found ids in [{low}, {high}]")


def check_common(temperature: float, chunk_rows: int | None) -> None:
    check_positive("temperature", temperature)
    if chunk_rows is not None and (
        not isinstance(chunk_rows, int) or isinstance(chunk_rows, bool) or chunk_rows < 1
    ):
        raise ValueError(f"chunk_rows: expected None or an integer >= 1, got {chunk_rows!r}")


def check_rows(name: str, x: Any, last: str) -> None:
    check_float(name, x)
    if x.ndim not in (2, 3) or x.shape[-1] == 0:
        legend = f"[B, T, {last}] or [N, {last}]"
        raise ValueError(f"{name}: expected shape {legend}, got {list(x.shape)}")


def check_head(hidden: Any, weight: Any, bias: Any) -> None:
    check_rows("hidden", hidden, "D")
    check_float("weight", weight)
    if weight.ndim != 2 or weight.shape[1] != hidden.shape[-1] or weight.shape[0] == 0:
        raise ValueError(
            f"weight: expected shape [V, D] with D = {hidden.shape[-1]} (the hidden size), "
            f"got {list(weight.shape)}"
        )
    if bias is not None:
        check_float("bias", bias)
        if bias.shape != weight.shape[:1]:
            expected = list(weight.shape[:1])
            raise ValueError(f"bias: expected shape [V] = {expected}, got {list(bias.shape)}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and t.device != hidden.device:
            raise ValueError(f"{name}: expected device {hidden.device}, got {t.device}")
    check_same_dtype("hidden", hidden, weight=weight, bias=bias)
