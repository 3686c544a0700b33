"""The per-token covariance score of the paper (Cui et al. 2025, Eq. 10), in one place.

    cov_i = (log π_i − μ_lp) · (A_i − μ_A)

with ``μ_lp`` and ``μ_A`` the means over the ``N`` valid tokens of a batch. The Clip-Cov /
KL-Cov selection (:mod:`entropyrl.covariance.selection`) and the entropy-dynamics diagnostics
(:mod:`entropyrl.dynamics`) both score tokens with :func:`centred_product`.
"""

from __future__ import annotations

import torch


def centred_product(
    logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    mean_logprob: float | torch.Tensor | None = None,
    mean_advantage: float | torch.Tensor | None = None,
    *,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """``cov_i`` of every token, zero at masked positions (unchecked inputs, detached).

    Args:
        logprobs: ``[B, T]`` log π of the sampled tokens.
        advantages: ``[B, T]`` per-token advantages.
        mask: ``[B, T]`` bool, the valid tokens.
        mean_logprob: ``μ_lp``; default: the mean over this batch's valid tokens. A caller that
            splits a batch over micro-batches or ranks passes the global mean.
        mean_advantage: ``μ_A``, likewise.
        dtype: dtype of the computation (default: that of ``logprobs``; the diagnostics use
            float64, the selection the input dtype as the reference implementation does).

    Returns:
        ``[B, T]`` ``cov_i`` in ``dtype``.
    """
    dtype = dtype or logprobs.dtype
    zero = torch.zeros((), dtype=dtype, device=logprobs.device)
    lp = torch.where(mask, logprobs.detach().to(dtype), zero)
    adv = torch.where(mask, advantages.detach().to(dtype), zero)
    if mean_logprob is None or mean_advantage is None:
        n = max(int(mask.sum()), 1)
        mean_logprob = lp.sum() / n if mean_logprob is None else mean_logprob
        mean_advantage = adv.sum() / n if mean_advantage is None else mean_advantage
    return torch.where(mask, (lp - mean_logprob) * (adv - mean_advantage), zero)
