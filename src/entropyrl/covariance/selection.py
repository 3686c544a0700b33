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

from entropyrl._checks import check_finite, value_checks_enabled
from entropyrl.covariance.cov import centred_product
from entropyrl.distributed import Dist
from entropyrl.losses.base import check_policy_inputs
from entropyrl.losses.clip_cov import ClipCovConfig
from entropyrl.losses.kl_cov import KLCovConfig

_ONE_PROCESS = Dist.single()  # the default ``dist`` (built once: it is never modified)


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
    """This rank's parts flattened and concatenated in (part, row, position) order.

    ``rows`` is one buffer ``[R, n]``, the selection's own to overwrite: the mask as 0/1 in
    the dtype of the log-probs, log π and A (both zero at masked positions), then the extra
    fields asked of :func:`_score`. Working in place in it, rather than on mini-batch-sized
    temporaries, saves passes over memory and allocations.
    """

    rows: torch.Tensor  # [R, n]
    valid: torch.Tensor  # [n] bool
    shapes: list[torch.Size]
    n_tokens: int  # global
    mean_logprob: float
    mean_advantage: float


def _concat_into(out: torch.Tensor, columns: Sequence[Sequence[torch.Tensor]]) -> torch.Tensor:
    """Write each column's ``[b, T]`` tensors, flattened and concatenated, into a row of ``out``.

    One ``torch.cat`` (of one dtype: a mixed one leaves the fast contiguous copy) for the
    whole buffer; when every part has the same width ``T`` (the micro-batches of one
    mini-batch do) it concatenates the rows as they are, unflattened.
    """
    xs = [x for column in columns for x in column]
    width = xs[0].shape[1]
    with torch.no_grad():
        if width and all(x.shape[1] == width for x in xs):
            torch.cat(xs, out=out.view(-1, width))
        else:
            torch.cat([x.reshape(-1) for x in xs], out=out.view(-1))
    return out


def _score(parts: Sequence[SelectionPart], dist: Dist, extra: Sequence[str] = ()) -> _Scored:
    """Validate the parts, gather them into one buffer and take the global means.

    Working on one concatenated vector makes every reduction see the same values in the same
    order whatever the split, so the means (and hence the selection) are split-independent;
    across ranks the float64 sums differ only by float64 rounding.

    Args:
        parts: the micro-batches.
        dist: the ranks the sums are reduced over.
        extra: names of further :class:`SelectionPart` fields to gather (``old_logprobs``),
            as the rows after log π and A.

    One host read in the usual case: the global sums (needed for ``N``). They double as the
    finiteness check of the log-probs and advantages, on every rank at once; ``old_logprobs``,
    when gathered (Clip-Cov reads them, KL-Cov does not), are checked when
    ``ENTROPYRL_DEBUG_CHECKS`` allows (:func:`~entropyrl._checks.value_checks_enabled`).
    """
    if len(parts) == 0:
        raise ValueError("parts: expected at least one micro-batch, got an empty list")
    masks = []
    for i, p in enumerate(parts):
        try:
            masks.append(check_policy_inputs(*p, check_values=False))
        except ValueError as err:
            raise ValueError(f"parts[{i}].{err}") from None
    first = parts[0].logprobs
    columns = [[getattr(p, name) for p in parts] for name in ("logprobs", "advantages", *extra)]
    n = sum(m.numel() for m in masks)
    rows = torch.empty(len(columns) + 1, n, dtype=first.dtype, device=first.device)
    _concat_into(rows[1:], columns)  # every float field in one cat
    valid = _concat_into(torch.empty(n, dtype=torch.bool, device=first.device), [masks])
    # The mask as 0/1 floats, through uint8: on the CPU uint8 → float is vectorised and
    # bool → float is not.
    valid01 = rows[0].copy_(valid.view(torch.uint8))
    # A product by 0/1 (several times cheaper than torch.where) zeroes masked positions
    # exactly as long as no NaN/inf sits there (0·inf = NaN), which the sums below detect.
    rows[1:3].mul_(valid01)
    # Σ log π and Σ A summed in float64 (not summed in float32 and then cast): the means then
    # agree across splits and ranks to float64 rounding. N is exact in a float32 sum of 0/1
    # up to 2**24 tokens (every partial sum is an integer it holds), which spares converting
    # the mask row to float64; one host read either way.
    if rows.dtype in (torch.float32, torch.float64) and n <= 2**24:
        sums = torch.cat([valid01.sum(0, keepdim=True).double(), rows[1:3].double().sum(1)])
    else:
        sums = rows[:3].double().sum(1)
    n_valid, sum_lp, sum_adv = dist.all_reduce(sums).tolist()
    if not (math.isfinite(sum_lp) and math.isfinite(sum_adv)):
        # A NaN/inf somewhere, at a valid position (an error) or in the padding (allowed). Mask
        # with masked_fill, which lets nothing through from the padding, and sum again; every
        # rank saw the same sums, so all of them take this branch.
        _concat_into(rows[1:3], columns[:2]).masked_fill_(~valid, 0.0)
        sum_lp, sum_adv = dist.all_reduce(rows[1:3].double().sum(1)).tolist()
        if not (math.isfinite(sum_lp) and math.isfinite(sum_adv)):
            _raise_not_finite(parts, masks)
    if "old_logprobs" in extra and value_checks_enabled(rows):
        check_finite("parts.old_logprobs", rows[3 + list(extra).index("old_logprobs")], valid)
    n_tokens = int(n_valid)
    mean_lp = sum_lp / max(n_tokens, 1)
    mean_adv = sum_adv / max(n_tokens, 1)
    return _Scored(rows, valid, [m.shape for m in masks], n_tokens, mean_lp, mean_adv)


def _raise_not_finite(parts: Sequence[SelectionPart], masks: list[torch.Tensor]) -> None:
    """Name the NaN/inf that made a global sum non-finite (here or on another rank)."""
    for name in ("logprobs", "advantages"):
        for p, m in zip(parts, masks, strict=True):
            check_finite(f"parts.{name}", getattr(p, name), m)
    raise ValueError("parts.logprobs/advantages: expected finite values, found NaN/inf entries "
                     "on another rank")


def _split_to_parts(flat: torch.Tensor, shapes: Sequence[torch.Size]) -> list[torch.Tensor]:
    """Cut a flat vector ``[n]`` back into one view of ``shapes[i]`` ``[b, T]`` per part."""
    width = shapes[0][1]
    if width and all(s[1] == width for s in shapes):  # one split of the rows
        return list(flat.view(-1, width).split([s[0] for s in shapes]))
    chunks = flat.split([s.numel() for s in shapes])
    return [chunk.view(shape) for chunk, shape in zip(chunks, shapes, strict=True)]


def _clip_cov_candidates(sc: _Scored, config: ClipCovConfig) -> torch.Tensor:
    """``[n]`` 0/1 (rows' dtype): valid tokens in ``(ω_low, ω_high)`` that PPO does not clip.

    Works in the rows of ``sc`` (0/1 mask, log π, A, log π_old), overwriting them. Every
    comparison writes 0/1 floats: on the CPU a comparison written into a float tensor is
    vectorised and one into a bool tensor is not (about 5x faster at these sizes); 0/1
    values combine exactly by product.
    """
    valid01, lp, adv, old = sc.rows
    log_ratio = torch.sub(lp, old, out=old)
    cov = centred_product(lp, adv, None, sc.mean_logprob, sc.mean_advantage, out=lp)
    # PPO clips a token when A > 0 and r > 1 + ε_high, or A < 0 and r < 1 − ε_low; tested on
    # the log-ratio to avoid an exp. With ε_low ≥ 1 (the default 1) the low clip never
    # fires (log 0 = −inf), so its test is skipped.
    low = None
    if config.clip.eps_low < 1:
        low = torch.lt(adv, 0.0, out=torch.empty_like(adv))
        low.mul_(torch.lt(log_ratio, math.log1p(-config.clip.eps_low), out=torch.empty_like(adv)))
    high = log_ratio.gt_(math.log1p(config.clip.eps_high)).mul_(adv.gt_(0.0))
    clipped = high if low is None else high.add_(low)  # exclusive (A > 0 vs A < 0): 0/1
    # ω_low < cov_i < ω_high and not clipped (A's row is free again: it holds A > 0 now).
    inside = torch.gt(cov, config.cov_low, out=adv)
    inside.mul_(cov.lt_(config.cov_high)).mul_(clipped.le_(0.0))
    if _may_be_inside(sc.mean_logprob * sc.mean_advantage, config, cov.dtype):
        # A masked position (log π = A = 0 there) scores μ_lp·μ_A: only when that can fall in
        # the band does the mask need a pass of its own.
        inside.mul_(valid01)
    return inside


def _may_be_inside(masked_cov: float, config: ClipCovConfig, dtype: torch.dtype) -> bool:
    """Whether ``cov`` at a masked position, ``μ_lp·μ_A`` up to rounding, may be in the band.

    The margin, 16 ulps of ``dtype`` relative to the largest of the three numbers, is far
    above the few roundings (of the means, the product and the bounds) the scores see.
    """
    scale = max(abs(masked_cov), abs(config.cov_low), abs(config.cov_high))
    margin = 16 * torch.finfo(dtype).eps * scale
    return config.cov_low - margin < masked_cov < config.cov_high + margin


def _running_count(flags01: torch.Tensor) -> torch.Tensor:
    """Running count ``[n]`` of 0/1 ``flags01``, exact.

    A float32/float64 cumsum is exact up to 2**24 entries (every partial count is an integer
    float32 holds) and spares the two full-size copies of a bool → int64 count (to bool, then
    to int64 inside cumsum); beyond that, or in a narrower dtype, the count is in int64.
    """
    if flags01.dtype in (torch.float32, torch.float64) and flags01.numel() <= 2**24:
        return flags01.cumsum(0)
    return flags01.bool().cumsum(0)


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
    dist = dist or _ONE_PROCESS
    sc = _score(parts, dist, extra=("old_logprobs",))
    # Running count of candidates: its last entry is their number (the one host read here).
    running = _running_count(_clip_cov_candidates(sc, config))
    n_local = int(running[-1]) if running.numel() else 0
    offset, n_candidates = dist.counts(n_local)
    k = min(selection_count(config.ratio, sc.n_tokens), n_candidates)
    chosen = torch.randperm(n_candidates, generator=generator)[:k]
    local = chosen
    if dist.world > 1:
        # Keep the draws that fall in this rank's slice of the global candidate list.
        local = chosen[(chosen >= offset) & (chosen < offset + n_local)] - offset
    # The j-th candidate (from 0) is the first place where the running count exceeds j.
    positions = torch.searchsorted(running, local.to(running.device, running.dtype), right=True)
    flat = torch.zeros(running.numel(), dtype=torch.bool, device=running.device)
    masks = _split_to_parts(flat.index_fill_(0, positions, True), sc.shapes)
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
    dist = dist or _ONE_PROCESS
    sc = _score(parts, dist)
    valid01, lp, adv = sc.rows
    n_local = lp.numel()
    # cov_i at valid positions, −inf at masked ones (never among the top k, as k ≤ N): the
    # product is taken everywhere, then (m − 1)/m is added (one addcdiv), 0 where m = 1 and
    # −inf where m = 0. Float passes: torch.where on a bool mask is not vectorised on the CPU
    # (about 4x the time of these passes here).
    values = centred_product(lp, adv, None, sc.mean_logprob, sc.mean_advantage, out=lp)
    values.addcdiv_(valid01 - 1, valid01)
    offset, _ = dist.counts(n_local)
    k = min(selection_count(config.ratio, sc.n_tokens), sc.n_tokens)
    flat = _top_k_mask(values, min(k, n_local))
    if dist.world > 1:
        top = flat.nonzero().squeeze(-1)
        top = dist.merge_top_k(values[top], top + offset, k) - offset
        top = top[(top >= 0) & (top < n_local)]
        flat = torch.zeros(n_local, dtype=torch.bool, device=values.device)
        flat.index_fill_(0, top, True)
    masks = _split_to_parts(flat, sc.shapes)
    return CovSelection(masks, sc.n_tokens, sc.n_tokens, k, sc.mean_logprob, sc.mean_advantage)


def _top_k_mask(values: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask ``[n]`` of the ``k`` largest values, ties broken by the lower index.

    No host read: the ``k``-th largest value is the threshold; every value above it is among
    the top-k, and the remaining places go to the first ties in index order, found from the
    running count of ties (the ``j``-th tie is where it first reaches ``j``).
    """
    n = values.numel()
    if k >= n:
        return torch.ones(n, dtype=torch.bool, device=values.device)
    if k == 0:
        return torch.zeros(n, dtype=torch.bool, device=values.device)
    top = torch.topk(values, k, sorted=False)
    threshold = top.values.min()
    above = top.values > threshold  # [k]: the top-k entries strictly above the threshold
    # One spare place at the end: a tie rank beyond the number of ties lands there.
    flat = torch.zeros(n + 1, dtype=torch.bool, device=values.device)
    flat.index_put_((top.indices,), above)
    ties = _running_count(torch.eq(values, threshold, out=torch.empty_like(values)))
    ranks = torch.arange(1, k + 1, dtype=ties.dtype, device=values.device)  # [k]
    places = torch.searchsorted(ties, ranks)  # [k] where the j-th tie is, or n
    flat.index_put_((places,), ranks <= k - above.sum())
    return flat[:n]
