"""Advantage estimators for outcome rewards, grouped by prompt: one registry keyed by name.

Every estimator takes one outcome score per response ``[B]``, the prompt id of each response
``[B]`` (responses to the same prompt share an id; groups may differ in size, ids need not be
sorted or contiguous) and the response mask ``[B, T]``, and returns per-token advantages
``[B, T]`` (float32, zero at masked positions). Formulas (``r`` score, ``g`` the response's
group, ``n_g`` its size; see docs/advantages.md):

- ``grpo``: ``(r − mean_g) / (std_g + ε)``, ``std_g`` the *unbiased* group std (``n_g − 1``
  divisor, as ``torch.std`` in the reference GRPO implementations), ``ε = 1e-6``.
- ``drgrpo``: ``r − mean_g`` (Dr. GRPO drops the std).
- ``rloo``: ``r_i − mean_{j≠i} r_j`` (leave-one-out baseline).
- ``reinforce_pp``: the score at the last valid token plus optional per-token rewards,
  discounted return-to-go, then batch whitening ``(G − μ) / (σ + ε)`` over all valid tokens.
- ``reinforce_pp_baseline``: ``r − mean_g`` broadcast over the tokens, then divided by the
  batch std ``σ + ε`` over all valid tokens (no batch-mean shift: see the function).

Shared rules:

- A group whose scores are all equal (a group of one included) gets exactly zero advantages,
  never NaN; the equality is tested exactly, not through a std that rounding may leave tiny.
- Batch whitening of values that are all equal (all zero included) gives zeros.
- Group statistics are taken in float64 over every response's score; the response mask only
  decides where the token advantages go. A row with no valid token therefore still counts in
  its group (its outcome is defined), gets zero token advantages and, for REINFORCE++, adds
  no token to the whitening. An all-masked batch gives all-zero token advantages.
- Everything is vectorised over groups (``torch.unique`` + ``index_add_``); the only loop is
  over time for REINFORCE++ returns with ``γ < 1``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, NamedTuple, get_args

import torch

from entropyrl._checks import (
    as_bool_mask,
    check_finite,
    check_float,
    check_fraction,
    check_ndim,
    check_positive,
    check_same_shape,
)

AdvantageName = Literal["grpo", "drgrpo", "rloo", "reinforce_pp", "reinforce_pp_baseline"]
ADVANTAGE_NAMES: tuple[str, ...] = get_args(AdvantageName)
DEFAULT_EPS = 1e-6


class Advantages(NamedTuple):
    """Output of an advantage estimator.

    Attributes:
        token_advantages: ``[B, T]`` float32, the advantage of each response token, zero at
            masked positions. This is what the policy loss consumes.
        seq_advantages: ``[B]`` float32, the single advantage each response's tokens share
            (every estimator but ``reinforce_pp``, whose advantage varies along the response;
            there it is ``None``). Defined also for rows with no valid token.
        returns: ``[B, T]`` float32 discounted return-to-go before whitening (``reinforce_pp``
            only, zero at masked positions), else ``None``.
    """

    token_advantages: torch.Tensor
    seq_advantages: torch.Tensor | None
    returns: torch.Tensor | None


class _Inputs(NamedTuple):
    scores: torch.Tensor  # [B] float64
    group_ids: torch.Tensor  # [B] integer
    mask: torch.Tensor  # [B, T] bool


class _Groups(NamedTuple):
    member: torch.Tensor  # [B] group of each response, contiguous in [0, n_groups)
    size: torch.Tensor  # [n_groups] float64
    mean: torch.Tensor  # [n_groups] float64
    constant: torch.Tensor  # [n_groups] bool, all scores of the group equal


def _validate(
    scores: torch.Tensor, group_ids: torch.Tensor, response_mask: torch.Tensor
) -> _Inputs:
    """Check shapes, dtypes and finiteness at the boundary; promote scores to float64."""
    check_float("scores", scores)
    check_ndim("scores", scores, 1, "[B]")
    if not isinstance(group_ids, torch.Tensor):
        raise ValueError(f"group_ids: expected a torch.Tensor, got {type(group_ids).__name__}")
    if group_ids.is_floating_point() or group_ids.is_complex() or group_ids.dtype == torch.bool:
        raise ValueError(f"group_ids: expected an integer tensor (int64), got {group_ids.dtype}")
    check_same_shape("scores", scores, group_ids=group_ids)
    if not isinstance(response_mask, torch.Tensor):
        raise ValueError(
            f"response_mask: expected a torch.Tensor, got {type(response_mask).__name__}"
        )
    check_ndim("response_mask", response_mask, 2, "[B, T]")
    if response_mask.shape[0] != scores.shape[0]:
        raise ValueError(
            f"response_mask: expected shape [B, T] with B = {scores.shape[0]} (the length of "
            f"scores), got {list(response_mask.shape)}"
        )
    if response_mask.device != scores.device:
        raise ValueError(
            f"response_mask: expected device {scores.device} (the device of scores), "
            f"got {response_mask.device}"
        )
    mask = as_bool_mask("response_mask", response_mask, response_mask, "response_mask")
    check_finite("scores", scores)
    return _Inputs(scores.detach().to(torch.float64), group_ids, mask)


def _group_stats(scores: torch.Tensor, group_ids: torch.Tensor) -> _Groups:
    """Per-group size, mean and whether all scores are equal, without a loop over groups."""
    uniq, index = torch.unique(group_ids, return_inverse=True)
    n_groups = uniq.numel()
    zeros = scores.new_zeros(n_groups)
    count = zeros.index_add(0, index, torch.ones_like(scores))
    mean = zeros.index_add(0, index, scores) / count.clamp(min=1)
    # Exact equality (max == min) rather than std == 0: with 0.1-valued scores the float mean
    # can differ from every score by one ulp and leave a tiny non-zero advantage.
    high = zeros.scatter_reduce(0, index, scores, reduce="amax", include_self=False)
    low = zeros.scatter_reduce(0, index, scores, reduce="amin", include_self=False)
    return _Groups(index, count, mean, high == low)


def _broadcast(seq: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``[B]`` → ``[B, T]``: each row's value at its valid tokens, zero elsewhere."""
    return torch.where(mask, seq[:, None], torch.zeros((), dtype=seq.dtype, device=seq.device))


def _sequence_result(seq: torch.Tensor, mask: torch.Tensor) -> Advantages:
    """One advantage per response, broadcast over its tokens; float32 outputs."""
    seq32 = seq.to(torch.float32)
    return Advantages(_broadcast(seq32, mask), seq32, None)


def _batch_std(values: torch.Tensor, mask: torch.Tensor) -> tuple[float, float, bool]:
    """Mean, unbiased std and "all equal" of ``values [B, T]`` over the valid tokens."""
    n = int(mask.sum())
    if n == 0:
        return 0.0, 0.0, True
    valid = values[mask]
    mean = valid.sum() / n
    var = ((valid - mean) ** 2).sum() / max(n - 1, 1)
    return float(mean), float(var.sqrt()), bool(valid.max() == valid.min())


def grpo_advantages(
    scores: torch.Tensor,
    group_ids: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    eps: float = DEFAULT_EPS,
) -> Advantages:
    """GRPO: ``A_i = (r_i − mean_g) / (std_g + ε)`` broadcast over response ``i``'s tokens.

    ``std_g = sqrt(Σ_{j∈g} (r_j − mean_g)² / (n_g − 1))`` is the unbiased std (the
    ``torch.std`` default of the reference implementations); groups whose scores are all
    equal (including ``n_g = 1``) get ``A = 0``.

    Args:
        scores: ``[B]`` outcome reward of each response.
        group_ids: ``[B]`` integer prompt id of each response.
        response_mask: ``[B, T]`` bool or 0/1, the response tokens.
        eps: added to the std; ``> 0``.

    Returns:
        ``Advantages`` with ``token_advantages [B, T]`` and ``seq_advantages [B]``.
    """
    check_positive("eps", eps)
    x = _validate(scores, group_ids, response_mask)
    g = _group_stats(x.scores, x.group_ids)
    dev = x.scores - g.mean[g.member]
    sq = x.scores.new_zeros(g.size.numel()).index_add(0, g.member, dev**2)
    std = (sq / (g.size - 1).clamp(min=1)).sqrt()
    adv = dev / (std[g.member] + eps)
    adv = adv.masked_fill(g.constant[g.member], 0.0)
    return _sequence_result(adv, x.mask)


def drgrpo_advantages(
    scores: torch.Tensor, group_ids: torch.Tensor, response_mask: torch.Tensor
) -> Advantages:
    """Dr. GRPO: ``A_i = r_i − mean_g`` (no std normalisation), broadcast over the tokens.

    Args:
        scores: ``[B]`` outcome reward of each response.
        group_ids: ``[B]`` integer prompt id of each response.
        response_mask: ``[B, T]`` bool or 0/1, the response tokens.

    Returns:
        ``Advantages`` with ``token_advantages [B, T]`` and ``seq_advantages [B]``.
    """
    x = _validate(scores, group_ids, response_mask)
    g = _group_stats(x.scores, x.group_ids)
    adv = (x.scores - g.mean[g.member]).masked_fill(g.constant[g.member], 0.0)
    return _sequence_result(adv, x.mask)


def rloo_advantages(
    scores: torch.Tensor, group_ids: torch.Tensor, response_mask: torch.Tensor
) -> Advantages:
    """RLOO: ``A_i = r_i − (Σ_{j∈g} r_j − r_i) / (n_g − 1)``; ``A_i = 0`` when ``n_g = 1``.

    Args:
        scores: ``[B]`` outcome reward of each response.
        group_ids: ``[B]`` integer prompt id of each response.
        response_mask: ``[B, T]`` bool or 0/1, the response tokens.

    Returns:
        ``Advantages`` with ``token_advantages [B, T]`` and ``seq_advantages [B]``.
    """
    x = _validate(scores, group_ids, response_mask)
    g = _group_stats(x.scores, x.group_ids)
    n = g.size[g.member]
    total = g.mean[g.member] * n
    adv = x.scores - (total - x.scores) / (n - 1).clamp(min=1)
    adv = adv.masked_fill(g.constant[g.member], 0.0)
    return _sequence_result(adv, x.mask)


def discounted_returns(
    rewards: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0
) -> torch.Tensor:
    """Return-to-go over the valid tokens: ``G_t = r_t + γ·G_{t'}``, ``t'`` the next valid token.

    Masked positions are skipped (they neither add reward nor count as a discount step) and
    hold ``0``.

    Args:
        rewards: ``[B, T]`` per-token rewards (values at masked positions are ignored).
        mask: ``[B, T]`` bool.
        gamma: discount in ``[0, 1]``.

    Returns:
        ``[B, T]`` returns in the dtype of ``rewards``.
    """
    zero = torch.zeros((), dtype=rewards.dtype, device=rewards.device)
    r = torch.where(mask, rewards, zero)
    if gamma == 1.0:
        # Undiscounted: a reverse cumulative sum, no loop over time.
        return torch.where(mask, r.flip(-1).cumsum(-1).flip(-1), zero)
    out = torch.zeros_like(r)
    running = r.new_zeros(r.shape[0])
    for t in range(r.shape[1] - 1, -1, -1):
        running = torch.where(mask[:, t], r[:, t] + gamma * running, running)
        out[:, t] = torch.where(mask[:, t], running, zero)
    return out


def reinforce_pp_advantages(
    scores: torch.Tensor,
    group_ids: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    token_rewards: torch.Tensor | None = None,
    gamma: float = 1.0,
    eps: float = DEFAULT_EPS,
) -> Advantages:
    """REINFORCE++: discounted token returns, whitened over the batch's valid tokens.

    Per-token reward ``r_t = token_rewards_t + [t = last valid token]·score``; return
    ``G_t`` by ``discounted_returns``; advantage ``(G_t − μ) / (σ + ε)`` with ``μ`` and the
    unbiased ``σ`` over all valid tokens of the batch. The batch mean *is* subtracted: it is
    REINFORCE++'s only baseline. If all valid returns are equal the advantages are zero.
    ``group_ids`` is validated but unused (no group baseline).

    Args:
        scores: ``[B]`` outcome reward of each response.
        group_ids: ``[B]`` integer prompt id of each response.
        response_mask: ``[B, T]`` bool or 0/1, the response tokens.
        token_rewards: optional ``[B, T]`` per-token rewards, e.g. ``−β·KL`` penalties.
        gamma: discount in ``[0, 1]``.
        eps: added to the batch std; ``> 0``.

    Returns:
        ``Advantages`` with ``token_advantages [B, T]`` and ``returns [B, T]``.
    """
    check_fraction("gamma", gamma, allow_zero=True)
    check_positive("eps", eps)
    x = _validate(scores, group_ids, response_mask)
    mask = x.mask
    rewards = torch.zeros(mask.shape, dtype=torch.float64, device=mask.device)
    if token_rewards is not None:
        check_float("token_rewards", token_rewards)
        check_same_shape("response_mask", response_mask, token_rewards=token_rewards)
        check_finite("token_rewards", token_rewards, mask)
        rewards = torch.where(mask, token_rewards.detach().to(torch.float64), rewards)
    has = mask.any(dim=-1)
    positions = torch.arange(mask.shape[1], device=mask.device)
    last = torch.where(mask, positions, -1).amax(dim=-1).clamp(min=0)  # [B]
    rows = torch.arange(mask.shape[0], device=mask.device)
    rewards[rows[has], last[has]] += x.scores[has]
    returns = discounted_returns(rewards, mask, gamma)
    mean, std, constant = _batch_std(returns, mask)
    adv = torch.zeros_like(returns) if constant else (returns - mean) / (std + eps)
    adv = torch.where(mask, adv, torch.zeros((), dtype=adv.dtype, device=adv.device))
    return Advantages(adv.to(torch.float32), None, returns.to(torch.float32))


def reinforce_pp_baseline_advantages(
    scores: torch.Tensor,
    group_ids: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    eps: float = DEFAULT_EPS,
) -> Advantages:
    """REINFORCE++-baseline: ``A_i = (r_i − mean_g) / (σ + ε)`` over response ``i``'s tokens.

    ``σ`` is the unbiased std of the group-centred values over all valid tokens of the batch
    (a long response weighs by its length). Unlike the published recipe we do *not* subtract
    the batch token mean: the group mean already centres the signal, and a token-weighted
    batch shift would give groups whose scores are all equal a non-zero, length-driven
    advantage; without it such groups get exactly zero. If all valid values are equal the
    advantages are zero.

    Args:
        scores: ``[B]`` outcome reward of each response.
        group_ids: ``[B]`` integer prompt id of each response.
        response_mask: ``[B, T]`` bool or 0/1, the response tokens.
        eps: added to the batch std; ``> 0``.

    Returns:
        ``Advantages`` with ``token_advantages [B, T]`` and ``seq_advantages [B]``.
    """
    check_positive("eps", eps)
    x = _validate(scores, group_ids, response_mask)
    g = _group_stats(x.scores, x.group_ids)
    centred = (x.scores - g.mean[g.member]).masked_fill(g.constant[g.member], 0.0)
    _, std, constant = _batch_std(_broadcast(centred, x.mask), x.mask)
    seq = torch.zeros_like(centred) if constant else centred / (std + eps)
    return _sequence_result(seq, x.mask)


ADVANTAGE_ESTIMATORS: dict[str, Callable[..., Advantages]] = {
    "grpo": grpo_advantages,
    "drgrpo": drgrpo_advantages,
    "rloo": rloo_advantages,
    "reinforce_pp": reinforce_pp_advantages,
    "reinforce_pp_baseline": reinforce_pp_baseline_advantages,
}
# The keyword options each estimator takes; ``compute_advantages`` passes only these.
_OPTIONS: dict[str, tuple[str, ...]] = {
    "grpo": ("eps",),
    "drgrpo": (),
    "rloo": (),
    "reinforce_pp": ("token_rewards", "gamma", "eps"),
    "reinforce_pp_baseline": ("eps",),
}


def compute_advantages(
    name: AdvantageName | str,
    scores: torch.Tensor,
    group_ids: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    token_rewards: torch.Tensor | None = None,
    gamma: float = 1.0,
    eps: float = DEFAULT_EPS,
) -> Advantages:
    """Run the estimator ``name`` from the registry (the one place variants are chosen).

    Args:
        name: one of ``ADVANTAGE_NAMES``.
        scores: ``[B]`` outcome reward of each response.
        group_ids: ``[B]`` integer prompt id of each response.
        response_mask: ``[B, T]`` bool or 0/1, the response tokens.
        token_rewards: ``[B, T]`` per-token rewards; ``reinforce_pp`` only (others raise).
        gamma: discount of REINFORCE++ returns, ``[0, 1]``; ignored by the others.
        eps: std offset of ``grpo`` and the REINFORCE++ whitening; ignored by the others.

    Returns:
        The estimator's ``Advantages``.
    """
    if name not in ADVANTAGE_ESTIMATORS:
        raise ValueError(f"name: expected one of {list(ADVANTAGE_NAMES)}, got {name!r}")
    # Checked for every estimator so that a bad config value fails even where it is unused.
    check_fraction("gamma", gamma, allow_zero=True)
    check_positive("eps", eps)
    if token_rewards is not None and "token_rewards" not in _OPTIONS[name]:
        # Silently dropping a KL penalty would train a different objective than asked.
        raise ValueError(
            f"token_rewards: only 'reinforce_pp' uses per-token rewards; {name!r} takes one "
            "outcome score per response (add the penalty to scores, or pass None)"
        )
    options = {"token_rewards": token_rewards, "gamma": gamma, "eps": eps}
    kwargs = {key: options[key] for key in _OPTIONS[name]}
    return ADVANTAGE_ESTIMATORS[name](scores, group_ids, response_mask, **kwargs)
