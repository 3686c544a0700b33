"""PRIME in the loop: an implicit process reward model trained beside the policy.

With ``algorithm.advantage = prime`` the run holds a second trained model, the implicit PRM
``π_φ``, initialised from the same weights as the policy, and the frozen reference ``π_ref``
(the initial weights too). Each step (PRIME, Cui et al. 2025, arXiv 2502.01456, Algorithm 1):

1. the PRM learns from the step's outcome labels (``solved``): one AdamW step on the
   cross-entropy of the sequence-level implicit reward ``q = β·Σ_t log(π_φ/π_ref)``
   (``prime.update = before``, PRIME's default; ``after`` learns once the rewards are taken,
   ``none`` keeps the PRM frozen);
2. the token rewards ``β·log(π_φ(y_t)/π_ref(y_t))`` of the updated PRM and the outcome rewards
   give the advantages, each part with a leave-one-out baseline over the prompt's responses
   (:func:`entropyrl.prime.prime_advantages`).

The PRM's loss is normalised by the number of responses of the whole batch over all ranks, so
``N`` processes take the step one process takes on the same global batch. Its weights are
checkpointed in Hugging Face format in ``step_N/prm/`` and its optimizer state in
``trainer_state.pt``; a resumed run continues exactly. The maths lives in
:mod:`entropyrl.prime`; this module only runs it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from entropyrl.config import TrainConfig
from entropyrl.distributed import Dist
from entropyrl.errors import UserError
from entropyrl.models import load_model_and_tokenizer
from entropyrl.policy import response_token_stats
from entropyrl.prime import implicit_process_rewards, prime_advantages
from entropyrl.rollout import Rollout
from entropyrl.train.update import Learner, clip_and_step
from entropyrl.train.update_checks import NonFiniteError

PRM_DIR = "prm"

Scorer = Callable[[Any], torch.Tensor]  # model -> log π of the batch's response tokens [B, R]


def uses_prime(cfg: TrainConfig) -> bool:
    """The run trains an implicit PRM."""
    return cfg.algorithm.advantage == "prime"


def make_prm(cfg: TrainConfig, accelerator: Any, resume: Path | None) -> Learner:
    """The PRM and its optimizer, from the checkpoint's ``prm/`` or the initial weights."""
    source = resume / PRM_DIR if resume is not None else None
    if source is not None and not source.is_dir():
        raise UserError(f"{resume} holds no PRIME reward model ({PRM_DIR}/): it was trained with "
                        "another algorithm.advantage. Resume with that config, or train into a "
                        "new --out directory.")
    model, _ = load_model_and_tokenizer(cfg.model, override_path=source,
                                        master_weights=cfg.model.master_weights)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.prime.lr,
                                  betas=(cfg.optim.beta1, cfg.optim.beta2), eps=cfg.optim.eps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    model, optimizer = accelerator.prepare(model, optimizer)
    return Learner(model, optimizer, scheduler, accelerator)


def prime_step(prm: Learner, roll: Rollout, outcome: torch.Tensor, solved: torch.Tensor,
               ref_logprobs: torch.Tensor, score: Scorer, *, cfg: TrainConfig, dist: Dist,
               step: int, token_rewards: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, dict[str, float]]:
    """Train the PRM on this step's labels and return PRIME's advantages ``[B, R]``.

    Args:
        prm: the implicit PRM.
        roll: this rank's ``B`` responses.
        outcome: ``[B]`` outcome rewards (after any shaping).
        solved: ``[B]`` bool outcome labels.
        ref_logprobs: ``[B, R]`` log π_ref of the response tokens.
        score: no-grad log-probs of the batch under a model (the loop's scorer).
        cfg: the run's config (``prime.*``, ``algorithm.gamma``, batching, temperature).
        dist: the ranks.
        step: the rollout step (for error messages).
        token_rewards: ``[B, R]`` dense rewards of the reward function, added to the PRM's
            token rewards in the advantages (not in the ``prime/*`` metrics).

    Returns:
        The token advantages and the ``prime/*`` metrics.
    """
    p = cfg.prime
    labels = solved.float()
    metrics: dict[str, float] = {}
    if p.update == "before":
        metrics.update(update_prm(prm, roll, ref_logprobs, labels, cfg=cfg, dist=dist, step=step))
    prm_lp = score(prm.accelerator.unwrap_model(prm.model))
    mask = roll.response_mask
    rewards = implicit_process_rewards(prm_lp, ref_logprobs, mask, p.beta)
    dense = rewards if token_rewards is None else rewards + token_rewards.to(rewards.dtype)
    adv = prime_advantages(dense, outcome, roll.group_ids, mask,
                           gamma=cfg.algorithm.gamma).token_advantages
    if p.update == "after":
        metrics.update(update_prm(prm, roll, ref_logprobs, labels, cfg=cfg, dist=dist, step=step))
    metrics.update(process_reward_metrics(rewards, mask, labels, dist))
    return adv, metrics


def update_prm(prm: Learner, roll: Rollout, ref_logprobs: torch.Tensor, labels: torch.Tensor,
               *, cfg: TrainConfig, dist: Dist, step: int) -> dict[str, float]:
    """One optimizer step of the PRM on the batch's outcome labels (PRIME's cross-entropy).

    The loss is ``Σ_i BCE(q_i, l_i) / N`` over the ``N`` responses of all ranks, accumulated
    over micro-batches of ``update.micro_batch_size``. Returns ``prime/loss`` and
    ``prime/label_acc`` (the fraction of responses whose ``q`` has the label's sign) measured
    before the step, and ``prime/grad_norm``.
    """
    micro = cfg.update.micro_batch_size
    parts = [torch.arange(s, min(s + micro, len(roll))) for s in range(0, len(roll), micro)]
    n_total = dist.sum([float(len(roll))])[0]
    loss_sum: Any = 0.0  # tensors on the device once added to: one host read at the end
    agree: Any = 0.0
    prm.optimizer.zero_grad(set_to_none=True)
    for j, idx in enumerate(parts):
        sync = j == len(parts) - 1
        with nullcontext() if sync else prm.accelerator.no_sync(prm.model):
            with prm.autocast():
                lp = response_token_stats(
                    prm.model, roll.input_ids[idx], roll.attention_mask[idx], roll.prompt_len,
                    temperature=cfg.rollout.temperature, with_entropy=False,
                ).logprobs.float()
            mask = roll.response_mask[idx]
            q = implicit_process_rewards(lp, ref_logprobs[idx], mask, cfg.prime.beta).sum(1)
            y = labels[idx].to(q.dtype)
            loss = F.binary_cross_entropy_with_logits(q, y, reduction="sum") / n_total
            # Data-parallel training averages gradients over ranks; the loss is already a
            # share of the global mean.
            prm.accelerator.backward(loss * dist.world)
        loss_sum = loss_sum + loss.detach()
        agree = agree + ((q.detach() > 0).float() == y).float().sum()
    norm_t, bad = clip_and_step(prm, cfg.optim.grad_clip, step, 0, dist)
    norm = float(norm_t)
    if dist.max([float(bad)])[0] or not math.isfinite(norm):
        raise NonFiniteError(
            f"PRIME's reward model became NaN/inf at step {step} (gradient norm {norm}). Lower "
            "prime.lr or prime.beta, or keep optim.grad_clip > 0; the last checkpoint is intact.")
    total_loss, total_agree = dist.sum([float(loss_sum), float(agree)])
    return {"prime/loss": total_loss, "prime/label_acc": total_agree / max(n_total, 1.0),
            "prime/grad_norm": norm}


def process_reward_metrics(rewards: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor,
                           dist: Dist) -> dict[str, float]:
    """Token-mean implicit reward, and the mean ``q`` of solved minus unsolved responses.

    ``rewards`` ``[B, R]`` are the token rewards, ``labels`` ``[B]`` the outcome labels. The
    gap of ``q`` between solved and unsolved responses says how well the PRM separates them
    (0 when a side is empty).
    """
    m = mask.bool()
    q = (rewards * m).sum(1)
    pos = labels > 0.5
    t = dist.sum([float(rewards[m].sum()), float(m.sum()), float(rewards[m].abs().sum()),
                  float(q[pos].sum()), float(pos.sum()), float(q[~pos].sum()),
                  float((~pos).sum())])
    both = t[4] > 0 and t[6] > 0
    return {
        "prime/token_reward_mean": t[0] / max(t[1], 1.0),
        "prime/token_reward_abs_mean": t[2] / max(t[1], 1.0),
        "prime/q_gap": t[3] / t[4] - t[5] / t[6] if both else 0.0,
    }
