"""One step's rollout batch: sample through an engine, score, and (DAPO) keep mixed groups.

With dynamic sampling (DAPO, Yu et al. 2025) groups whose rewards are all equal carry no
gradient under group-normalised advantages; they are dropped and more prompts are drawn, up to
``max_gen_batches`` rounds. Every rank draws every round's prompts, generating only while its
own batch is short, so the prompt sampler advances identically on all ranks.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, NamedTuple

import torch

from entropyrl.config import RewardConfig, RolloutConfig
from entropyrl.distributed import Dist
from entropyrl.errors import UserError
from entropyrl.rewards import overlong_penalties
from entropyrl.rewards.token_rewards import place_token_rewards
from entropyrl.rollout import Rollout, RolloutEngine, SamplingParams, concat_rollouts
from entropyrl.tasks import PromptSampler
from entropyrl.tasks.base import Row, ScoreBatch
from entropyrl.train.reward_info import reward_info_metrics


class Collected(NamedTuple):
    """This rank's batch of a step.

    Attributes:
        rollout: ``B`` sampled responses (``B = rollout.n_prompts·G / world``).
        rewards: ``[B]`` rewards used for the advantages (after any shaping).
        solved: ``[B]`` bool, responses the reward counts as solved.
        metrics: generation counters (summed over ranks), timings, and the reward info of
            the kept responses as ``reward/*`` (over all ranks, :mod:`.reward_info`).
        token_rewards: ``[B, R]`` dense rewards the reward placed on tokens
            (:mod:`entropyrl.rewards.token_rewards`), or None when it gave none.
    """

    rollout: Rollout
    rewards: torch.Tensor
    solved: torch.Tensor
    metrics: dict[str, float]
    token_rewards: torch.Tensor | None = None


def shaped_rewards(scores: torch.Tensor, lengths: torch.Tensor, rollout: RolloutConfig,
                   reward: RewardConfig) -> torch.Tensor:
    """Verifier scores plus the DAPO overlong penalty (when ``reward.overlong_buffer > 0``)."""
    if reward.overlong_buffer <= 0:
        return scores
    penalties = overlong_penalties(lengths.tolist(), max_length=rollout.max_new_tokens,
                                   buffer=reward.overlong_buffer, factor=reward.overlong_factor)
    return scores + torch.tensor(penalties, dtype=scores.dtype)


def collect(
    engine: RolloutEngine,
    rows: list[Row],
    sampler: PromptSampler,
    score_batch: ScoreBatch,
    *,
    rollout: RolloutConfig,
    reward: RewardConfig,
    dist: Dist,
    pad_token_id: int,
    eos_token_id: int | None = None,
    decode: Callable[[list[int]], str] | None = None,
) -> Collected:
    """Sample, score and (with dynamic sampling) filter one step's batch on this rank.

    ``decode`` turns response tokens into text as the engine does; with ``eos_token_id`` it
    places the reward's dense rewards on tokens (a reward that gives dense rewards needs
    both). Groups count as mixed by their scores alone.
    """
    n_local = rollout.n_prompts // dist.world
    g = rollout.group_size
    sampling = SamplingParams(max_new_tokens=rollout.max_new_tokens,
                              temperature=rollout.temperature, top_p=rollout.top_p)
    kept: list[Rollout] = []
    kept_rewards: list[torch.Tensor] = []
    kept_solved: list[torch.Tensor] = []
    kept_info: list[Any] = []  # RewardResult.info of the kept responses, in batch order
    kept_dense: list[Any] = []  # RewardResult.token_rewards of the kept responses
    n_kept, rounds, n_groups, n_mixed = 0, 0, 0, 0
    t_gen = t_rew = 0.0
    while rounds < rollout.max_gen_batches:
        if rounds and not dist.sum([float(n_kept < n_local)])[0]:
            break  # every rank's batch is full
        rounds += 1
        idx = sampler.take(rollout.n_prompts)
        if n_kept == n_local:
            continue  # full here, short on another rank: keep the sampler in step
        mine = [rows[i] for i in idx[dist.rank * n_local : (dist.rank + 1) * n_local]]
        t = time.perf_counter()
        roll = engine.generate([r["prompt"] for r in mine], g, sampling)
        t_gen += time.perf_counter() - t
        t = time.perf_counter()
        results = score_batch(roll.texts, [mine[i // g] for i in range(len(roll))])
        scores = torch.tensor([r.score for r in results], dtype=torch.float32)
        solved = torch.tensor([r.solved for r in results], dtype=torch.bool)
        rewards = shaped_rewards(scores, roll.response_mask.sum(1).cpu(), rollout, reward)
        t_rew += time.perf_counter() - t
        per_group = rewards.view(-1, g)
        mixed = (per_group != per_group[:, :1]).any(dim=1)
        n_groups += len(mine)
        n_mixed += int(mixed.sum())
        if not rollout.dynamic_sampling:
            kept, kept_rewards, kept_solved, n_kept = [roll], [rewards], [solved], len(mine)
            kept_info = [r.info for r in results]
            kept_dense = [r.token_rewards for r in results]
            break
        # Mixed groups first; on the last allowed round, top up with equal-reward groups
        # (zero advantage) so every step, and every rank, has the same batch size.
        last_round = rounds == rollout.max_gen_batches
        order = torch.cat([mixed.nonzero(), (~mixed).nonzero()]).squeeze(-1)
        take = (order if last_round else mixed.nonzero().squeeze(-1))[: n_local - n_kept]
        if len(take):
            rows_idx = (take[:, None] * g + torch.arange(g)).reshape(-1)
            kept.append(roll.select(rows_idx.to(roll.input_ids.device)))
            kept_rewards.append(rewards[rows_idx])
            kept_solved.append(solved[rows_idx])
            kept_info += [results[i].info for i in rows_idx.tolist()]
            kept_dense += [results[i].token_rewards for i in rows_idx.tolist()]
            n_kept += len(take)
    batch = concat_rollouts(kept, pad_token_id)
    rewards = torch.cat(kept_rewards).to(batch.input_ids.device)
    dense = None
    if any(kept_dense):
        if decode is None or eos_token_id is None:
            raise ValueError("collect: the reward gives token_rewards; pass decode and "
                             "eos_token_id")
        try:
            dense = place_token_rewards(kept_dense, batch.response_ids, batch.response_mask,
                                        batch.texts, eos_id=eos_token_id, decode=decode)
        except ValueError as exc:
            raise UserError(f"the reward's token_rewards could not be placed: {exc}. Fix the "
                            "reward function.") from None
    dense_sum = 0.0 if dense is None else float(dense.sum())
    n_tokens, n_groups_all, n_mixed_all, dense_sum_all, n_responses, n_dense = dist.sum(
        [float(batch.response_mask.sum()), n_groups, n_mixed, dense_sum, float(len(batch)),
         float(dense is not None)])
    metrics = {
        "train/mixed_group_frac": n_mixed_all / max(n_groups_all, 1),
        "train/gen_batches": rounds,
        "time/rollout_s": t_gen,
        "time/reward_s": t_rew,
        "time/tokens_per_s": n_tokens / max(t_gen, 1e-9),
        **reward_info_metrics(kept_info, dist),
    }
    if n_dense:
        metrics["train/token_reward_sum"] = dense_sum_all / max(n_responses, 1.0)
    return Collected(batch, rewards, torch.cat(kept_solved).to(rewards.device), metrics, dense)
