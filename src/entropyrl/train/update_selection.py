"""The Clip-Cov / KL-Cov selection of one optimizer mini-batch, split like its micro-batches.

The trainer's side of :mod:`entropyrl.covariance`: which log-probs are scored (the rollout's
``old_logprobs``, or the current parameters' from a no-grad forward, or a one-micro-batch
mini-batch's own forward) and the seeded draw, the same on every rank.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from entropyrl.covariance import SelectionPart, select_clip_cov, select_kl_cov
from entropyrl.distributed import Dist
from entropyrl.losses import LossConfig
from entropyrl.policy import response_token_stats

if TYPE_CHECKING:
    from entropyrl.train.update import Learner, UpdateBatch


@torch.no_grad()
def select_scored(
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
    roll = batch.rollout
    scored = []
    for idx in parts:
        if current:
            with learner.autocast():
                lp = response_token_stats(
                    learner.model, roll.input_ids[idx], roll.attention_mask[idx],
                    roll.prompt_len, temperature=temperature, with_entropy=False,
                ).logprobs.float()
        else:
            lp = batch.old_logprobs[idx]
        scored.append(lp)
    return selection_masks(batch, parts, scored, loss, dist, seed)


def own_selection(batch: UpdateBatch, idx: torch.Tensor, loss: LossConfig, dist: Dist,
                  seed: int, current: bool, logprobs: torch.Tensor) -> torch.Tensor | None:
    """The selection of a one-micro-batch mini-batch from its own forward's ``logprobs``."""
    scored = logprobs if current else batch.old_logprobs[idx]
    return selection_masks(batch, [idx], [scored], loss, dist, seed)[0]


@torch.no_grad()
def selection_masks(batch: UpdateBatch, parts: list[torch.Tensor], scored: list[torch.Tensor],
                    loss: LossConfig, dist: Dist, seed: int) -> list[torch.Tensor | None]:
    """Clip-Cov / KL-Cov masks of the mini-batch ``parts`` from their scored log-probs."""
    roll = batch.rollout
    sel_parts = [SelectionPart(lp, batch.old_logprobs[idx], batch.advantages[idx],
                               roll.response_mask[idx]) for idx, lp in zip(parts, scored,
                                                                          strict=True)]
    if loss.selection == "clip_cov":
        gen = torch.Generator().manual_seed(seed)
        sel = select_clip_cov(sel_parts, loss.clip_cov, generator=gen, dist=dist)
    elif loss.selection == "kl_cov":
        sel = select_kl_cov(sel_parts, loss.kl_cov, dist=dist)
    else:
        return [None] * len(parts)
    return list(sel.masks)
