"""Optimizer updates on one rollout batch: mini-batches, micro-batches, global selection.

The rollout batch (this rank's share) is cut into mini-batches — one optimizer step each —
and every mini-batch into micro-batches whose gradients are accumulated. Three rules make the
result independent of how the work is split:

1. every micro-batch's loss is normalised by the counts of the whole mini-batch across all
   ranks (:class:`~entropyrl.losses.Denominators`), and multiplied by the world size because
   data-parallel training averages gradients over ranks;
2. the Clip-Cov / KL-Cov token selection is made once per mini-batch over all its micro-batches
   and ranks (:mod:`entropyrl.covariance`) and then split like the micro-batches;
3. diagnostics are token-weighted over micro-batches and ranks.

With ``update.selection_logprobs = "current"`` the selection scores the log-probs of the
current parameters, computed by a no-grad forward over the mini-batch (parameters do not change
during a mini-batch's accumulation, so these equal the values the reference computes inside each
micro-batch). For the first mini-batch of a step they equal the rollout-time log-probs, which
are reused.

Forwards shared instead of repeated (``update.fuse_scoring``, on by default; the values are
the same, only the number of forwards changes):

- the rows of a step's first mini-batch are scored by that update's own forward: the
  parameters have not moved yet, so its log-probs, detached, *are* log π_old and its entropies
  the rollout entropy. :func:`rows_scored_by_first_update` names these rows; the update writes
  ``UpdateBatch.old_logprobs`` and ``UpdateBatch.entropy`` there before its loss reads them
  (so the PPO ratio of that update is exactly 1);
- a Clip-Cov / KL-Cov mini-batch that is a single micro-batch is selected from its own
  forward's detached log-probs instead of a separate no-grad pass.

Non-finite values are flagged on the device (each loss, each gradient norm, the weights after
each optimizer step) and the flags are read once, at the end of the step, before the engine's
weight sync and before anything can be saved: the device is not stopped at every micro-batch.
A bad update therefore ends the run at the end of its step; ``ENTROPYRL_DEBUG_CHECKS=1`` reads
every flag at once instead, stopping before the bad optimizer step.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

import torch

from entropyrl.config import UpdateConfig
from entropyrl.distributed import Dist
from entropyrl.losses import Denominators, LossConfig, compute_objective
from entropyrl.policy import response_token_stats
from entropyrl.rollout import Rollout
from entropyrl.tokenstats import TokenStats
from entropyrl.train.update_checks import (
    Accumulator,
    Health,
    debug_checks,
    non_finite_error,
    weights_non_finite,
)
from entropyrl.train.update_selection import own_selection, select_scored


class UpdateBatch(NamedTuple):
    """This rank's share of a rollout step, ready for the update (``B`` rows, ``R`` tokens).

    Attributes:
        rollout: the sampled sequences.
        old_logprobs: ``[B, R]`` log π_old of the response tokens (behaviour policy).
        advantages: ``[B, R]`` per-token advantages.
        ref_logprobs: ``[B, R]`` reference-policy log-probs, or None.
        is_weights: ``[B, R]`` truncated importance-sampling weights of the policy loss
            (``loss.tis_cap``), or None.
        entropy: ``[B, R]`` entropy of π_old, or None (then nothing is filled).
        filled_rows: the rows (CPU ``int64``, sorted) whose ``old_logprobs`` and ``entropy``
            the first update writes from its own forward (:func:`rows_scored_by_first_update`),
            or None. Their values before the update are placeholders.
    """

    rollout: Rollout
    old_logprobs: torch.Tensor
    advantages: torch.Tensor
    ref_logprobs: torch.Tensor | None = None
    is_weights: torch.Tensor | None = None
    entropy: torch.Tensor | None = None
    filled_rows: torch.Tensor | None = None


@dataclass
class Learner:
    """The trained policy and what steps it: model, optimizer, scheduler, accelerator.

    ``accelerator`` runs backward (mixed precision, sharding), gradient-sync suppression
    during accumulation and the global gradient-norm clip; ``autocast`` is the context every
    forward of the policy runs in (bf16 compute over fp32 master weights, or nothing).
    """

    model: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    accelerator: Any

    def autocast(self) -> Any:
        """The compute context of every policy forward."""
        return self.accelerator.autocast()

    @property
    def sharded(self) -> bool:
        """The parameters are sharded over the ranks (FSDP)."""
        return is_sharded(self.accelerator)


def is_sharded(accelerator: Any) -> bool:
    """The accelerator was configured for FSDP."""
    return str(getattr(accelerator, "distributed_type", "")).endswith("FSDP")


def global_denominators(mask: torch.Tensor, dist: Dist) -> Denominators:
    """Token and sequence counts of a mini-batch over all ranks."""
    local = Denominators.of(mask)
    if dist.world == 1:
        return local
    n_tokens, n_seqs = dist.sum([local.n_tokens, local.n_seqs])
    return Denominators(int(n_tokens), int(n_seqs))


def _denominators(lengths: torch.Tensor, dist: Dist) -> Denominators:
    """:func:`global_denominators` from the host copy of the rows' token counts (no sync)."""
    local = Denominators(int(lengths.sum()), int((lengths > 0).sum()))
    if dist.world == 1:
        return local
    n_tokens, n_seqs = dist.sum([local.n_tokens, local.n_seqs])
    return Denominators(int(n_tokens), int(n_seqs))


def _row_order(n_rows: int, shuffle: bool, gen: torch.Generator) -> torch.Tensor:
    return torch.randperm(n_rows, generator=gen) if shuffle else torch.arange(n_rows)


def rows_scored_by_first_update(n_rows: int, *, loss: LossConfig, update: UpdateConfig,
                                world: int, seed: int, step: int,
                                sampler_weights: bool) -> torch.Tensor | None:
    """The rows (sorted, CPU) whose π_old the first update's forward provides, or None.

    These are the rows of the step's first mini-batch, in the order :func:`update_on_batch`
    draws. None when ``update.fuse_scoring`` is off, when truncated importance weights need
    π_old before the loss (``sampler_weights``), or when a Clip-Cov / KL-Cov mini-batch has
    several micro-batches (its selection reads all of them before the first backward).
    """
    mini = update.mini_batch_size // world
    if not update.fuse_scoring or sampler_weights or n_rows == 0:
        return None
    if loss.selection is not None and min(mini, n_rows) > update.micro_batch_size:
        return None
    gen = torch.Generator().manual_seed(derive_seed(seed, step, 0))
    return _row_order(n_rows, update.shuffle, gen)[:mini].sort().values


def update_on_batch(
    learner: Learner,
    batch: UpdateBatch,
    *,
    loss: LossConfig,
    update: UpdateConfig,
    dist: Dist,
    temperature: float,
    grad_clip: float,
    seed: int,
    step: int,
) -> dict[str, float]:
    """All optimizer updates of one rollout step; returns the ``loss/*`` and ``optim/*`` metrics.

    Args:
        learner: the policy and its optimizer.
        batch: this rank's rollout share, ``B`` rows; its ``filled_rows`` are written here.
        loss: the objective.
        update: mini/micro-batching, epochs, shuffling, which log-probs the selection scores.
        dist: the ranks (mini-batch sizes are global: each rank takes ``1/world`` of one).
        temperature: the sampling temperature (log-probs are scored at it).
        grad_clip: max global gradient norm (0 = no clipping).
        seed: the run's seed; with ``step`` it seeds shuffling and Clip-Cov's draws.
        step: the rollout step.

    Raises:
        NonFiniteError: a loss, gradient norm or weight became NaN/inf (module docstring).
    """
    rows_total = len(batch.rollout)
    mini = update.mini_batch_size // dist.world
    gen = torch.Generator().manual_seed(derive_seed(seed, step, 0))
    # Token counts on the host, copied once: the counts below need no device sync.
    lengths = batch.rollout.response_mask.sum(1).cpu()
    ctx = _Step(learner, batch, loss, update, dist, temperature, grad_clip, seed, step, lengths,
                Accumulator(), Health(step, dist, debug_checks()))
    norms: list[torch.Tensor] = []
    try:
        for epoch in range(update.epochs):
            order = _row_order(rows_total, update.shuffle, gen)
            for start in range(0, rows_total, mini):
                first = epoch == 0 and start == 0
                norms.append(_update(ctx, order[start : start + mini], first, len(norms)))
    except Exception:
        # Once an update went non-finite, later ones fail input checks: report the cause.
        ctx.health.check()
        raise
    ctx.health.check()
    out = {f"loss/{k}": v for k, v in ctx.acc.result(len(norms), dist).items()}
    norm_values = torch.stack(norms).tolist()
    out["optim/grad_norm"] = sum(norm_values) / len(norm_values)
    out["optim/grad_norm_max"] = max(norm_values)
    out["optim/lr"] = float(learner.optimizer.param_groups[0]["lr"])
    out["optim/updates"] = len(norms)
    return out


class _Step(NamedTuple):
    """What every optimizer update of one rollout step reads (see :func:`update_on_batch`)."""

    learner: Learner
    batch: UpdateBatch
    loss: LossConfig
    update: UpdateConfig
    dist: Dist
    temperature: float
    grad_clip: float
    seed: int
    step: int
    lengths: torch.Tensor  # [B] response tokens per row, on the host
    acc: Accumulator
    health: Health


def _update(ctx: _Step, rows: torch.Tensor, first: bool, n_updates: int) -> torch.Tensor:
    """One optimizer update on the mini-batch ``rows``; its gradient norm (device, float64)."""
    learner, batch, loss, dist = ctx.learner, ctx.batch, ctx.loss, ctx.dist
    micro = ctx.update.micro_batch_size
    parts = [rows[i : i + micro] for i in range(0, len(rows), micro)]
    fill = first and _fills(batch, rows, loss, len(parts))
    # Before the first update the parameters are those that scored old_logprobs.
    current = ctx.update.selection_logprobs == "current" and not first
    sel_seed = derive_seed(ctx.seed, ctx.step, 1 + n_updates)
    # A one-micro-batch mini-batch is selected from its own forward (in _micro_step).
    own = ctx.update.fuse_scoring and len(parts) == 1
    selected: list[torch.Tensor | None] = [None] * len(parts)
    if loss.selection is not None and not own:
        selected = select_scored(learner, batch, parts, loss, dist, ctx.temperature, current,
                                 sel_seed)
    den = _denominators(ctx.lengths[rows], dist)
    learner.optimizer.zero_grad(set_to_none=True)
    for j, idx in enumerate(parts):
        sync = j == len(parts) - 1
        selector = None
        if loss.selection is not None and own:
            selector = partial(own_selection, batch, idx, loss, dist, sel_seed, current)
        with nullcontext() if sync else learner.accelerator.no_sync(learner.model):
            obj = _micro_step(learner, batch, idx, loss, selected[j], den, dist.world,
                              ctx.temperature, fill=fill, selector=selector)
        ctx.health.flag("loss", n_updates, ~torch.isfinite(obj["total"]))
        ctx.acc.add(obj, int(ctx.lengths[idx].sum()))
    norm, bad_weights = clip_and_step(learner, ctx.grad_clip, ctx.step, n_updates, dist)
    ctx.health.flag("grad_norm", n_updates, ~torch.isfinite(norm))
    ctx.health.flag("weights", n_updates, bad_weights)
    return norm.detach().to(torch.float64)


def _fills(batch: UpdateBatch, rows: torch.Tensor, loss: LossConfig, n_parts: int) -> bool:
    """Whether this (first) mini-batch writes π_old of ``batch.filled_rows``; checks the plan."""
    if batch.filled_rows is None:
        return False
    if batch.entropy is None or not torch.equal(rows.sort().values, batch.filled_rows):
        raise ValueError("UpdateBatch.filled_rows: expected the first mini-batch's rows (from "
                         "rows_scored_by_first_update) and an entropy tensor to fill")
    if loss.selection is not None and n_parts > 1:
        raise ValueError("UpdateBatch.filled_rows: a selection over several micro-batches "
                         "needs π_old before the first forward; score those rows first")
    return True


def _micro_step(
    learner: Learner,
    batch: UpdateBatch,
    idx: torch.Tensor,
    loss: LossConfig,
    selected: torch.Tensor | None,
    den: Denominators,
    world: int,
    temperature: float,
    *,
    fill: bool = False,
    selector: Any = None,
) -> dict[str, torch.Tensor]:
    """Forward, loss and backward of one micro-batch; its metrics as device tensors.

    ``fill``: write this forward's detached log-probs and entropies into ``batch``'s π_old
    rows first. ``selector``: ``lp -> selected`` from this forward's detached log-probs.
    """
    roll = batch.rollout
    with learner.autocast():
        stats: TokenStats = response_token_stats(
            learner.model, roll.input_ids[idx], roll.attention_mask[idx], roll.prompt_len,
            temperature=temperature, with_entropy=loss.entropy_coef != 0 or fill,
        )
    logprobs = stats.logprobs.float()
    if fill:
        assert batch.entropy is not None and stats.entropy is not None
        batch.old_logprobs[idx] = logprobs.detach()
        batch.entropy[idx] = stats.entropy.detach().float()
    if selector is not None:
        selected = selector(logprobs.detach())
    obj = compute_objective(
        loss,
        logprobs,
        batch.old_logprobs[idx],
        batch.advantages[idx],
        roll.response_mask[idx],
        selected=selected,
        entropy=None if loss.entropy_coef == 0 or stats.entropy is None
        else stats.entropy.float(),
        ref_logprobs=None if batch.ref_logprobs is None else batch.ref_logprobs[idx],
        denominators=den,
        is_weights=None if batch.is_weights is None else batch.is_weights[idx],
    )
    # Data-parallel averages gradients over ranks; the loss is already normalised by the
    # global counts, so undo the average.
    learner.accelerator.backward(obj.loss * world)
    metrics = dict(obj.metrics)
    metrics["total"] = obj.loss.detach()
    return metrics


def clip_and_step(learner: Learner, grad_clip: float, step: int, update: int,
                   dist: Dist) -> tuple[torch.Tensor, torch.Tensor]:
    """Clip, step; ``(gradient norm, weights-became-non-finite flag)`` as device tensors."""
    params = [p for p in learner.model.parameters() if p.requires_grad]
    max_norm = grad_clip if grad_clip > 0 else math.inf
    if learner.sharded:
        # torch's clip is DTensor-aware: the norm is over every rank's shards. (accelerate's
        # FSDP branch compares parameter lists with `==`, which raises once a second model,
        # e.g. the reference, is prepared.)
        total = torch.nn.utils.clip_grad_norm_(params, max_norm)
        norm = total.full_tensor() if hasattr(total, "full_tensor") else total
    else:
        norm = torch.as_tensor(learner.accelerator.clip_grad_norm_(params, max_norm))
    if debug_checks() and dist.max([float(~torch.isfinite(norm))])[0]:
        raise non_finite_error("grad_norm", step, update, deferred=False)
    learner.optimizer.step()
    learner.scheduler.step()
    return norm, weights_non_finite(params)


def derive_seed(*parts: int) -> int:
    """A deterministic 63-bit seed from integers (same on every rank)."""
    h = 1469598103934665603
    for p in parts:
        h = ((h ^ (p & 0xFFFFFFFFFFFF)) * 1099511628211) % (1 << 63)
    return h
