"""Reduction of per-token losses to a scalar: one function, four named modes.

Every mode is written as ``sum of per-token (or per-sequence) terms / denominator``, and the
denominators can be given for the *whole optimizer mini-batch* (across micro-batches and
ranks). Each micro-batch then contributes its exact share, so gradient accumulation over any
split reproduces the gradient of the unsplit mini-batch.

Modes (``m`` is the response mask, ``L`` the per-token loss, ``n_seq`` the number of sequences
with at least one valid token):

- ``token-mean``: ``Σ_{i,t} m·L / Σ_{i,t} m``. Every token weighs the same (DAPO; the paper's
  default).
- ``seq-mean-token-mean``: ``(1/n_seq) Σ_i (Σ_t m·L / Σ_t m)``. Original GRPO: each response
  weighs the same, its tokens share its weight.
- ``seq-mean-token-sum``: ``(1/n_seq) Σ_i Σ_t m·L``. Long responses weigh more.
- ``seq-mean-token-sum-norm``: ``Σ_{i,t} m·L / (n_seq · C)`` with a constant ``C`` (default:
  the padded length ``T``; Dr. GRPO uses the generation budget). No length normalisation, so
  no length bias; the constant only sets the scale.

All-masked input: a mini-batch with no valid token has a zero loss (``0 / max(count, 1)``), so
a step with nothing to learn from is a no-op instead of a NaN.
"""

from __future__ import annotations

from typing import Literal, NamedTuple, get_args

import torch

from entropyrl._checks import as_bool_mask, check_choice, check_float, check_ndim

AggregationMode = Literal[
    "token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"
]
AGGREGATION_MODES: tuple[str, ...] = get_args(AggregationMode)


class Denominators(NamedTuple):
    """Counts over the whole optimizer mini-batch (all micro-batches, all ranks).

    Attributes:
        n_tokens: number of valid response tokens.
        n_seqs: number of sequences with at least one valid token.
    """

    n_tokens: int
    n_seqs: int

    @staticmethod
    def of(mask: torch.Tensor) -> Denominators:
        """Counts of one mask ``[B, T]``; sum several of these for a split mini-batch."""
        m = mask.bool()
        return Denominators(int(m.sum()), int(m.any(dim=-1).sum()))

    def __add__(self, other: object) -> Denominators:
        if not isinstance(other, Denominators):
            return NotImplemented
        return Denominators(self.n_tokens + other.n_tokens, self.n_seqs + other.n_seqs)


def aggregate(
    values: torch.Tensor,
    mask: torch.Tensor,
    mode: AggregationMode = "token-mean",
    *,
    denominators: Denominators | None = None,
    norm_constant: float | None = None,
) -> torch.Tensor:
    """Reduce per-token values ``[B, T]`` under ``mask`` ``[B, T]`` to a scalar.

    Args:
        values: per-token losses, float ``[B, T]``; masked positions may hold anything finite.
        mask: response mask ``[B, T]`` (bool or 0/1).
        mode: one of :data:`AGGREGATION_MODES` (formulas in the module docstring).
        denominators: global counts when this batch is one part of a larger mini-batch; by
            default the counts of ``mask`` itself.
        norm_constant: ``C`` of ``seq-mean-token-sum-norm``; default ``T``.

    Returns:
        A scalar tensor (keeps the autograd graph of ``values``).
    """
    check_float("values", values)
    check_ndim("values", values, 2, "[B, T]")
    m = as_bool_mask("mask", mask, values, "values")
    check_choice("mode", mode, AGGREGATION_MODES)
    # torch.where rather than multiplication: a NaN/inf at a padded position must not leak.
    masked = torch.where(m, values, torch.zeros((), dtype=values.dtype, device=values.device))
    n_tokens: int | torch.Tensor
    n_seqs: int | torch.Tensor
    if denominators is not None:
        n_tokens, n_seqs = max(denominators.n_tokens, 1), max(denominators.n_seqs, 1)
    else:
        # This batch's own counts, kept on its device (no host read). On the CPU, dividing by
        # an integer tensor gives the same bits as dividing by the same Python int.
        n_tokens = m.sum().clamp(min=1)
        n_seqs = m.any(dim=-1).sum().clamp(min=1)
    if mode == "token-mean":
        return masked.sum() / n_tokens
    if mode == "seq-mean-token-mean":
        per_seq = masked.sum(dim=-1) / m.sum(dim=-1).clamp(min=1)
        return per_seq.sum() / n_seqs
    if mode == "seq-mean-token-sum":
        return masked.sum() / n_seqs
    constant = float(values.shape[-1]) if norm_constant is None else float(norm_constant)
    if constant <= 0:
        raise ValueError(f"norm_constant: expected a positive number, got {norm_constant!r}")
    if isinstance(n_seqs, torch.Tensor):
        # n_seq·C in float64, as the Python product of the other branch.
        return masked.sum() / (n_seqs.double() * constant).to(values.dtype)
    return masked.sum() / (n_seqs * constant)


def masked_sum(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum of ``values`` over the true positions of a bool ``mask`` (NaN elsewhere ignored)."""
    zero = torch.zeros((), dtype=values.dtype, device=values.device)
    return torch.where(mask, values, zero).sum()


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over the true positions of a bool ``mask`` (0 when none)."""
    return masked_sum(values, mask) / mask.sum().clamp(min=1)
