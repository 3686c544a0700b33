"""Cost of Clip-Cov / KL-Cov (global selection + loss + diagnostics) relative to plain PPO.

One optimizer mini-batch of [64 x 1024] response tokens (ragged lengths), split into 4
micro-batches as the trainer does. Each timed step is what the trainer runs per mini-batch on
these tensors: (for Clip-Cov/KL-Cov) the global covariance selection over the 4 parts, then per
micro-batch the objective with all its diagnostics and the backward pass to the log-probs.
The model's forward/backward, which dominates a real step, is not included, so the ratios are
an upper bound on the relative overhead. Median of repeated runs; 2 threads.

Run: .venv/bin/python bench/bench_losses.py
"""

from __future__ import annotations

import statistics
import time

import torch

from entropyrl.covariance import SelectionPart, select_clip_cov, select_kl_cov
from entropyrl.losses import ClipCovConfig, Denominators, KLCovConfig, LossConfig, compute_objective

B, T, PARTS, REPEATS = 64, 1024, 4, 30


def make_batch():
    g = torch.Generator().manual_seed(0)
    old = -torch.rand(B, T, generator=g) * 4
    lp = old + 0.05 * torch.randn(B, T, generator=g)
    adv = (torch.randn(B, 1, generator=g) * torch.ones(B, T)).contiguous()
    lengths = torch.randint(T // 4, T + 1, (B,), generator=g)
    mask = torch.arange(T)[None, :] < lengths[:, None]
    return lp, old, adv, mask


def step(config: LossConfig, batch) -> None:
    mask = batch[3]
    parts = [SelectionPart(*xs) for xs in zip(*(x.chunk(PARTS) for x in batch), strict=True)]
    selected: list[torch.Tensor | None] = [None] * PARTS
    if config.name == "clip_cov":
        gen = torch.Generator().manual_seed(0)
        selected = list(select_clip_cov(parts, config.clip_cov, generator=gen).masks)
    elif config.name == "kl_cov":
        selected = list(select_kl_cov(parts, config.kl_cov).masks)
    den = Denominators.of(mask)
    for part, sel in zip(parts, selected, strict=True):
        leaf = part.logprobs.clone().requires_grad_(True)
        obj = compute_objective(
            config, leaf, part.old_logprobs, part.advantages, part.mask,
            selected=sel, denominators=den,
        )
        obj.loss.backward()


def time_it(config: LossConfig, batch) -> float:
    for _ in range(3):
        step(config, batch)
    runs = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        step(config, batch)
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs)


def main() -> None:
    torch.set_num_threads(2)
    batch = make_batch()
    configs = {
        "ppo": LossConfig(name="ppo"),
        "clip_cov": LossConfig(name="clip_cov", clip_cov=ClipCovConfig()),
        "kl_cov": LossConfig(name="kl_cov", kl_cov=KLCovConfig()),
    }
    base = time_it(configs["ppo"], batch)
    print(f"loss step on [{B} x {T}] tokens in {PARTS} micro-batches (median of {REPEATS})")
    print(f"{'loss':<10}{'ms':>10}{'vs ppo':>10}{'target':>10}")
    for name, cfg in configs.items():
        t = base if name == "ppo" else time_it(cfg, batch)
        target = "" if name == "ppo" else "<= 1.10x"
        print(f"{name:<10}{t * 1e3:>10.2f}{t / base:>9.2f}x{target:>10}")


if __name__ == "__main__":
    main()
