"""Optimizer updates on one rollout batch: mini-batches, micro-batches, global selection.

The rollout batch (this rank's share) is cut into mini-batches — one optimizer step each —
and every mini-batch into micro-batches whose gradients are accumulated. Three rules make the
result independent of how the work is split:

1. every micro-batch's loss is normalised by the counts of the whole mini-batch across all
   ranks (:class:`~entropyrl.losses.Denominators`), and multiplied by the world size because
   data-parallel training averages gradients over ranks;
2. the Clip-Cov / KL-Cov token selection is made once per mini-batch over all its micro-batches
   and ranks (:mod:`entropyrl.selection`) and then split like the micro-batches;
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
from typing import Any

import torch

from entropyrl.config import TrainConfig
from entropyrl.errors import UserError
from entropyrl.losses import Denominators, compute_objective
from entropyrl.policy import response_token_stats
from entropyrl.rollout import Rollout
from entropyrl.selection import SelectionPart, select_clip_cov, select_kl_cov

# How each objective metric combines across micro-batches, ranks and updates.
_SHARES = {"policy_loss", "entropy_bonus", "total"}  # parts of a normalised sum: add up
_MINS = {"ratio_min"}
_MAXS = {"ratio_max"}


class NonFiniteError(UserError):
    """A loss or gradient became NaN/inf; the run stops before the optimizer step."""


@dataclass
class UpdateContext:
    """What the update needs from the trainer."""

    cfg: TrainConfig
    model: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    accelerator: Any
    world: int
    group: Any  # torch.distributed group or None


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

    def result(self, n_updates: int, group: Any) -> dict[str, float]:
        keys_w, keys_s = sorted(self.weighted), sorted(self.shares)
        sums = torch.tensor(
            [self.weighted[k] for k in keys_w]
            + [self.weights[k] for k in keys_w]
            + [self.shares[k] for k in keys_s],
            dtype=torch.float64,
        )
        mins = torch.tensor([self.mins[k] for k in sorted(self.mins)], dtype=torch.float64)
        maxs = torch.tensor([self.maxs[k] for k in sorted(self.maxs)], dtype=torch.float64)
        if group is not None:
            import torch.distributed as dist

            dist.all_reduce(sums, group=group)
            dist.all_reduce(mins, op=dist.ReduceOp.MIN, group=group)
            dist.all_reduce(maxs, op=dist.ReduceOp.MAX, group=group)
        n = len(keys_w)
        out = {k: float(sums[i] / max(float(sums[n + i]), 1.0)) for i, k in enumerate(keys_w)}
        out.update({k: float(sums[2 * n + i]) / n_updates for i, k in enumerate(keys_s)})
        out.update({k: float(v) for k, v in zip(sorted(self.mins), mins, strict=True)})
        out.update({k: float(v) for k, v in zip(sorted(self.maxs), maxs, strict=True)})
        return out


def global_denominators(mask: torch.Tensor, group: Any) -> Denominators:
    """Token and sequence counts of a mini-batch over all ranks."""
    local = Denominators.of(mask)
    if group is None:
        return local
    import torch.distributed as dist

    t = torch.tensor([local.n_tokens, local.n_seqs], dtype=torch.long)
    dist.all_reduce(t, group=group)
    return Denominators(int(t[0]), int(t[1]))


def update_on_batch(
    ctx: UpdateContext,
    batch: Rollout,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    ref_logprobs: torch.Tensor | None,
    *,
    step: int,
) -> dict[str, float]:
    """All optimizer updates of one rollout step; returns the ``loss/*`` and ``optim/*`` metrics.

    Args:
        ctx: model, optimizer and configuration.
        batch: this rank's rollout share, ``B`` rows.
        old_logprobs: log π_old of the response tokens ``[B, R]``.
        advantages: per-token advantages ``[B, R]``.
        ref_logprobs: reference-policy log-probs ``[B, R]`` or None.
        step: the rollout step (seeds shuffling and Clip-Cov draws).
    """
    cfg = ctx.cfg
    n_rows = len(batch)
    mini = cfg.update.mini_batch_size // ctx.world
    micro = cfg.update.micro_batch_size
    gen = torch.Generator().manual_seed(derive_seed(cfg.seed, step, 0))
    acc = _Accumulator()
    norms: list[float] = []
    n_updates = 0
    for epoch in range(cfg.update.epochs):
        order = torch.arange(n_rows)
        if cfg.update.shuffle:
            order = torch.randperm(n_rows, generator=gen)
        for start in range(0, n_rows, mini):
            rows = order[start : start + mini]
            parts = [rows[i : i + micro] for i in range(0, len(rows), micro)]
            fresh = epoch == 0 and start == 0
            selected = _select(ctx, batch, parts, old_logprobs, advantages, fresh, step, n_updates)
            den = global_denominators(batch.response_mask[rows], ctx.group)
            ctx.optimizer.zero_grad(set_to_none=True)
            for j, idx in enumerate(parts):
                sync = j == len(parts) - 1
                with nullcontext() if sync else ctx.accelerator.no_sync(ctx.model):
                    obj = _micro_step(ctx, batch, idx, old_logprobs, advantages, ref_logprobs,
                                      selected[j], den)
                acc.add(obj, int(batch.response_mask[idx].sum()))
            norms.append(_clip_and_step(ctx, step, n_updates))
            n_updates += 1
    out = {f"loss/{k}": v for k, v in acc.result(n_updates, ctx.group).items()}
    out["optim/grad_norm"] = sum(norms) / len(norms)
    out["optim/grad_norm_max"] = max(norms)
    out["optim/lr"] = float(ctx.optimizer.param_groups[0]["lr"])
    out["optim/updates"] = n_updates
    return out


def _micro_step(
    ctx: UpdateContext,
    batch: Rollout,
    idx: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    ref_logprobs: torch.Tensor | None,
    selected: torch.Tensor | None,
    den: Denominators,
) -> dict[str, torch.Tensor]:
    cfg = ctx.cfg
    stats = response_token_stats(
        ctx.model,
        batch.input_ids[idx],
        batch.attention_mask[idx],
        batch.prompt_len,
        temperature=cfg.rollout.temperature,
        with_entropy=cfg.loss.entropy_coef > 0,
    )
    obj = compute_objective(
        cfg.loss,
        stats.logprobs,
        old_logprobs[idx],
        advantages[idx],
        batch.response_mask[idx],
        selected=selected,
        entropy=stats.entropy,
        ref_logprobs=None if ref_logprobs is None else ref_logprobs[idx],
        denominators=den,
    )
    if not torch.isfinite(obj.loss):
        raise NonFiniteError(
            "the loss became NaN/inf. Lower optim.lr, keep optim.grad_clip > 0, or check the "
            "rewards; the run stopped before this update and the last checkpoint is intact."
        )
    # Data-parallel averages gradients over ranks; the loss is already normalised by the
    # global counts, so undo the average.
    ctx.accelerator.backward(obj.loss * ctx.world)
    metrics = dict(obj.metrics)
    metrics["total"] = obj.loss.detach()
    return metrics


def _clip_and_step(ctx: UpdateContext, step: int, update: int) -> float:
    params = [p for p in ctx.model.parameters() if p.requires_grad]
    max_norm = ctx.cfg.optim.grad_clip if ctx.cfg.optim.grad_clip > 0 else math.inf
    norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
    if not math.isfinite(norm):
        raise NonFiniteError(
            f"the gradient norm became {norm} at step {step} (update {update}). Lower "
            "optim.lr or set optim.grad_clip; the run stopped before this update and the last "
            "checkpoint is intact."
        )
    ctx.optimizer.step()
    ctx.scheduler.step()
    return norm


@torch.no_grad()
def _select(
    ctx: UpdateContext,
    batch: Rollout,
    parts: list[torch.Tensor],
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    fresh: bool,
    step: int,
    update: int,
) -> list[torch.Tensor | None]:
    """The covariance selection of one mini-batch, split like its micro-batches."""
    cfg = ctx.cfg
    kind = cfg.loss.selection
    if kind is None:
        return [None] * len(parts)
    use_old = cfg.update.selection_logprobs == "old" or fresh
    sel_parts = []
    for idx in parts:
        if use_old:
            lp = old_logprobs[idx]
        else:
            lp = response_token_stats(
                ctx.model, batch.input_ids[idx], batch.attention_mask[idx], batch.prompt_len,
                temperature=cfg.rollout.temperature, with_entropy=False,
            ).logprobs
        sel_parts.append(
            SelectionPart(lp, old_logprobs[idx], advantages[idx], batch.response_mask[idx])
        )
    if kind == "clip_cov":
        gen = torch.Generator().manual_seed(derive_seed(cfg.seed, step, 1 + update))
        sel = select_clip_cov(sel_parts, cfg.loss.clip_cov, generator=gen, group=ctx.group)
    else:
        sel = select_kl_cov(sel_parts, cfg.loss.kl_cov, group=ctx.group)
    return list(sel.masks)


def derive_seed(*parts: int) -> int:
    """A deterministic 63-bit seed from integers (same on every rank)."""
    h = 1469598103934665603
    for p in parts:
        h = ((h ^ (p & 0xFFFFFFFFFFFF)) * 1099511628211) % (1 << 63)
    return h
