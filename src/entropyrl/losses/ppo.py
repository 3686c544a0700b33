"""PPO clipped surrogate (with clip-higher and dual-clip) and the plain policy gradient.

PPO (Schulman et al. 2017, Eq. 7) per token, with ratio ``r = π_θ/π_old`` and advantage ``A``::

    L = max(−A·r, −A·clip(r, 1 − ε_low, 1 + ε_high))

``ε_low ≠ ε_high`` is DAPO's clip-higher (ε_high = 0.28 in the paper's comparison). The
optional dual clip (Ye et al. 2020) bounds the loss of negative-advantage tokens whose ratio
exploded: ``L = min(L, −A·c)`` for ``A < 0``, with ``c > 1`` (commonly 3).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from entropyrl._checks import check_positive
from entropyrl.losses.base import (
    PolicyLoss,
    check_policy_inputs,
    ratio_metrics,
    ratio_of,
    valid_fraction,
    zero_masked,
)


@dataclass(frozen=True)
class PPOClip:
    """Clip parameters; ε are offsets of the ratio from 1 (fractions, not percents).

    Attributes:
        eps_low: lower clip, the ratio is kept above ``1 − eps_low``.
        eps_high: upper clip, the ratio is kept below ``1 + eps_high`` (clip-higher: 0.28).
        dual_clip: constant ``c > 1`` of dual-clip PPO, or None to disable.
    """

    eps_low: float = field(default=0.2, metadata={"help": "PPO lower clip ε_low"})
    eps_high: float = field(
        default=0.2, metadata={"help": "PPO upper clip ε_high (clip-higher: 0.28)"}
    )
    dual_clip: float | None = field(
        default=None, metadata={"help": "dual-clip constant c > 1 (null disables)"}
    )

    def __post_init__(self) -> None:
        check_positive("eps_low", self.eps_low, allow_zero=True)
        check_positive("eps_high", self.eps_high, allow_zero=True)
        if self.dual_clip is not None and not self.dual_clip > 1:
            raise ValueError(f"dual_clip: expected a constant > 1 or None, got {self.dual_clip!r}")


class ClippedSurrogate(NamedTuple):
    """Per-token clipped surrogate and which tokens each clip caught (no reduction).

    Attributes:
        loss: per-token loss ``[B, T]`` (not yet masked).
        clipped_high: ``A > 0`` and ratio above ``1 + ε_high`` (gradient cut) ``[B, T]``.
        clipped_low: ``A < 0`` and ratio below ``1 − ε_low`` (gradient cut) ``[B, T]``.
        dual_clipped: ``A < 0`` tokens bounded by the dual clip ``[B, T]``.
    """

    loss: torch.Tensor
    clipped_high: torch.Tensor
    clipped_low: torch.Tensor
    dual_clipped: torch.Tensor


def clipped_surrogate(
    ratio: torch.Tensor, advantages: torch.Tensor, clip: PPOClip
) -> ClippedSurrogate:
    """Evaluate ``max(−A·r, −A·clip(r))`` (and the dual clip) per token ``[B, T]``."""
    neg_adv = -advantages
    unclipped = neg_adv * ratio
    clipped = neg_adv * ratio.clamp(1.0 - clip.eps_low, 1.0 + clip.eps_high)
    loss = torch.maximum(unclipped, clipped)
    with torch.no_grad():
        cut = clipped > unclipped
        dual = torch.zeros_like(cut)
    if clip.dual_clip is not None:
        bound = -advantages * clip.dual_clip
        with torch.no_grad():
            dual = (advantages < 0) & (loss > bound)
        loss = torch.where(advantages < 0, torch.minimum(loss, bound), loss)
    return ClippedSurrogate(loss, cut & (ratio > 1.0), cut & (ratio < 1.0), dual)


def ppo_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip: PPOClip | None = None,
) -> PolicyLoss:
    """PPO clipped surrogate per token.

    Args:
        logprobs: log π_θ of the sampled tokens ``[B, T]`` (with grad).
        old_logprobs: log π_old of the same tokens ``[B, T]`` (behaviour policy, no grad).
        advantages: per-token advantages ``[B, T]``.
        mask: response mask ``[B, T]``.
        clip: clip parameters (default ε_low = ε_high = 0.2, no dual clip).

    Returns:
        Per-token loss and the diagnostics ``clipfrac`` (either clip active), ``clipfrac_high``,
        ``clipfrac_low``, ``dual_clipfrac``, ``approx_kl_k1``, ``approx_kl_k3``, ``ratio_mean``,
        ``ratio_min``, ``ratio_max``.
    """
    m = check_policy_inputs(logprobs, old_logprobs, advantages, mask)
    clip = clip or PPOClip()
    ratio = ratio_of(logprobs, old_logprobs, m)
    surrogate = clipped_surrogate(ratio.ratio, advantages, clip)
    metrics = clip_metrics(surrogate, m, ratio.n_valid)
    metrics.update(ratio_metrics(ratio, m))
    return PolicyLoss(zero_masked(surrogate.loss, m), metrics, ratio.n_valid)


def clip_metrics(
    surrogate: ClippedSurrogate, mask: torch.Tensor, count: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Fractions of the ``count`` valid tokens caught by each clip."""
    high, low = surrogate.clipped_high, surrogate.clipped_low
    # The two clips are exclusive (r > 1 vs r < 1), so their union counts each token once.
    return {
        "clipfrac": valid_fraction(high | low, mask, count),
        "clipfrac_high": valid_fraction(high, mask, count),
        "clipfrac_low": valid_fraction(low, mask, count),
        "dual_clipfrac": valid_fraction(surrogate.dual_clipped, mask, count),
    }


def pg_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
) -> PolicyLoss:
    """Vanilla policy gradient ``L = −A · log π_θ`` per token (REINFORCE; no ratio, no clip).

    Its gradient is ``−A·∇log π_θ``, the exact on-policy gradient the paper's entropy-dynamics
    analysis (§2, vanilla PG) assumes. ``old_logprobs`` only feeds the KL/ratio diagnostics.
    """
    m = check_policy_inputs(logprobs, old_logprobs, advantages, mask)
    ratio = ratio_of(logprobs.detach(), old_logprobs, m)
    metrics = ratio_metrics(ratio, m)
    return PolicyLoss(zero_masked(-advantages * logprobs, m), metrics, ratio.n_valid)
