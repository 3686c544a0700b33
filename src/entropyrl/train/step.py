"""One RL step: rollout → reward → advantage → score → update → metrics → dynamics."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import torch

from entropyrl.advantages import compute_advantages
from entropyrl.distributed import Dist
from entropyrl.errors import UserError
from entropyrl.losses import LossConfig, truncated_is_weights
from entropyrl.policy import response_token_stats
from entropyrl.prime import prime_advantages
from entropyrl.rollout import Rollout
from entropyrl.train.batch_metrics import (
    StepBatch,
    entropy_change,
    logprob_gap_metrics,
    step_metrics,
    subset_entropy_change,
    tis_metrics,
)
from entropyrl.train.collect import Collected, collect
from entropyrl.train.prime import prime_step
from entropyrl.train.update import (
    UpdateBatch,
    derive_seed,
    rows_scored_by_first_update,
    update_on_batch,
)

if TYPE_CHECKING:
    from entropyrl.train.setup import Run

# The estimators that use a reward's dense token rewards (the others take one score each).
DENSE_ESTIMATORS = ("reinforce_pp", "rloo", "prime")


def rl_step(run: Run, step: int) -> dict[str, float]:
    """One rollout step on every rank; returns the step's metrics (the same on every rank)."""
    cfg, dist, loss = run.cfg, run.dist, run.loss or run.cfg.loss
    t0 = time.perf_counter()
    torch.manual_seed(derive_seed(cfg.seed, step, dist.rank, 17))
    got = collect(run.engine, run.tasks.train, run.sampler, run.tasks.score_batch,
                  rollout=cfg.rollout, reward=cfg.reward, dist=dist,
                  pad_token_id=run.tokenizer.pad_token_id,
                  eos_token_id=run.tokenizer.eos_token_id,
                  decode=lambda ids: run.tokenizer.decode(ids, skip_special_tokens=True))
    roll, m = got.rollout, dict(got.metrics)
    t1 = time.perf_counter()
    ref_lp = None if run.ref_model is None else score(run.ref_model, run, roll)[0]
    adv = step_advantages(run, got, ref_lp, step, m)
    # log π_old and its entropy; with fused scoring the first update's forward fills some rows.
    batch = prepare_batch(run, roll, adv, ref_lp if cfg.loss.ref_kl_coef > 0 else None, loss,
                          step)
    t2 = time.perf_counter()
    m.update(update_on_batch(run.learner, batch, loss=loss, update=cfg.update, dist=dist,
                             temperature=cfg.rollout.temperature,
                             grad_clip=cfg.optim.grad_clip, seed=cfg.seed, step=step))
    run.engine.sync_weights(run.learner.model)
    t3 = time.perf_counter()
    # The global batch, gathered once: the metrics and the entropy controller read it.
    assert batch.entropy is not None
    run.last_batch = StepBatch(roll.response_mask, batch.old_logprobs, batch.entropy, adv,
                               got.rewards, got.solved, roll.truncated,
                               roll.group_ids).gathered(dist)
    m.update(step_metrics(run.last_batch, Dist.single()))
    m.update(sampler_gap(roll, batch, cfg.loss.tis_cap, dist))
    t4 = time.perf_counter()
    # ΔH on the same tokens: the updated policy's entropy on a sample of the batch's responses.
    h0 = m["train/entropy"]
    m.update(entropy_change(h0, h0 + measure_delta_entropy(run, batch, step), m["dyn/cov_npg"]))
    t5 = time.perf_counter()
    m.update({"time/old_logprob_s": t2 - t1, "time/update_s": t3 - t2,
              "time/diagnostics_s": t4 - t3, "time/dynamics_s": t5 - t4, "time/step_s": t5 - t0})
    return m


def step_advantages(run: Run, got: Collected, ref_lp: torch.Tensor | None, step: int,
                    metrics: dict[str, float]) -> torch.Tensor:
    """The token advantages ``[B, R]`` of the collected batch (PRIME's when a PRM is trained).

    PRIME first updates its reward model on the batch's outcome labels (``train/prime.py``);
    its ``prime/*`` metrics and ``time/prm_s`` go into ``metrics``. Dense rewards from the
    reward function (``got.token_rewards``) enter the estimators that take token rewards:
    REINFORCE++'s returns, RLOO as PRIME combines dense and outcome rewards, and PRIME itself
    (added to the PRM's token rewards).
    """
    cfg, roll = run.cfg, got.rollout
    name, dense = cfg.algorithm.advantage, got.token_rewards
    if dense is not None and name not in DENSE_ESTIMATORS:
        raise UserError(
            f"the reward returns token_rewards, but algorithm.advantage={name} takes one score "
            f"per response and would drop them; use one of {', '.join(DENSE_ESTIMATORS)}, or "
            "return scores only")
    if run.prm is None:
        if dense is not None and name == "rloo":
            return prime_advantages(dense, got.rewards, roll.group_ids, roll.response_mask,
                                    gamma=cfg.algorithm.gamma).token_advantages
        return compute_advantages(name, got.rewards, roll.group_ids, roll.response_mask,
                                  token_rewards=dense,
                                  gamma=cfg.algorithm.gamma).token_advantages
    assert ref_lp is not None  # setup loads the reference for PRIME
    t = time.perf_counter()
    adv, prime_metrics = prime_step(run.prm, roll, got.rewards, got.solved, ref_lp,
                                    lambda model: score(model, run, roll)[0], cfg=cfg,
                                    dist=run.dist, step=step, token_rewards=dense)
    metrics.update(prime_metrics)
    metrics["time/prm_s"] = time.perf_counter() - t
    return adv


def prepare_batch(run: Run, roll: Rollout, adv: torch.Tensor, ref_lp: torch.Tensor | None,
                  loss: LossConfig, step: int) -> UpdateBatch:
    """The update's inputs: log π_old, entropy, the given ``ref_lp`` and the IS weights.

    Every tensor is ``[B, R]``; ``ref_lp`` may be None.

    The rows that the first update scores with its own forward
    (:func:`~entropyrl.train.update.rows_scored_by_first_update`) are NaN here until it does.
    """
    cfg = run.cfg
    tis = roll.sampler_logprobs is not None and cfg.loss.tis_cap > 0
    filled = rows_scored_by_first_update(len(roll), loss=loss, update=cfg.update,
                                         world=run.dist.world, seed=cfg.seed, step=step,
                                         sampler_weights=tis)
    policy = run.learner.accelerator.unwrap_model(run.learner.model)
    if filled is None:
        old_lp, entropy = score(policy, run, roll, with_entropy=True)
    else:
        rest = torch.ones(len(roll), dtype=torch.bool)
        rest[filled] = False
        rest_rows = rest.nonzero().squeeze(1)
        old_lp = torch.full(roll.response_mask.shape, float("nan"),
                            device=roll.response_mask.device)
        entropy = old_lp.clone()
        if len(rest_rows):
            old_lp[rest_rows], entropy[rest_rows] = score(policy, run, roll, rows=rest_rows,
                                                          with_entropy=True)
    weights = None
    if tis:
        assert roll.sampler_logprobs is not None
        weights = truncated_is_weights(old_lp, roll.sampler_logprobs, cfg.loss.tis_cap)
    return UpdateBatch(roll, old_lp, adv, ref_lp, weights, entropy, filled)


def sampler_gap(roll: Rollout, batch: UpdateBatch, tis_cap: float,
                dist: Dist) -> dict[str, float]:
    """The sampler/trainer log-prob gap and the truncated IS weights' metrics, if any.

    Only for engines that report their sampling log-probs (vLLM); the HF engine samples from
    the trained module itself, so there is no gap to measure.
    """
    if roll.sampler_logprobs is None:
        return {}
    mask = roll.response_mask
    out = logprob_gap_metrics(batch.old_logprobs, roll.sampler_logprobs, mask, dist)
    if batch.is_weights is not None:
        out.update(tis_metrics(batch.old_logprobs, roll.sampler_logprobs, batch.is_weights,
                               tis_cap, mask, dist))
    return out


def measure_delta_entropy(run: Run, batch: UpdateBatch, step: int) -> float:
    """The same-batch ``ΔH`` estimate: after − before entropy on a sample of each group.

    ``round(dynamics.entropy_after_fraction · G)`` responses (at least one) of every prompt
    group are re-scored by the updated policy; the estimate is their token-mean paired
    difference (docs/dynamics.md). The draw depends on ``(seed, step)`` and the global group
    index only, so N ranks pick what one process picks.
    """
    cfg, dist, roll = run.cfg, run.dist, batch.rollout
    rows = entropy_after_rows(len(roll), cfg.rollout.group_size,
                              cfg.dynamics.entropy_after_fraction, dist, cfg.seed, step)
    policy = run.learner.accelerator.unwrap_model(run.learner.model)
    _, after = score(policy, run, roll, rows=rows, with_entropy=True)
    assert batch.entropy is not None
    return subset_entropy_change(batch.entropy[rows], after, roll.response_mask[rows], dist)


def entropy_after_rows(n_rows: int, group_size: int, fraction: float, dist: Dist, seed: int,
                       step: int) -> torch.Tensor:
    """This rank's rows (sorted, CPU) whose entropy is re-scored after the update.

    Rows are laid out group by group (``G`` each) and rank ``r`` holds global groups
    ``r·n … (r+1)·n − 1``; one ``[groups, G]`` draw over all ranks' groups picks the same
    ``k`` positions in each group whatever the number of ranks, and every rank scores the
    same number of rows (a sharded forward is a collective).
    """
    k = max(1, round(fraction * group_size))
    if k >= group_size:
        return torch.arange(n_rows)
    n_groups = n_rows // group_size
    gen = torch.Generator().manual_seed(derive_seed(seed, step, 29))
    draw = torch.rand(n_groups * dist.world, group_size, generator=gen)
    mine = draw[dist.rank * n_groups : (dist.rank + 1) * n_groups]
    picked = mine.argsort(dim=1)[:, :k] + torch.arange(n_groups)[:, None] * group_size
    return picked.reshape(-1).sort().values


@torch.no_grad()
def score(model: Any, run: Run, roll: Rollout, *, rows: torch.Tensor | None = None,
          with_entropy: bool = False) -> tuple[torch.Tensor, Any]:
    """Log π ``[b, R]`` (and entropy ``[b, R]`` if asked) of ``rows`` (default: all rows).

    Scored by ``model`` in micro-batches of ``update.micro_batch_size``, without gradients.
    """
    lps, ents = [], []
    micro = run.cfg.update.micro_batch_size
    n = len(roll) if rows is None else len(rows)
    for start in range(0, n, micro):
        sl = slice(start, start + micro) if rows is None else rows[start : start + micro]
        with run.learner.autocast():
            st = response_token_stats(model, roll.input_ids[sl], roll.attention_mask[sl],
                                      roll.prompt_len, temperature=run.cfg.rollout.temperature,
                                      with_entropy=with_entropy)
        lps.append(st.logprobs.float())
        if st.entropy is not None:
            ents.append(st.entropy.float())
    return torch.cat(lps), torch.cat(ents) if with_entropy else None
