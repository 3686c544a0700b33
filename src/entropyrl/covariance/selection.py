"""Covariance token selection for Clip-Cov and KL-Cov, global over the optimizer mini-batch.

The paper (Cui et al. 2025, Eq. 10) scores each valid response token ``i`` of a batch by the
centered cross-product of its log-probability and advantage::

    cov_i = (log π_i − mean_j log π_j) · (A_i − mean_j A_j)

Clip-Cov detaches ``⌊r·N⌋`` tokens drawn uniformly from those with ``ω_low < cov_i < ω_high``
(and not already clipped by PPO); KL-Cov puts a KL penalty on the top ``⌊k·N⌋`` tokens by
``cov_i``. ``N`` is the number of valid tokens; ``r`` and ``k`` are fractions (not percents).

Public implementations take the means, ``N`` and the top-k per micro-batch on each GPU, so the
selection changes with the micro-batch size and the number of GPUs. Here the means, ``N``, the
candidate pool and the top-k are those of the *whole* mini-batch across all ranks, so the
selected set does not depend on how the mini-batch is split:

- the mini-batch is passed as a list of parts (micro-batches) and, with ``dist``, each rank
  passes its own parts; tokens are ordered globally as (rank, part, row, position);
- the means come from float64 sums reduced over parts and ranks (identical up to float64
  rounding, ~1e-16 relative, whatever the split);
- Clip-Cov draws a random permutation of the global candidate list from ``generator``, which
  must be seeded identically on every rank;
- KL-Cov breaks ties in ``cov_i`` by the lower global index, so the top-k set is unique.

Which log-probabilities to score is the caller's choice. The reference code scores the
*current* policy inside each micro-batch; since parameters do not change during a mini-batch's
gradient accumulation, a no-grad forward pass over the mini-batch with the current parameters
reproduces exactly those values (the trainer's default; see docs/selection.md for the cost).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch

from entropyrl._checks import check_finite
from entropyrl.covariance.cov import centred_product
from entropyrl.distributed import Dist
from entropyrl.losses.base import check_policy_inputs
from entropyrl.losses.clip_cov import ClipCovConfig
from entropyrl.losses.kl_cov import KLCovConfig


class SelectionPart(NamedTuple):
    """One micro-batch of the mini-batch, all ``[b, T]``.

    Attributes:
        logprobs: log π of the sampled tokens under the policy being scored (no grad needed).
        old_logprobs: log π_old (behaviour policy); Clip-Cov uses the ratio for its PPO check.
        advantages: per-token advantages.
        mask: response mask (bool or 0/1).
    """

    logprobs: torch.Tensor
    old_logprobs: torch.Tensor
    advantages: torch.Tensor
    mask: torch.Tensor


class CovSelection(NamedTuple):
    """Selected tokens, one bool mask ``[b, T]`` per part, and global counts.

    Attributes:
        masks: selected tokens of each part (a subset of that part's valid tokens).
        n_tokens: valid tokens in the whole mini-batch (all parts, all ranks), ``N``.
        n_candidates: tokens eligible for selection (Clip-Cov: within the bounds and not
            PPO-clipped; KL-Cov: every valid token).
        n_selected: selected tokens over all parts and ranks.
        mean_logprob: global mean of log π over valid tokens.
        mean_advantage: global mean of A over valid tokens.
    """

    masks: list[torch.Tensor]
    n_tokens: int
    n_candidates: int
    n_selected: int
    mean_logprob: float
    mean_advantage: float


def selection_count(ratio: float, n_tokens: int) -> int:
    """``max(1, ⌊ratio·N⌋)`` tokens when ``N > 0`` (the reference selects at least one)."""
    return max(1, math.floor(ratio * n_tokens)) if n_tokens > 0 else 0


class _Scored(NamedTuple):
    """This rank's parts flattened and concatenated in (part, row, position) order."""

    log_ratio: torch.Tensor  # [n] log π − log π_old
    advantages: torch.Tensor  # [n]
    valid: torch.Tensor  # [n] bool
    cov: torch.Tensor  # [n] cov_i, −inf at masked positions
    shapes: list[torch.Size]
    n_tokens: int  # global
    mean_logprob: float
    mean_advantage: float


def _score(parts: Sequence[SelectionPart], dist: Dist) -> _Scored:
    """Validate the parts, take the global means and score every token by ``cov_i``.

    Working on one concatenated vector makes every reduction see the same values in the same
    order whatever the split, so the means (and hence the selection) are split-independent;
    across ranks the float64 sums differ only by float64 rounding.
    """
    if len(parts) == 0:
        raise ValueError("parts: expected at least one micro-batch, got an empty list")
    masks = []
    for i, p in enumerate(parts):
        try:
            masks.append(check_policy_inputs(*p, check_values=False))
        except ValueError as err:
            raise ValueError(f"parts[{i}].{err}") from None
    lp = torch.cat([p.logprobs.detach().reshape(-1) for p in parts])
    old = torch.cat([p.old_logprobs.detach().reshape(-1) for p in parts])
    adv = torch.cat([p.advantages.detach().reshape(-1) for p in parts])
    valid = torch.cat([m.reshape(-1) for m in masks])
    for name, x in (("logprobs", lp), ("old_logprobs", old), ("advantages", adv)):
        check_finite(f"parts.{name}", x, valid)
    zero = torch.zeros((), dtype=lp.dtype, device=lp.device)
    lp = torch.where(valid, lp, zero)
    adv = torch.where(valid, adv, zero)
    # Summed in float64 (not summed in float32 and then cast): the means then agree across
    # splits and ranks to float64 rounding.
    sums = torch.stack([lp.double().sum(), adv.double().sum(), valid.sum().double()])
    sum_lp, sum_adv, n = dist.all_reduce(sums).tolist()
    n_tokens = int(n)
    mean_lp = sum_lp / max(n_tokens, 1)
    mean_adv = sum_adv / max(n_tokens, 1)
    cov = centred_product(lp, adv, valid, mean_lp, mean_adv).masked_fill_(~valid, float("-inf"))
    shapes = [m.shape for m in masks]
    return _Scored(lp - old, adv, valid, cov, shapes, n_tokens, mean_lp, mean_adv)


def _split_to_parts(flat: torch.Tensor, scored: _Scored, parts: Sequence[SelectionPart]) -> list[
    torch.Tensor
]:
    """Cut a flat bool vector back into one ``[b, T]`` mask per part (on its device)."""
    sizes = [s.numel() for s in scored.shapes]
    return [
        chunk.view(shape).to(p.logprobs.device)
        for chunk, shape, p in zip(flat.split(sizes), scored.shapes, parts, strict=True)
    ]


def select_clip_cov(
    parts: Sequence[SelectionPart],
    config: ClipCovConfig | None = None,
    *,
    generator: torch.Generator | None = None,
    dist: Dist | None = None,
) -> CovSelection:
    """Clip-Cov selection: ``max(1, ⌊r·N⌋)`` uniform draws among the global candidates.

    Candidates are valid tokens with ``ω_low < cov_i < ω_high`` whose ratio is not clipped by
    ``config.clip``. When fewer candidates exist than the count, all of them are selected;
    when none exist, nothing is.

    Args:
        parts: the mini-batch as one or more micro-batches (this rank's share with ``dist``).
        config: hyper-parameters (default: the paper's r = 2e-4, ω = (1, 5), ε = 1).
        generator: CPU random generator; seed it identically on every rank. Default: a fresh
            generator seeded with 0.
        dist: the ranks to select over (default: this process alone).

    Returns:
        The per-part selection masks and global counts.
    """
    config = config or ClipCovConfig()
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    dist = dist or Dist.single()
    sc = _score(parts, dist)
    # PPO clips a token when A > 0 and r > 1 + ε_high, or A < 0 and r < 1 − ε_low; tested on
    # the log-ratio to avoid an exp (log(0) = −inf makes ε_low = 1 never clip).
    log_high = math.log1p(config.clip.eps_high)
    log_low = math.log1p(-config.clip.eps_low) if config.clip.eps_low < 1 else float("-inf")
    ppo_clipped = ((sc.advantages > 0) & (sc.log_ratio > log_high)) | (
        (sc.advantages < 0) & (sc.log_ratio < log_low)
    )
    # cov is −inf at masked positions, so the band test also excludes them.
    candidates = (sc.cov > config.cov_low) & (sc.cov < config.cov_high) & ~ppo_clipped
    positions = candidates.nonzero().squeeze(-1).cpu()
    n_local = int(positions.numel())
    offset, n_candidates = dist.counts(n_local)
    k = min(selection_count(config.ratio, sc.n_tokens), n_candidates)
    chosen = torch.randperm(n_candidates, generator=generator)[:k]
    # Keep the draws that fall in this rank's slice of the global candidate list.
    local = chosen[(chosen >= offset) & (chosen < offset + n_local)] - offset
    flat = torch.zeros(sc.cov.numel(), dtype=torch.bool)
    flat[positions[local]] = True
    masks = _split_to_parts(flat, sc, parts)
    return CovSelection(masks, sc.n_tokens, n_candidates, k, sc.mean_logprob, sc.mean_advantage)


def select_kl_cov(
    parts: Sequence[SelectionPart],
    config: KLCovConfig | None = None,
    *,
    dist: Dist | None = None,
) -> CovSelection:
    """KL-Cov selection: the global top ``max(1, ⌊k·N⌋)`` valid tokens by ``cov_i``.

    Ties are broken by the lower global index (rank, part, row, position), so the set is
    unique and independent of the split.

    Args:
        parts: the mini-batch as one or more micro-batches (this rank's share with ``dist``).
        config: hyper-parameters (default: k = 2e-3, β = 1; only ``ratio`` is used here).
        dist: the ranks to select over (default: this process alone).

    Returns:
        The per-part selection masks and global counts.
    """
    config = config or KLCovConfig()
    dist = dist or Dist.single()
    sc = _score(parts, dist)
    # Masked positions hold −inf and k ≤ N, so they are never among the top k.
    values = sc.cov.cpu()
    n_local = int(values.numel())
    offset, _ = dist.counts(n_local)
    k = min(selection_count(config.ratio, sc.n_tokens), sc.n_tokens)
    top = _top_k_lowest_index(values, min(k, n_local))
    if dist.world > 1:
        top = dist.merge_top_k(values[top], top + offset, k) - offset
        top = top[(top >= 0) & (top < n_local)]
    flat = torch.zeros(n_local, dtype=torch.bool)
    flat[top] = True
    masks = _split_to_parts(flat, sc, parts)
    return CovSelection(masks, sc.n_tokens, sc.n_tokens, k, sc.mean_logprob, sc.mean_advantage)


def _top_k_lowest_index(values: torch.Tensor, k: int) -> torch.Tensor:
    """Indices (ascending) of the ``k`` largest values, ties broken by the lower index."""
    if k >= values.numel():
        return torch.arange(values.numel())
    if k == 0:
        return torch.zeros(0, dtype=torch.long)
    threshold = torch.topk(values, k, sorted=False).values.min()
    above = (values > threshold).nonzero().squeeze(-1)
    ties = (values == threshold).nonzero().squeeze(-1)[: k - above.numel()]
    return torch.cat([above, ties]).sort().values
