"""One RL step: rollout → reward → advantage → score → update → dynamics → metrics."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import torch

from entropyrl.advantages import compute_advantages
from entropyrl.distributed import Dist
from entropyrl.losses import truncated_is_weights
from entropyrl.policy import response_token_stats
from entropyrl.rollout import Rollout
from entropyrl.train.batch_metrics import (
    StepBatch,
    entropy_change,
    entropy_metrics,
    logprob_gap_metrics,
    step_metrics,
    tis_metrics,
)
from entropyrl.train.collect import collect
from entropyrl.train.prime import prime_step
from entropyrl.train.update import UpdateBatch, derive_seed, update_on_batch

if TYPE_CHECKING:
    from entropyrl.train.setup import Run


def rl_step(run: Run, step: int) -> dict[str, float]:
    """One rollout step on every rank; returns the step's metrics (the same on every rank)."""
    cfg, dist = run.cfg, run.dist
    t0 = time.perf_counter()
    torch.manual_seed(derive_seed(cfg.seed, step, dist.rank, 17))
    got = collect(run.engine, run.tasks.train, run.sampler, run.tasks.score_batch,
                  rollout=cfg.rollout, reward=cfg.reward, dist=dist,
                  pad_token_id=run.tokenizer.pad_token_id)
    roll, m = got.rollout, dict(got.metrics)
    t1 = time.perf_counter()
    policy = run.learner.accelerator.unwrap_model(run.learner.model)
    old_lp, entropy = score(policy, run, roll, with_entropy=True)
    ref_lp = None if run.ref_model is None else score(run.ref_model, run, roll)[0]
    t2 = time.perf_counter()
    if run.prm is not None and ref_lp is not None:
        adv, prime_m = prime_step(run.prm, roll, got.rewards, got.solved, ref_lp,
                                  lambda model: score(model, run, roll)[0], cfg=cfg, dist=dist,
                                  step=step)
        m.update(prime_m)
        m["time/prm_s"] = time.perf_counter() - t2
    else:
        adv = compute_advantages(cfg.algorithm.advantage, got.rewards, roll.group_ids,
                                 roll.response_mask, gamma=cfg.algorithm.gamma).token_advantages
    if cfg.loss.ref_kl_coef <= 0:
        ref_lp = None  # scored for PRIME's rewards only
    t2 = time.perf_counter()
    # The global batch, gathered once: the metrics and the entropy controller read it.
    run.last_batch = StepBatch(roll.response_mask, old_lp, entropy, adv, got.rewards,
                               got.solved, roll.truncated, roll.group_ids).gathered(dist)
    m.update(step_metrics(run.last_batch, Dist.single()))
    is_weights = sampler_gap(roll, old_lp, run.cfg.loss.tis_cap, dist, m)
    batch = UpdateBatch(roll, old_lp, adv, ref_lp, is_weights)
    m.update(update_on_batch(run.learner, batch, loss=run.loss or cfg.loss, update=cfg.update,
                             dist=dist, temperature=cfg.rollout.temperature,
                             grad_clip=cfg.optim.grad_clip, seed=cfg.seed, step=step))
    run.engine.sync_weights(run.learner.model)
    t3 = time.perf_counter()
    # ΔH on the same batch: the entropy of the updated policy at the same tokens.
    _, after = score(policy, run, roll, with_entropy=True)
    after_h = entropy_metrics(after, roll.response_mask, dist)["train/entropy"]
    m.update(entropy_change(m["train/entropy"], after_h, m["dyn/cov_npg"]))
    t4 = time.perf_counter()
    m.update({"time/old_logprob_s": t2 - t1, "time/update_s": t3 - t2,
              "time/dynamics_s": t4 - t3, "time/step_s": t4 - t0})
    return m


def sampler_gap(roll: Rollout, old_lp: torch.Tensor, tis_cap: float, dist: Dist,
                metrics: dict[str, float]) -> torch.Tensor | None:
    """Log the sampler/trainer log-prob gap; the truncated IS weights ``[B, R]`` if on.

    Only for engines that report their sampling log-probs (vLLM); the HF engine samples from
    the trained module itself, so there is no gap to measure.
    """
    if roll.sampler_logprobs is None:
        return None
    mask = roll.response_mask
    metrics.update(logprob_gap_metrics(old_lp, roll.sampler_logprobs, mask, dist))
    if tis_cap <= 0:
        return None
    weights = truncated_is_weights(old_lp, roll.sampler_logprobs, tis_cap)
    metrics.update(tis_metrics(old_lp, roll.sampler_logprobs, weights, tis_cap, mask, dist))
    return weights


@torch.no_grad()
def score(model: Any, run: Run, roll: Rollout, *, with_entropy: bool = False) -> tuple[
    torch.Tensor, Any
]:
    """Log π ``[B, R]`` (and entropy ``[B, R]`` if asked) of the batch under ``model``."""
    lps, ents = [], []
    micro = run.cfg.update.micro_batch_size
    for start in range(0, len(roll), micro):
        sl = slice(start, start + micro)
        with run.learner.autocast():
            st = response_token_stats(model, roll.input_ids[sl], roll.attention_mask[sl],
                                      roll.prompt_len, temperature=run.cfg.rollout.temperature,
                                      with_entropy=with_entropy)
        lps.append(st.logprobs.float())
        if st.entropy is not None:
            ents.append(st.entropy.float())
    return torch.cat(lps), torch.cat(ents) if with_entropy else None
