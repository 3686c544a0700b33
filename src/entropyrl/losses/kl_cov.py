"""KL-Cov loss (Cui et al. 2025, §4, Eq. 12): a KL penalty on the highest-covariance tokens.

Per token, with the selection ``S`` from :func:`entropyrl.covariance.select_kl_cov` and
``r = π_θ/π_old``::

    L_i = −A_i·r_i + β·|log π_θ,i − log π_old,i|      if i ∈ S
    L_i = −A_i·r_i                                     otherwise

No PPO clip. On-policy (one update per rollout) the penalty and its gradient are zero at the
first update, so KL-Cov needs several updates per rollout step (the paper makes 8).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from entropyrl._checks import check_fraction
from entropyrl.losses.aggregation import masked_sum
from entropyrl.losses.base import (
    PolicyLoss,
    check_policy_inputs,
    check_selected,
    ratio_metrics,
    ratio_of,
    zero_masked,
)


@dataclass(frozen=True)
class KLCovConfig:
    """KL-Cov hyper-parameters (paper defaults for Qwen2.5-7B).

    Attributes:
        ratio: fraction ``k`` of valid tokens that get the KL penalty (2e-3 = 0.2%; the paper
            uses 2e-4 for 32B).
        beta: coefficient of ``|log π − log π_old|`` on the selected tokens (paper: 1).
    """

    ratio: float = field(default=2e-3, metadata={"help": "fraction k of tokens penalised"})
    beta: float = field(default=1.0, metadata={"help": "KL coefficient β"})

    def __post_init__(self) -> None:
        check_fraction("kl_cov.ratio", self.ratio)
        if not (math.isfinite(self.beta) and self.beta >= 0):
            raise ValueError(f"kl_cov.beta: expected a finite number >= 0, got {self.beta!r}")


def kl_cov_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    selected: torch.Tensor,
    config: KLCovConfig | None = None,
) -> PolicyLoss:
    """KL-Cov per-token loss.

    Args:
        logprobs: log π_θ of the sampled tokens ``[B, T]`` (with grad).
        old_logprobs: log π_old ``[B, T]``.
        advantages: per-token advantages ``[B, T]``.
        mask: response mask ``[B, T]``.
        selected: penalised tokens ``[B, T]`` bool: the global mini-batch selection
            (:func:`entropyrl.covariance.select_kl_cov`) split like this micro-batch.
        config: hyper-parameters (k = 2e-3, β = 1).

    Returns:
        Per-token loss, the ratio diagnostics, ``selected_frac`` and ``kl_penalty`` (mean of
        ``β·|log π_θ − log π_old|`` over valid tokens, counting zero for unselected ones).
    """
    m = check_policy_inputs(logprobs, old_logprobs, advantages, mask)
    config = config or KLCovConfig()
    chosen = check_selected(selected, m)
    ratio = ratio_of(logprobs, old_logprobs, m)
    pg = -advantages * ratio.ratio
    penalty = config.beta * (logprobs - old_logprobs).abs()
    per_token = torch.where(selected, pg + penalty, pg)
    metrics = ratio_metrics(ratio, m)
    metrics["selected_frac"] = chosen.n_tokens / ratio.n_valid.clamp(min=1)
    with torch.no_grad():
        # 0·penalty (not 0) off the selection: a non-finite penalty still shows in the mean.
        off = penalty.detach()
        kept = torch.where(selected, off, 0 * off)
        metrics["kl_penalty"] = masked_sum(kept, m) / ratio.n_valid.clamp(min=1)
    return PolicyLoss(zero_masked(per_token, m), metrics, ratio.n_valid)
