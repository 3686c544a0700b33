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
    mask: torch.Tensor | None,
    mean_logprob: float | torch.Tensor | None = None,
    mean_advantage: float | torch.Tensor | None = None,
    *,
    dtype: torch.dtype | None = None,
    fill: float = 0.0,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """``cov_i`` of every token, ``fill`` at masked positions (unchecked inputs, detached).

    Args:
        logprobs: ``[B, T]`` log π of the sampled tokens.
        advantages: ``[B, T]`` per-token advantages.
        mask: ``[B, T]`` bool, the valid tokens; None: every position is valid (a caller
            that masks the result itself, e.g. the Clip-Cov selection).
        mean_logprob: ``μ_lp``; default: the mean over this batch's valid tokens. A caller that
            splits a batch over micro-batches or ranks passes the global mean.
        mean_advantage: ``μ_A``, likewise.
        dtype: dtype of the computation (default: that of ``logprobs``; the diagnostics use
            float64, the selection the input dtype as the reference implementation does).
        fill: the value at masked positions (the KL-Cov top-k uses −inf).
        out: with ``mask=None``, a tensor of the result's shape and dtype to write ``cov_i``
            into (it may be ``logprobs`` itself); the selection reuses its buffers this way.

    Returns:
        ``[B, T]`` ``cov_i`` in ``dtype``. Reads nothing on the host.
    """
    dtype = dtype or logprobs.dtype
    lp = logprobs.detach().to(dtype)
    adv = advantages.detach().to(dtype)
    if mask is None:
        mean_logprob = lp.mean() if mean_logprob is None else mean_logprob
        mean_advantage = adv.mean() if mean_advantage is None else mean_advantage
        return torch.sub(lp, mean_logprob, out=out).mul_(adv - mean_advantage)
    if out is not None:
        raise ValueError("out: only supported without a mask")
    if mean_logprob is None or mean_advantage is None:
        zero = torch.zeros((), dtype=dtype, device=logprobs.device)
        n = mask.sum().clamp(min=1)
        if mean_logprob is None:
            mean_logprob = torch.where(mask, lp, zero).sum() / n
        if mean_advantage is None:
            mean_advantage = torch.where(mask, adv, zero).sum() / n
    # Anything at a masked position (NaN included) is replaced by ``fill``.
    return torch.where(mask, (lp - mean_logprob).mul_(adv - mean_advantage), fill)
