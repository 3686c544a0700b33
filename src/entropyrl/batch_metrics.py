"""The step's ``train/*`` and ``dyn/*`` metrics, computed over the global batch of all ranks.

With data parallelism each rank holds ``B`` of the step's responses. Means, maxima, the skew
table's top fractions and the per-group response covariance all need the whole batch, so the
token tensors are gathered (rows in rank order, padded to the widest rank, then cut back) and
every metric is computed once on the concatenation: ``N`` ranks report what one process
reports on the same global batch. With one process nothing is copied.

Formulas: docs/metrics.md.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from entropyrl import dynamics


def gather_rows(t: torch.Tensor, group: Any) -> torch.Tensor:
    """Rows of every rank, in rank order: ``[B_r, ...]`` → ``[Σ_r B_r, ...]``.

    Trailing dimensions may differ between ranks (e.g. response widths); they are padded
    with zeros to the widest rank. Bool tensors come back as bool. ``group=None`` returns
    ``t`` itself.
    """
    if group is None:
        return t
    import torch.distributed as dist

    world = dist.get_world_size(group)
    shape = torch.tensor(t.shape, dtype=torch.long)
    shapes = [torch.empty_like(shape) for _ in range(world)]
    dist.all_gather(shapes, shape, group=group)
    widest = torch.stack(shapes).max(dim=0).values
    send = t.to(torch.uint8) if t.dtype == torch.bool else t
    pad: list[int] = []
    for dim in reversed(range(t.dim())):
        pad += [0, int(widest[dim]) - t.shape[dim]]
    send = torch.nn.functional.pad(send, pad).contiguous()
    parts = [torch.empty_like(send) for _ in range(world)]
    dist.all_gather(parts, send, group=group)
    out = torch.cat([p[: int(s[0])] for p, s in zip(parts, shapes, strict=True)])
    return out.bool() if t.dtype == torch.bool else out


def all_reduce_sum(values: list[float], group: Any) -> list[float]:
    """Element-wise sum of ``values`` over ranks (float64); identity with ``group=None``."""
    if group is None:
        return values
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t, group=group)
    return t.tolist()


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

    def gathered(self, group: Any) -> StepBatch:
        """The global batch: every rank's rows, group ids made unique across ranks."""
        if group is None:
            return self
        import torch.distributed as dist

        rank = dist.get_rank(group)
        # Offsetting by a bound on every rank's ids keeps groups of different ranks apart.
        bound = int(all_reduce_sum([float(self.group_ids.max()) + 1 if len(self.group_ids)
                                    else 0.0], group)[0])
        ids = self.group_ids + rank * bound
        return StepBatch(*(gather_rows(t, group) for t in (*self[:-1], ids)))


def entropy_metrics(entropy: torch.Tensor, mask: torch.Tensor, group: Any) -> dict[str, float]:
    """Token-mean (the law's H) and response-mean entropy of ``[B, R]`` over all ranks."""
    per_seq = (entropy * mask).sum(1) / mask.sum(1).clamp(min=1)
    has = mask.any(1)
    t = all_reduce_sum([float((entropy * mask).sum()), float(mask.sum()),
                        float(per_seq[has].sum()), float(has.sum())], group)
    return {
        "train/entropy": t[0] / max(t[1], 1.0),
        "train/entropy_seq_mean": t[2] / max(t[3], 1.0),
    }


def step_metrics(local: StepBatch, group: Any) -> dict[str, float]:
    """``train/*`` batch statistics and the ``dyn/*`` covariance diagnostics of the global batch."""
    b = local.gathered(group)
    lengths = b.mask.sum(dim=1).float()
    m = entropy_metrics(b.entropy, b.mask, None)
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
    resp = dynamics.response_covariance(b.logprobs, b.advantages, b.mask, b.group_ids)
    m["dyn/cov_response"] = float(resp.mean)
    return m
