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
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from entropyrl.config import UpdateConfig
from entropyrl.covariance import SelectionPart, select_clip_cov, select_kl_cov
from entropyrl.distributed import Dist
from entropyrl.errors import UserError
from entropyrl.losses import Denominators, LossConfig, compute_objective
from entropyrl.policy import response_token_stats
from entropyrl.rollout import Rollout

# How each objective metric combines across micro-batches, ranks and updates.
_SHARES = {"policy_loss", "entropy_bonus", "total"}  # parts of a normalised sum: add up
_MINS = {"ratio_min"}
_MAXS = {"ratio_max"}


class NonFiniteError(UserError):
    """A loss or gradient became NaN/inf; the run stops before the optimizer step."""


class UpdateBatch(NamedTuple):
    """This rank's share of a rollout step, ready for the update (``B`` rows, ``R`` tokens).

    Attributes:
        rollout: the sampled sequences.
        old_logprobs: ``[B, R]`` log π_old of the response tokens (behaviour policy).
        advantages: ``[B, R]`` per-token advantages.
        ref_logprobs: ``[B, R]`` reference-policy log-probs, or None.
        is_weights: ``[B, R]`` truncated importance-sampling weights of the policy loss
            (``loss.tis_cap``), or None.
    """

    rollout: Rollout
    old_logprobs: torch.Tensor
    advantages: torch.Tensor
    ref_logprobs: torch.Tensor | None = None
    is_weights: torch.Tensor | None = None


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


class _Accumulator:
    """Token-weighted means, sums of shares, min/max — reduced over ranks at the end."""

    def __init__(self) -> None:
        self.weighted: dict[str, float] = {}
        self.weights: dict[str, float] = {}
        self.shares: dict[str, float] = {}
        self.mins: dict[str, float] = {}
        self.maxs: dict[str, float] = {}

    def add(self, metrics: dict[str, torch.Tensor], n_tokens: int) -> None:
        for key, value in metrics.items():
            v = float(value)
            if key in _SHARES:
                self.shares[key] = self.shares.get(key, 0.0) + v
            elif key in _MINS:
                self.mins[key] = min(self.mins.get(key, math.inf), v)
            elif key in _MAXS:
                self.maxs[key] = max(self.maxs.get(key, -math.inf), v)
            else:
                self.weighted[key] = self.weighted.get(key, 0.0) + v * n_tokens
                self.weights[key] = self.weights.get(key, 0.0) + n_tokens

    def result(self, n_updates: int, dist: Dist) -> dict[str, float]:
        keys_w, keys_s = sorted(self.weighted), sorted(self.shares)
        sums = dist.sum([self.weighted[k] for k in keys_w] + [self.weights[k] for k in keys_w]
                        + [self.shares[k] for k in keys_s])
        mins = dist.min([self.mins[k] for k in sorted(self.mins)])
        maxs = dist.max([self.maxs[k] for k in sorted(self.maxs)])
        n = len(keys_w)
        out = {k: sums[i] / max(sums[n + i], 1.0) for i, k in enumerate(keys_w)}
        out.update({k: sums[2 * n + i] / n_updates for i, k in enumerate(keys_s)})
        out.update(dict(zip(sorted(self.mins), mins, strict=True)))
        out.update(dict(zip(sorted(self.maxs), maxs, strict=True)))
        return out


def global_denominators(mask: torch.Tensor, dist: Dist) -> Denominators:
    """Token and sequence counts of a mini-batch over all ranks."""
    local = Denominators.of(mask)
    if dist.world == 1:
        return local
    n_tokens, n_seqs = dist.sum([local.n_tokens, local.n_seqs])
    return Denominators(int(n_tokens), int(n_seqs))


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
        batch: this rank's rollout share, ``B`` rows.
        loss: the objective.
        update: mini/micro-batching, epochs, shuffling, which log-probs the selection scores.
        dist: the ranks (mini-batch sizes are global: each rank takes ``1/world`` of one).
        temperature: the sampling temperature (log-probs are scored at it).
        grad_clip: max global gradient norm (0 = no clipping).
        seed: the run's seed; with ``step`` it seeds shuffling and Clip-Cov's draws.
        step: the rollout step.
    """
    rows_total = len(batch.rollout)
    mini = update.mini_batch_size // dist.world
    micro = update.micro_batch_size
    gen = torch.Generator().manual_seed(derive_seed(seed, step, 0))
    acc = _Accumulator()
    norms: list[float] = []
    n_updates = 0
    for epoch in range(update.epochs):
        order = torch.arange(rows_total)
        if update.shuffle:
            order = torch.randperm(rows_total, generator=gen)
        for start in range(0, rows_total, mini):
            rows = order[start : start + mini]
            parts = [rows[i : i + micro] for i in range(0, len(rows), micro)]
            # Before the first update the parameters are those that scored old_logprobs.
            current = update.selection_logprobs == "current" and not (epoch == 0 and start == 0)
            sel_seed = derive_seed(seed, step, 1 + n_updates)
            selected = _select(learner, batch, parts, loss, dist, temperature, current, sel_seed)
            den = global_denominators(batch.rollout.response_mask[rows], dist)
            learner.optimizer.zero_grad(set_to_none=True)
            for j, idx in enumerate(parts):
                sync = j == len(parts) - 1
                with nullcontext() if sync else learner.accelerator.no_sync(learner.model):
                    obj = _micro_step(learner, batch, idx, loss, selected[j], den, dist.world,
                                      temperature)
                acc.add(obj, int(batch.rollout.response_mask[idx].sum()))
            norms.append(_clip_and_step(learner, grad_clip, step, n_updates, dist))
            n_updates += 1
    out = {f"loss/{k}": v for k, v in acc.result(n_updates, dist).items()}
    out["optim/grad_norm"] = sum(norms) / len(norms)
    out["optim/grad_norm_max"] = max(norms)
    out["optim/lr"] = float(learner.optimizer.param_groups[0]["lr"])
    out["optim/updates"] = n_updates
    return out


def _micro_step(
    learner: Learner,
    batch: UpdateBatch,
    idx: torch.Tensor,
    loss: LossConfig,
    selected: torch.Tensor | None,
    den: Denominators,
    world: int,
    temperature: float,
) -> dict[str, torch.Tensor]:
    roll = batch.rollout
    with learner.autocast():
        stats = response_token_stats(
            learner.model, roll.input_ids[idx], roll.attention_mask[idx], roll.prompt_len,
            temperature=temperature, with_entropy=loss.entropy_coef > 0,
        )
    obj = compute_objective(
        loss,
        stats.logprobs.float(),
        batch.old_logprobs[idx],
        batch.advantages[idx],
        roll.response_mask[idx],
        selected=selected,
        entropy=None if stats.entropy is None else stats.entropy.float(),
        ref_logprobs=None if batch.ref_logprobs is None else batch.ref_logprobs[idx],
        denominators=den,
        is_weights=None if batch.is_weights is None else batch.is_weights[idx],
    )
    if not torch.isfinite(obj.loss):
        raise NonFiniteError(
            "the loss became NaN/inf. Lower optim.lr, keep optim.grad_clip > 0, or check the "
            "rewards; the run stopped before this update and the last checkpoint is intact."
        )
    # Data-parallel averages gradients over ranks; the loss is already normalised by the
    # global counts, so undo the average.
    learner.accelerator.backward(obj.loss * world)
    metrics = dict(obj.metrics)
    metrics["total"] = obj.loss.detach()
    return metrics


def _clip_and_step(learner: Learner, grad_clip: float, step: int, update: int,
                   dist: Dist) -> float:
    params = [p for p in learner.model.parameters() if p.requires_grad]
    max_norm = grad_clip if grad_clip > 0 else math.inf
    if learner.sharded:
        # torch's clip is DTensor-aware: the norm is over every rank's shards. (accelerate's
        # FSDP branch compares parameter lists with `==`, which raises once a second model,
        # e.g. the reference, is prepared.)
        total = torch.nn.utils.clip_grad_norm_(params, max_norm)
        norm = float(total.full_tensor() if hasattr(total, "full_tensor") else total)
    else:
        norm = float(learner.accelerator.clip_grad_norm_(params, max_norm))
    if not math.isfinite(norm):
        raise NonFiniteError(
            f"the gradient norm became {norm} at step {step} (update {update}). Lower "
            "optim.lr or set optim.grad_clip; the run stopped before this update and the last "
            "checkpoint is intact."
        )
    learner.optimizer.step()
    learner.scheduler.step()
    _check_weights(params, dist, step, update)
    return norm


def _check_weights(params: list[torch.Tensor], dist: Dist, step: int, update: int) -> None:
    """Stop, before anything is saved, if an optimizer step made a weight NaN/inf."""
    local = [p.to_local() if hasattr(p, "to_local") else p for p in params]
    bad = torch.stack([~torch.isfinite(p.detach()).all() for p in local]).any()
    if dist.max([float(bad)])[0]:
        raise NonFiniteError(
            f"the weights became NaN/inf in the optimizer step at step {step} (update "
            f"{update}). Lower optim.lr or check optim.eps; the run stopped before saving and "
            "the last checkpoint is intact."
        )


@torch.no_grad()
def _select(
    learner: Learner,
    batch: UpdateBatch,
    parts: list[torch.Tensor],
    loss: LossConfig,
    dist: Dist,
    temperature: float,
    current: bool,
    seed: int,
) -> list[torch.Tensor | None]:
    """The covariance selection of one mini-batch, split like its micro-batches.

    ``current``: score the log-probs of the current parameters (a no-grad forward) instead of
    the rollout-time ``old_logprobs``.
    """
    if loss.selection is None:
        return [None] * len(parts)
    roll = batch.rollout
    sel_parts = []
    for idx in parts:
        if current:
            with learner.autocast():
                lp = response_token_stats(
                    learner.model, roll.input_ids[idx], roll.attention_mask[idx],
                    roll.prompt_len, temperature=temperature, with_entropy=False,
                ).logprobs.float()
        else:
            lp = batch.old_logprobs[idx]
        sel_parts.append(SelectionPart(lp, batch.old_logprobs[idx], batch.advantages[idx],
                                       roll.response_mask[idx]))
    if loss.selection == "clip_cov":
        gen = torch.Generator().manual_seed(seed)
        sel = select_clip_cov(sel_parts, loss.clip_cov, generator=gen, dist=dist)
    else:
        sel = select_kl_cov(sel_parts, loss.kl_cov, dist=dist)
    return list(sel.masks)


def derive_seed(*parts: int) -> int:
    """A deterministic 63-bit seed from integers (same on every rank)."""
    h = 1469598103934665603
    for p in parts:
        h = ((h ^ (p & 0xFFFFFFFFFFFF)) * 1099511628211) % (1 << 63)
    return h
