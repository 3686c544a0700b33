"""Rollout steps per second: entropyrl's trainer against TRL's GRPOTrainer on the same work.

Same work: the shipped testbed model and tokenizer, testbed prompts (addition and subtraction,
as the presets), 32 prompts x 8 responses per rollout step, at most 32 new tokens,
temperature 1, lr 2e-4, GRPO advantages, PPO clip 0.2, no KL to a reference, no validation,
no checkpoint inside the timed steps, one thread each. Two configurations:

- ``full``: entropyrl's preset schedule (``testbed/grpo``: 4 optimizer updates of 64
  responses per rollout step, every diagnostic of the step on: covariances, the entropy
  measured after the update, ...) against TRL with 4 updates per generation batch
  (``steps_per_generation=4``, batches of 64) and the same numerics: float32, no activation
  checkpointing (TRL's defaults are bf16 autocast and gradient checkpointing);
- ``lean``: one update per rollout step (entropyrl ``update.mini_batch_size=256``, micro-batches
  of 64) against TRL's defaults: one update per generation batch (4 accumulated
  micro-batches of 64), bf16 autocast and gradient checkpointing, as a TRL user gets them.

Each run is a fresh subprocess (imports and model load are not timed); a rollout step is
timed from the end of the previous one to the end of its last update (generation, rewards,
log-probs, updates and, for entropyrl, its diagnostics), on the wall clock or, with
``--clock cpu``, on the process's CPU clock (steadier when other jobs share the machine). The
first rollout step of a run is a warm-up and not counted. The two trainers alternate
(entropyrl, TRL, TRL, entropyrl, ...), so machine load hits both alike; the ratio
entropyrl/TRL is taken within each round and printed as its median and min-max over rounds.

    python bench/bench_vs_trl.py [--rounds 3] [--steps 5] [--configs full lean] [--clock wall|cpu]
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

N_PROMPTS, GROUP, MAX_NEW, LR, SEED = 32, 8, 32, 2e-4, 0
MICRO = 64


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def entropyrl_worker(config: str, steps: int, out: Path, clock: Any) -> list[float]:
    """Seconds of each rollout step after the warm-up, from one step's end to the next's."""
    import entropyrl.train.loop as loop
    from entropyrl.config import load_config

    ends: list[float] = []
    inner = loop.rl_step

    def timed_step(run: Any, step: int) -> Any:
        metrics = inner(run, step)
        ends.append(clock())
        return metrics

    loop.rl_step = timed_step  # the loop's own step, with a clock reading at its end

    overrides = [f"steps={steps + 1}", f"seed={SEED}", "eval.every=0", "progress=false",
                 f"rollout.n_prompts={N_PROMPTS}", f"rollout.group_size={GROUP}",
                 f"rollout.max_new_tokens={MAX_NEW}", "rollout.temperature=1.0",
                 f"optim.lr={LR}", f"update.micro_batch_size={MICRO}"]
    batch = N_PROMPTS * GROUP
    overrides.append(f"update.mini_batch_size={MICRO if config == 'full' else batch}")
    cfg = load_config("testbed/grpo", overrides)
    loop.train(cfg, out)
    return [b - a for a, b in itertools.pairwise(ends)]  # the first step is the warm-up


def trl_worker(config: str, steps: int, out: Path, clock: Any) -> list[float]:
    """Seconds of each generation batch (its updates included) after the warm-up."""
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from entropyrl import testbed

    updates = 4 if config == "full" else 1  # optimizer updates per generation batch
    rows = testbed.make_tasks("train", N_PROMPTS * (steps + 1), SEED, ops=["add", "sub"])
    dataset = Dataset.from_list([{"prompt": r["prompt"], "answer": r["answer"]} for r in rows])

    def reward(completions: list[str], answer: list[str], **kwargs: Any) -> list[float]:
        return [testbed.score(c, a) for c, a in zip(completions, answer, strict=True)]

    ends: list[float] = []

    class Clock(TrainerCallback):  # type: ignore[misc]
        def on_train_begin(self, *args: Any, **kwargs: Any) -> None:
            ends.append(clock())

        def on_step_end(self, *args: Any, **kwargs: Any) -> None:
            ends.append(clock())

    schedule: dict[str, Any] = (
        {"gradient_accumulation_steps": 1, "steps_per_generation": 4, "bf16": False,
         "gradient_checkpointing": False} if config == "full"
        else {"gradient_accumulation_steps": 4}  # steps_per_generation defaults to this
    )
    args = GRPOConfig(output_dir=str(out), max_steps=updates * (steps + 1), learning_rate=LR,
                      use_cpu=True, report_to=[], per_device_train_batch_size=MICRO,
                      num_generations=GROUP, max_completion_length=MAX_NEW, temperature=1.0,
                      seed=SEED, logging_steps=10**6, save_strategy="no", disable_tqdm=True,
                      **schedule)
    model, tok = testbed.load_base()
    trainer = GRPOTrainer(model=model, processing_class=tok, reward_funcs=reward, args=args,
                          train_dataset=dataset, callbacks=[Clock()])
    trainer.train()
    per_update = [b - a for a, b in itertools.pairwise(ends)]
    per_batch = [sum(per_update[i : i + updates]) for i in range(0, len(per_update), updates)]
    return per_batch[1:]


def run_side(side: str, config: str, steps: int, out: Path, clock: str) -> list[float]:
    """One run in a fresh subprocess; its step times."""
    cmd = [sys.executable, __file__, "--worker", side, "--config", config, "--steps", str(steps),
           "--out", str(out), "--clock", clock]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{side} {config} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--steps", type=int, default=5, help="timed rollout steps per run")
    parser.add_argument("--configs", nargs="+", default=["full", "lean"],
                        choices=["full", "lean"])
    parser.add_argument("--clock", choices=list(CLOCKS), default="wall",
                        help="wall time, or each process's CPU time (steadier on a loaded "
                             "machine; both sides run one thread and score rewards in-process)")
    parser.add_argument("--worker", choices=["entropyrl", "trl"], help=argparse.SUPPRESS)
    parser.add_argument("--config", choices=["full", "lean"], help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        import torch

        torch.set_num_threads(1)
        worker = entropyrl_worker if args.worker == "entropyrl" else trl_worker
        print(json.dumps(worker(args.config, args.steps, args.out, CLOCKS[args.clock])))
        return

    rate: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for config in args.configs:
                sides = ["entropyrl", "trl"] if r % 2 == 0 else ["trl", "entropyrl"]
                for side in sides:
                    out = Path(tmp) / f"{side}_{config}_{r}"
                    times = run_side(side, config, args.steps, out, args.clock)
                    rate.setdefault((side, config), []).append(len(times) / sum(times))
                    print(f"round {r + 1} {config:<5} {side:<9} "
                          f"{len(times) / sum(times):6.3f} steps/s", flush=True)
    print(f"\n{args.rounds} interleaved rounds x {args.steps} timed rollout steps "
          f"({N_PROMPTS} prompts x {GROUP}, <= {MAX_NEW} tokens), 1 thread each, "
          f"{args.clock} clock")
    print(f"{'config':<8}{'entropyrl':>12}{'TRL':>10}{'ratio':>9}{'min-max':>14}")
    for config in args.configs:
        ours, theirs = rate[("entropyrl", config)], rate[("trl", config)]
        ratios = [a / b for a, b in zip(ours, theirs, strict=True)]
        print(f"{config:<8}{statistics.median(ours):>12.3f}{statistics.median(theirs):>10.3f}"
              f"{statistics.median(ratios):>8.2f}x{f'{min(ratios):.2f}-{max(ratios):.2f}':>14}")
    print("steps/s: rollout steps (generation + updates) per second, median over rounds; "
          "ratio > 1: entropyrl is faster")


if __name__ == "__main__":
    main()
