"""PRIME's implicit process rewards and advantages (Cui et al. 2025, arXiv 2502.01456).

The implicit process reward model (PRM) is a causal LM ``π_φ`` trained with outcome labels
only; its token rewards are log-ratios against a frozen reference ``π_ref``:

    r_φ(y_t) = β · (log π_φ(y_t | y_<t) − log π_ref(y_t | y_<t))

The sequence-level implicit reward ``q = Σ_t r_φ(y_t)`` is trained as a logit of the outcome
(cross-entropy, PRIME's online update):

    L(φ) = −mean_i [ l_i·log σ(q_i) + (1 − l_i)·log(1 − σ(q_i)) ]

Advantages combine the process rewards and the outcome rewards, each with a leave-one-out
baseline over the ``K`` responses of a prompt (the paper's Eq. for ``A_t^i``):

    A_t^i = Σ_{s≥t} γ^{s−t} · ( r_φ(y^i_s) − 1/(K−1) · Σ_{j≠i} r̄_φ(y^j) )
            + r_o(y^i) − 1/(K−1) · Σ_{j≠i} r_o(y^j)

with ``r̄_φ(y^j)`` the mean token reward of response ``j`` and ``r_o`` the outcome reward.
verl's PRIME recipe writes the process baseline as ``r_t·K/(K−1) − Σ_j r̄_φ(y^j)/(K−1)``
(the response's own token reward where the paper has its mean) and whitens the returns over
the batch; here the paper's form is used and no whitening is applied.

Shapes: ``B`` responses, ``T`` response positions; masks are ``[B, T]`` bool.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from entropyrl.advantages import Advantages, discounted_returns


def implicit_process_rewards(prm_logprobs: torch.Tensor, ref_logprobs: torch.Tensor,
                             mask: torch.Tensor, beta: float) -> torch.Tensor:
    """``β·(log π_φ − log π_ref)`` at the response tokens, 0 elsewhere; ``[B, T]``."""
    if not beta > 0:
        raise ValueError(f"beta: expected > 0, got {beta}")
    diff = (prm_logprobs - ref_logprobs) * beta
    return torch.where(mask.bool(), diff, torch.zeros_like(diff))


def implicit_prm_loss(prm_logprobs: torch.Tensor, ref_logprobs: torch.Tensor,
                      mask: torch.Tensor, labels: torch.Tensor, beta: float) -> torch.Tensor:
    """PRIME's cross-entropy on the sequence-level implicit reward ``q_i``; a scalar.

    Args:
        prm_logprobs: ``[B, T]`` log π_φ of the response tokens (with gradient).
        ref_logprobs: ``[B, T]`` log π_ref (no gradient needed).
        mask: ``[B, T]`` response tokens.
        labels: ``[B]`` outcome labels in ``[0, 1]`` (1 = verified correct).
        beta: the implicit reward's scale ``β``.
    """
    q = implicit_process_rewards(prm_logprobs, ref_logprobs.detach(), mask, beta).sum(dim=1)
    return F.binary_cross_entropy_with_logits(q, labels.to(q.dtype))


def _leave_one_out(values: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """``mean_{j≠i, g(j)=g(i)} values_j`` for every ``i``; ``[B]``.

    A group of one is its own baseline (its advantage is 0, as in RLOO).
    """
    _, member = torch.unique(group_ids, return_inverse=True)
    n_groups = int(member.max()) + 1 if member.numel() else 0
    zeros = values.new_zeros(n_groups)
    total = zeros.index_add(0, member, values)[member]
    count = zeros.index_add(0, member, torch.ones_like(values))[member]
    others = (count - 1).clamp(min=1)
    return torch.where(count > 1, (total - values) / others, values)


def prime_advantages(process_rewards: torch.Tensor, outcome_scores: torch.Tensor,
                     group_ids: torch.Tensor, mask: torch.Tensor, *,
                     gamma: float = 1.0) -> Advantages:
    """PRIME's advantages (module docstring), float32.

    Args:
        process_rewards: ``[B, T]`` implicit token rewards ``r_φ`` (masked positions ignored).
        outcome_scores: ``[B]`` outcome rewards ``r_o``.
        group_ids: ``[B]`` prompt id of each response.
        mask: ``[B, T]`` response tokens.
        gamma: discount of the process returns, in ``[0, 1]``.

    Returns:
        ``Advantages`` with ``token_advantages [B, T]`` (zero at masked positions),
        ``seq_advantages=None`` and ``returns`` = the process part's returns ``[B, T]``.
    """
    m = mask.bool()
    r = process_rewards.to(torch.float64).masked_fill(~m, 0.0)
    n_tok = m.sum(dim=1)
    mean_r = r.sum(dim=1) / n_tok.clamp(min=1)
    baseline = _leave_one_out(mean_r, group_ids)
    centred = torch.where(m, r - baseline[:, None], torch.zeros_like(r))
    returns = discounted_returns(centred, m, gamma)
    outcome = outcome_scores.to(torch.float64)
    outcome_adv = outcome - _leave_one_out(outcome, group_ids)
    adv = torch.where(m, returns + outcome_adv[:, None], torch.zeros_like(returns))
    return Advantages(adv.to(torch.float32), None, returns.to(torch.float32))
