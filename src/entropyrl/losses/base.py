"""What every policy loss shares: its result type, input checks and ratio diagnostics.

A policy loss maps per-token tensors of one batch to per-token losses ``[B, T]`` (unreduced;
see :mod:`entropyrl.losses.aggregation` for the reduction) plus named diagnostics. Diagnostics
are masked means over the batch's valid tokens, so a caller that splits a mini-batch can average
them weighted by ``n_tokens`` and obtain the mini-batch value exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from entropyrl._checks import (
    as_bool_mask,
    check_all_finite,
    check_float,
    check_ndim,
    check_same_dtype,
    check_same_shape,
    value_checks_enabled,
)
from entropyrl.losses.aggregation import masked_sum

# exp() of a log-ratio beyond this overflows float32 soon after; the clamp only matters for
# pathological off-policy tokens and keeps the loss finite (gradients there are ~0 anyway
# because PPO clips them or the advantage is tiny relative to the ratio).
LOG_RATIO_LIMIT = 20.0


@dataclass
class PolicyLoss:
    """Result of a per-token policy loss.

    Attributes:
        per_token: loss per token ``[B, T]`` (zero at masked positions), keeps the graph.
        metrics: scalar diagnostics (masked means over valid tokens, detached), keyed by the
            names documented in ``docs/metrics.md`` without the ``loss/`` prefix.
        count: number of valid tokens the means were taken over, a 0-dim integer tensor on
            the batch's device (an ``int`` is accepted too).
    """

    per_token: torch.Tensor
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)
    count: torch.Tensor | int = 0

    @property
    def n_tokens(self) -> int:
        """``count`` as a Python int (reading it waits for the device)."""
        return int(self.count)


def check_policy_inputs(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    check_values: bool = True,
) -> torch.Tensor:
    """Validate the four tensors every policy loss takes; return the mask as bool ``[B, T]``.

    Shapes, dtypes and devices are always checked. The values (no NaN/inf at a valid
    position) are checked when ``check_values`` is true *and* the ``ENTROPYRL_DEBUG_CHECKS``
    switch allows it (:func:`~entropyrl._checks.value_checks_enabled`: by default on CPU
    tensors only, so that a GPU micro-batch never waits for a host read).
    ``check_values=False`` is for callers that check finiteness once on a concatenation.

    Raises:
        ValueError: naming the argument, for a wrong shape/device/dtype or NaN/inf at a valid
            position.
    """
    check_float("logprobs", logprobs)
    check_ndim("logprobs", logprobs, 2, "[B, T]")
    check_float("old_logprobs", old_logprobs)
    check_float("advantages", advantages)
    check_same_shape("logprobs", logprobs, old_logprobs=old_logprobs, advantages=advantages)
    check_same_dtype("logprobs", logprobs, old_logprobs=old_logprobs, advantages=advantages)
    m = as_bool_mask("mask", mask, logprobs, "logprobs")
    if check_values and value_checks_enabled(logprobs):
        check_all_finite(
            {"logprobs": logprobs, "old_logprobs": old_logprobs, "advantages": advantages}, m
        )
    return m


class Ratio(NamedTuple):
    """The importance ratio of a batch and what its diagnostics share ``[B, T]``.

    Attributes:
        log_ratio: ``log π_θ − log π_old``, clamped to ±``LOG_RATIO_LIMIT`` (keeps the graph).
        ratio: ``exp(log_ratio)`` (keeps the graph).
        n_valid: number of valid tokens, a 0-dim integer tensor (no host read).
    """

    log_ratio: torch.Tensor
    ratio: torch.Tensor
    n_valid: torch.Tensor


def ratio_of(logprobs: torch.Tensor, old_logprobs: torch.Tensor, mask: torch.Tensor) -> Ratio:
    """:class:`Ratio` of a batch; ``mask`` is the bool mask of :func:`check_policy_inputs`."""
    log_ratio = (logprobs - old_logprobs).clamp(-LOG_RATIO_LIMIT, LOG_RATIO_LIMIT)
    return Ratio(log_ratio, torch.exp(log_ratio), mask.sum())


def importance_ratio(logprobs: torch.Tensor, old_logprobs: torch.Tensor) -> torch.Tensor:
    """``π_θ / π_old = exp(log π_θ − log π_old)`` per token, log-ratio clamped to ±20."""
    log_ratio = (logprobs - old_logprobs).clamp(-LOG_RATIO_LIMIT, LOG_RATIO_LIMIT)
    return torch.exp(log_ratio)


def ratio_metrics(ratio: Ratio, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """Approximate KL to the behaviour policy and ratio statistics over valid tokens.

    ``approx_kl_k1 = mean(log π_old − log π_θ)`` and ``approx_kl_k3 = mean((r − 1) − log r)``
    (Schulman's estimators of KL(π_old‖π_θ) from samples of π_old; k3 is non-negative).
    Ratio min/max/mean are 1 when no token is valid.
    """
    with torch.no_grad():
        log_ratio = ratio.log_ratio.detach()
        r = ratio.ratio.detach()
        count = ratio.n_valid.clamp(min=1)
        inf = torch.tensor(float("inf"), dtype=r.dtype, device=r.device)
        one = torch.ones((), dtype=r.dtype, device=r.device)
        any_valid = ratio.n_valid > 0
        return {
            "approx_kl_k1": masked_sum(-log_ratio, mask) / count,
            "approx_kl_k3": masked_sum((r - 1) - log_ratio, mask) / count,
            "ratio_mean": torch.where(any_valid, masked_sum(r, mask) / count, one),
            "ratio_min": torch.where(any_valid, torch.where(mask, r, inf).min(), one),
            "ratio_max": torch.where(any_valid, torch.where(mask, r, -inf).max(), one),
        }


def valid_fraction(flags: torch.Tensor, mask: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """Fraction of the ``count`` valid tokens (``mask``) whose bool ``flags`` are set.

    Counts in integers: equal to ``masked_mean(flags.float(), mask)`` (a float32 sum of 0/1
    is exact below 2**24 tokens) without the float copy.
    """
    return (flags & mask).sum() / count.clamp(min=1)


def zero_masked(per_token: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Set masked positions to exactly zero (without letting a NaN there through)."""
    zero = torch.zeros((), dtype=per_token.dtype, device=per_token.device)
    return torch.where(mask, per_token, zero)


class Chosen(NamedTuple):
    """A covariance selection restricted to the valid tokens, and its size.

    Attributes:
        mask: ``selected & mask`` ``[B, T]`` bool (equal to ``selected`` when it passes).
        n_tokens: its number of tokens, a 0-dim integer tensor (no host read).
    """

    mask: torch.Tensor
    n_tokens: torch.Tensor


def check_selected(selected: torch.Tensor, mask: torch.Tensor) -> Chosen:
    """Require a bool selection mask ``[B, T]`` that is a subset of the valid tokens.

    The shape and dtype are always checked; the subset test reads values, so it follows
    ``ENTROPYRL_DEBUG_CHECKS`` like the finite checks.

    Returns:
        ``selected & mask`` and its count, for the caller's loss and ``selected_frac``.
    """
    if selected.shape != mask.shape or selected.dtype != torch.bool:
        raise ValueError(
            f"selected: expected a bool mask of shape {list(mask.shape)}, got dtype "
            f"{selected.dtype} and shape {list(selected.shape)}"
        )
    inside = selected & mask
    # count_nonzero: on the CPU about twice as fast as a bool sum (same int64 count).
    count = torch.count_nonzero(inside)
    if value_checks_enabled(selected) and int(torch.count_nonzero(selected) - count) != 0:
        raise ValueError("selected: expected a subset of the valid tokens of mask")
    return Chosen(inside, count)
