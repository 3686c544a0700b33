"""Clip-Cov loss (Cui et al. 2025, §4, Eq. 11): PPO with a few high-covariance tokens detached.

Per token, with the selection ``S`` from :func:`entropyrl.covariance.select_clip_cov`::

    L_i = 0                                           if i ∈ S  (no gradient)
    L_i = max(−A_i·r_i, −A_i·clip(r_i, 1 − ε_low, 1 + ε_high))   otherwise

Detached tokens keep their place in the aggregation denominator, as in the reference code, so
the selection only removes gradient, it does not rescale the others.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from entropyrl._checks import check_fraction
from entropyrl.losses.base import (
    PolicyLoss,
    check_policy_inputs,
    check_selected,
    ratio_metrics,
    ratio_of,
    zero_masked,
)
from entropyrl.losses.ppo import PPOClip, clip_metrics, clipped_surrogate


@dataclass(frozen=True)
class ClipCovConfig:
    """Clip-Cov hyper-parameters (paper defaults).

    Attributes:
        ratio: fraction ``r`` of valid tokens to detach (2e-4 = 0.02%).
        cov_low: ``ω_low``, lower covariance bound (exclusive).
        cov_high: ``ω_high``, upper covariance bound (exclusive).
        clip: PPO clip kept around the loss; tokens it clips are not candidates.
            The reference keeps ε_low = ε_high = 1.
    """

    ratio: float = field(default=2e-4, metadata={"help": "fraction r of tokens detached"})
    cov_low: float = field(default=1.0, metadata={"help": "lower covariance bound ω_low"})
    cov_high: float = field(default=5.0, metadata={"help": "upper covariance bound ω_high"})
    clip: PPOClip = field(
        default_factory=lambda: PPOClip(eps_low=1.0, eps_high=1.0),
        metadata={"help": "PPO clip kept by Clip-Cov"},
    )

    def __post_init__(self) -> None:
        check_fraction("clip_cov.ratio", self.ratio)
        if not (math.isfinite(self.cov_low) and math.isfinite(self.cov_high)):
            raise ValueError("clip_cov.cov_low/cov_high: expected finite bounds")
        if not self.cov_low < self.cov_high:
            raise ValueError(
                f"clip_cov.cov_low: expected cov_low < cov_high, got {self.cov_low} >= "
                f"{self.cov_high}"
            )


def clip_cov_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    selected: torch.Tensor,
    config: ClipCovConfig | None = None,
) -> PolicyLoss:
    """Clip-Cov per-token loss.

    Args:
        logprobs: log π_θ of the sampled tokens ``[B, T]`` (with grad).
        old_logprobs: log π_old ``[B, T]``.
        advantages: per-token advantages ``[B, T]``.
        mask: response mask ``[B, T]``.
        selected: tokens to detach ``[B, T]`` bool: the global mini-batch selection
            (:func:`entropyrl.covariance.select_clip_cov`) split like this micro-batch.
        config: hyper-parameters; its PPO clip (default ε = 1) also applies here.

    Returns:
        Per-token loss and the PPO diagnostics plus ``selected_frac`` (detached tokens / N).
    """
    m = check_policy_inputs(logprobs, old_logprobs, advantages, mask)
    config = config or ClipCovConfig()
    chosen = check_selected(selected, m)
    ratio = ratio_of(logprobs, old_logprobs, m)
    surrogate = clipped_surrogate(ratio.ratio, advantages, config.clip)
    # Zeroing (rather than detaching) also matches the reference's logged loss value; one
    # pass zeroes the selected and the masked tokens (m xor chosen: valid, not selected).
    per_token = zero_masked(surrogate.loss, m ^ chosen.mask)
    metrics = clip_metrics(surrogate, m, ratio.n_valid)
    metrics.update(ratio_metrics(ratio, m))
    metrics["selected_frac"] = chosen.n_tokens / ratio.n_valid.clamp(min=1)
    return PolicyLoss(per_token, metrics, ratio.n_valid)
