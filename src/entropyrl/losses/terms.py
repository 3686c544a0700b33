"""Optional per-token terms of the objective: entropy bonus, reference KL, truncated IS weights.

- Entropy bonus: ``−α·H_t`` (maximising entropy). The paper finds it very sensitive: α = 0.01
  makes entropy explode, 0.005 is stable but no better than none.
- Reference-policy KL ``β·KL(π_θ‖π_ref)`` estimated per sampled token from
  ``x = log π_ref − log π_θ`` with Schulman's estimators::

      k1 = −x                  (unbiased, can be negative)
      k2 = x² / 2              (biased, low variance)
      k3 = exp(x) − x − 1      (unbiased, non-negative)

- Truncated importance sampling (Yao et al. 2025, "Your Efficient RL Framework Secretly Brings
  You Off-Policy RL Training"): the rollout engine samples from π_sampler, which differs from
  the trainer's π_old of the same weights (other kernels, precision, stale weights). Each
  token's policy-gradient term is weighted by ``w = min(π_old / π_sampler, C)``, detached.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch

from entropyrl._checks import check_choice, check_same_shape

KLEstimator = Literal["k1", "k2", "k3"]
KL_ESTIMATORS: tuple[str, ...] = get_args(KLEstimator)

# Beyond this, exp() in k3 overflows float32; such tokens already have a huge penalty.
_MAX_LOG_RATIO = 20.0


def entropy_bonus(entropy: torch.Tensor, coef: float) -> torch.Tensor:
    """Per-token entropy term ``−coef·H`` ``[B, T]`` (adding it to the loss raises entropy)."""
    return -coef * entropy


def reference_kl(
    logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: KLEstimator = "k3"
) -> torch.Tensor:
    """Per-token estimate of KL(π_θ‖π_ref) at the sampled tokens ``[B, T]``.

    Args:
        logprobs: log π_θ ``[B, T]`` (with grad).
        ref_logprobs: log π_ref of the same tokens ``[B, T]``.
        estimator: ``k1``, ``k2`` or ``k3`` (formulas in the module docstring).
    """
    check_same_shape("logprobs", logprobs, ref_logprobs=ref_logprobs)
    check_choice("estimator", estimator, KL_ESTIMATORS)
    x = (ref_logprobs - logprobs).clamp(-_MAX_LOG_RATIO, _MAX_LOG_RATIO)
    if estimator == "k1":
        return -x
    if estimator == "k2":
        return 0.5 * x.square()
    return torch.expm1(x) - x


def truncated_is_weights(
    logprobs: torch.Tensor, sampler_logprobs: torch.Tensor, cap: float
) -> torch.Tensor:
    """Per-token weights ``min(exp(log π_old − log π_sampler), cap)`` ``[B, T]``, detached.

    Args:
        logprobs: log π_old of the sampled tokens under the trainer ``[B, T]``.
        sampler_logprobs: log π_sampler of the same tokens, as the engine reported them
            ``[B, T]``.
        cap: the truncation ``C > 0``; weights never exceed it.
    """
    check_same_shape("logprobs", logprobs, sampler_logprobs=sampler_logprobs)
    if not cap > 0:
        raise ValueError(f"cap: expected a truncation C > 0, got {cap}")
    with torch.no_grad():
        x = (logprobs - sampler_logprobs).clamp(max=_MAX_LOG_RATIO)
        return torch.exp(x).clamp(max=cap)
