"""Cost of Clip-Cov / KL-Cov (global selection + loss + diagnostics) relative to plain PPO.

One optimizer mini-batch of [64 x 1024] response tokens (ragged lengths), split into 4
micro-batches as the trainer does. Each timed step is what the trainer's update
(``entropyrl.train.update``) runs per mini-batch on these tensors: (for Clip-Cov/KL-Cov) the
global covariance selection over the 4 parts, then per micro-batch the objective with all its
diagnostics and the backward pass to the log-probs; the loss denominators come from the rows'
token counts on the host, as there. The model's forward/backward, which dominates a real step,
is not included, so the ratios are an upper bound on the relative overhead.

The allocator is put in a trainer's state first: one untimed forward/backward of the testbed's
micro model on one micro-batch, as the trainer runs around the selection and the losses. Its
freed activations (megabytes) raise glibc's dynamic mmap/trim thresholds, after which
mini-batch-sized temporaries are reused from the heap. A process that never ran a model keeps
the initial thresholds and hands such temporaries back to the system at every free, paying
page faults that a trainer does not pay (measured: about 300 per Clip-Cov/KL-Cov step without
the warm-up, none with it); ``--cold`` times that state instead.

The machine may be shared, so the three losses are timed interleaved (ppo, clip_cov, kl_cov,
ppo, ...; the order rotates every round) and each ratio is taken within a round, against the
PPO step of the same round; the table gives the median and the interquartile range (IQR) of
the per-round ratios.

Run: .venv/bin/python bench/bench_losses.py [--rounds 30] [--threads 2] [--clock wall|cpu]
[--cold]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from entropyrl.covariance import SelectionPart, select_clip_cov, select_kl_cov
from entropyrl.losses import ClipCovConfig, Denominators, KLCovConfig, LossConfig, compute_objective

B, T, PARTS = 64, 1024, 4


def make_batch():
    g = torch.Generator().manual_seed(0)
    old = -torch.rand(B, T, generator=g) * 4
    lp = old + 0.05 * torch.randn(B, T, generator=g)
    adv = (torch.randn(B, 1, generator=g) * torch.ones(B, T)).contiguous()
    lengths = torch.randint(T // 4, T + 1, (B,), generator=g)
    mask = torch.arange(T)[None, :] < lengths[:, None]
    return lp, old, adv, mask


def warm_allocator() -> None:
    """One forward/backward of the micro model on a ``[B / PARTS, T]`` response (untimed)."""
    from transformers import Qwen2ForCausalLM

    from entropyrl import testbed
    from entropyrl.policy import response_token_stats

    tokenizer = testbed.build_tokenizer()
    model = Qwen2ForCausalLM(testbed.micro_config(len(tokenizer)))
    prompt = 8
    ids = torch.randint(len(tokenizer), (B // PARTS, prompt + T),
                        generator=torch.Generator().manual_seed(0))
    stats = response_token_stats(model, ids, torch.ones_like(ids), prompt, temperature=1.0,
                                 with_entropy=False)
    stats.logprobs.sum().backward()


def step(config: LossConfig, batch, lengths: torch.Tensor) -> None:
    """One mini-batch as the trainer's update runs it (``lengths``: host token counts)."""
    parts = [SelectionPart(*xs) for xs in zip(*(x.chunk(PARTS) for x in batch), strict=True)]
    selected: list[torch.Tensor | None] = [None] * PARTS
    if config.name == "clip_cov":
        gen = torch.Generator().manual_seed(0)
        selected = list(select_clip_cov(parts, config.clip_cov, generator=gen).masks)
    elif config.name == "kl_cov":
        selected = list(select_kl_cov(parts, config.kl_cov).masks)
    # From the rows' token counts on the host, as the trainer's update does (no mask pass).
    den = Denominators(int(lengths.sum()), int((lengths > 0).sum()))
    for part, sel in zip(parts, selected, strict=True):
        leaf = part.logprobs.clone().requires_grad_(True)
        obj = compute_objective(
            config, leaf, part.old_logprobs, part.advantages, part.mask,
            selected=sel, denominators=den,
        )
        obj.loss.backward()


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def time_step(config: LossConfig, batch, lengths: torch.Tensor, clock) -> float:
    t0 = clock()
    step(config, batch, lengths)
    return clock() - t0


def quartiles(xs: list[float]) -> tuple[float, float, float]:
    q1, q2, q3 = statistics.quantiles(xs, n=4, method="inclusive")
    return q1, q2, q3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30, help="interleaved rounds timed")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--clock", choices=list(CLOCKS), default="wall",
                        help="wall time, or this process's CPU time (steadier on a loaded "
                             "machine, with --threads 1)")
    parser.add_argument("--cold", action="store_true",
                        help="skip the model forward/backward that puts the allocator in a "
                             "trainer's state (module docstring)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not args.cold:
        warm_allocator()
    batch = make_batch()
    lengths = batch[3].sum(1)  # copied to the host once per rollout step in the trainer
    configs = {
        "ppo": LossConfig(name="ppo"),
        "clip_cov": LossConfig(name="clip_cov", clip_cov=ClipCovConfig()),
        "kl_cov": LossConfig(name="kl_cov", kl_cov=KLCovConfig()),
    }
    names = list(configs)
    for _ in range(3):
        for name in names:
            step(configs[name], batch, lengths)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(args.rounds):
        for name in names[r % 3:] + names[: r % 3]:
            times[name].append(time_step(configs[name], batch, lengths, CLOCKS[args.clock]))
    print(f"loss step on [{B} x {T}] tokens in {PARTS} micro-batches, {args.rounds} interleaved "
          f"rounds, {args.threads} thread(s), {args.clock} clock, "
          f"{'cold' if args.cold else 'trainer'} allocator")
    print(f"{'loss':<10}{'ms':>9}{'vs ppo':>9}{'IQR':>15}{'target':>10}")
    for name in names:
        ms = statistics.median(times[name]) * 1e3
        if name == "ppo":
            print(f"{name:<10}{ms:>9.2f}{1:>8.2f}x")
            continue
        q1, q2, q3 = quartiles([t / p for t, p in zip(times[name], times["ppo"], strict=True)])
        print(f"{name:<10}{ms:>9.2f}{q2:>8.2f}x{f'{q1:.2f}-{q3:.2f}':>15}{'<= 1.10x':>10}")


if __name__ == "__main__":
    main()
