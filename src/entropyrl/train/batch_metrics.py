"""The step's ``train/*`` and ``dyn/*`` metrics, computed over the global batch of all ranks.

With data parallelism each rank holds ``B`` of the step's responses. Means, maxima, the skew
table's top fractions and the per-group response covariance all need the whole batch, so the
token tensors are gathered (rows in rank order, padded to the widest rank, then cut back) and
every metric is computed once on the concatenation: ``N`` ranks report what one process
reports on the same global batch. With one process nothing is copied.

Formulas: docs/metrics.md.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from entropyrl import dynamics
from entropyrl.distributed import Dist


class StepBatch(NamedTuple):
    """One rank's share of a step's update batch (``B`` responses, ``R`` response tokens).

    Attributes:
        mask: ``[B, R]`` bool response mask.
        logprobs: ``[B, R]`` log π_old of the sampled tokens.
        entropy: ``[B, R]`` entropy of π_old at each position.
        advantages: ``[B, R]`` token advantages.
        rewards: ``[B]`` rewards used for the update (after any shaping).
        solved: ``[B]`` bool, verified-correct responses.
        truncated: ``[B]`` bool, responses without an end token.
        group_ids: ``[B]`` prompt index of each response (unique within the rank).
    """

    mask: torch.Tensor
    logprobs: torch.Tensor
    entropy: torch.Tensor
    advantages: torch.Tensor
    rewards: torch.Tensor
    solved: torch.Tensor
    truncated: torch.Tensor
    group_ids: torch.Tensor

    def gathered(self, dist: Dist) -> StepBatch:
        """The global batch: every rank's rows, group ids made unique across ranks."""
        if dist.world == 1:
            return self
        # Offsetting by a bound on every rank's ids keeps groups of different ranks apart.
        local_bound = float(self.group_ids.max()) + 1 if len(self.group_ids) else 0.0
        bound = int(dist.max([local_bound])[0])
        ids = self.group_ids + dist.rank * bound
        return StepBatch(*(dist.gather_rows(t) for t in (*self[:-1], ids)))


def entropy_metrics(entropy: torch.Tensor, mask: torch.Tensor, dist: Dist) -> dict[str, float]:
    """Token-mean (the law's H) and response-mean entropy of ``[B, R]`` over all ranks."""
    per_seq = (entropy * mask).sum(1) / mask.sum(1).clamp(min=1)
    has = mask.any(1)
    t = dist.sum([float((entropy * mask).sum()), float(mask.sum()),
                  float(per_seq[has].sum()), float(has.sum())])
    return {
        "train/entropy": t[0] / max(t[1], 1.0),
        "train/entropy_seq_mean": t[2] / max(t[3], 1.0),
    }


def subset_entropy_change(before: torch.Tensor, after: torch.Tensor, mask: torch.Tensor,
                          dist: Dist) -> float:
    """Same-batch ``ΔH`` on a sample of rows: token-mean ``after`` − token-mean ``before``.

    ``before``/``after`` ``[b, R]``: the entropies of the same tokens under the policy before
    and after the step's updates (all ranks' rows; the paired difference over one set of
    tokens). On the whole batch it is ``entropy_after − train/entropy``.
    """
    return (entropy_metrics(after, mask, dist)["train/entropy"]
            - entropy_metrics(before, mask, dist)["train/entropy"])


def entropy_change(before: float, after: float, cov_npg: float) -> dict[str, float]:
    """``dyn/*`` of the same-batch entropy change next to its first-order prediction.

    ``before``/``after``: token-mean entropy of the batch under the policy before and after
    the step's updates (``after`` estimated as ``before`` plus the sampled
    :func:`subset_entropy_change` when only part of the batch is re-scored); the prediction
    is ``ΔH ≈ −Cov(log π, A)`` (paper Eq. 10, natural-PG form, in units of the step size).
    """
    return {
        "dyn/entropy_before": before,
        "dyn/entropy_after": after,
        "dyn/delta_entropy": after - before,
        "dyn/pred_delta_entropy": -cov_npg,
    }


def step_metrics(local: StepBatch, dist: Dist) -> dict[str, float]:
    """``train/*`` batch statistics and the ``dyn/*`` covariance diagnostics of the global batch."""
    b = local.gathered(dist)
    lengths = b.mask.sum(dim=1).float()
    m = entropy_metrics(b.entropy, b.mask, Dist.single())
    m.update({
        "train/reward_mean": float(b.rewards.mean()),
        "train/acc": float(b.solved.float().mean()),
        "train/response_len": float(lengths.mean()),
        "train/response_len_max": float(lengths.max()),
        "train/truncated_frac": float(b.truncated.float().mean()),
        "train/n_groups": int(b.group_ids.unique().numel()),
        "train/adv_abs_mean": float(b.advantages[b.mask].abs().mean()),
    })
    cov = dynamics.batch_covariances(b.logprobs, b.advantages, b.mask)
    m["dyn/cov_npg"] = float(cov.cov_npg)
    m["dyn/cov_pg"] = float(cov.cov_pg)
    skew = dynamics.skew_table(b.logprobs, b.advantages, b.mask)
    m.update({f"dyn/cov_{k}": float(v) for k, v in skew.items()})
    for form, key in (("npg", "dyn/cov_response"), ("pg", "dyn/cov_response_pg")):
        resp = dynamics.response_covariance(b.logprobs, b.advantages, b.mask, b.group_ids,
                                            form=form)  # type: ignore[arg-type]
        m[key] = float(resp.mean)
    return m


def logprob_gap_metrics(logprobs: torch.Tensor, sampler_logprobs: torch.Tensor,
                        mask: torch.Tensor, dist: Dist) -> dict[str, float]:
    """``rollout/logprob_gap_*``: ``|log π_sampler − log π_old|`` over all ranks' response tokens.

    ``logprobs`` ``[B, R]`` are the trainer's log-probs of the sampled tokens, ``sampler_logprobs``
    ``[B, R]`` the engine's. Both describe the same weights, so the gap measures what the engines
    do differently (kernels, precision) — and grows sharply when the engine's weights are stale.
    """
    gap = (sampler_logprobs - logprobs).abs()
    total, count = dist.sum([float(gap[mask].sum()), float(mask.sum())])
    largest = dist.max([float(gap[mask].max()) if bool(mask.any()) else 0.0])[0]
    return {"rollout/logprob_gap_mean": total / max(count, 1.0),
            "rollout/logprob_gap_max": largest}


def tis_metrics(logprobs: torch.Tensor, sampler_logprobs: torch.Tensor, weights: torch.Tensor,
                cap: float, mask: torch.Tensor, dist: Dist) -> dict[str, float]:
    """``rollout/tis_*``: the truncated importance weights' mean and how often the cap bit."""
    capped = (logprobs - sampler_logprobs) > math.log(cap)
    t = dist.sum([float(weights[mask].sum()), float(capped[mask].sum()), float(mask.sum())])
    return {"rollout/tis_weight_mean": t[0] / max(t[2], 1.0),
            "rollout/tis_capped_frac": t[1] / max(t[2], 1.0)}
