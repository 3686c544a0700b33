"""The compiled policy (``model.compile=true``) against eager: update, scoring, compile cost.

Two runs of the same preset are built side by side from the same weights, one with
``model.compile=true``. Every round samples one rollout batch (from the eager run) and times,
on that same batch, in both runs and in alternating order (A B, B A, ...) so that load from
other processes hits both alike:

- ``update``: all optimizer updates of the step (``update_on_batch``: forward, loss, backward,
  clip, AdamW, over the preset's mini/micro-batches);
- ``scoring``: one no-grad pass over the whole batch for log-probs and entropies (what
  ``step.score`` does for log π_old and the ΔH re-scoring).

The first round compiles (one graph for the update's forward+backward, one for the no-grad
scoring); its wall time minus the eager time of the same round is printed as the one-time
compile cost, and the rounds after it are compared (median ratio compiled/eager with the
interquartile range and extremes). Recompiles are counted through dynamo's graph counter
(``TORCH_LOGS=recompiles`` prints their reasons): with dynamic shapes the timed rounds, whose
response lengths differ, should add none.

``--decode`` also times ``generate`` (the decode loop, which entropyrl keeps eager) with the
compiled body against eager on the same model, to show why it is not compiled.

The clock is this process's CPU time with one torch thread (``--clock cpu``, the default): on
a machine shared with other jobs wall time swings from round to round; CPU time measures the
work. The compile cost is always wall time (inductor compiles in worker processes), from an
empty inductor cache (what a first run pays; ``--warm-cache`` reuses the on-disk cache, as a
second run of the same model on the same machine does).

Run: PYTHONPATH=src .venv/bin/python bench/bench_compile.py [--pairs 8] [--threads 1]
     [--preset testbed/grpo] [--mode default] [--decode] [--warm-cache] [key=value ...]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch._dynamo.utils import counters

from entropyrl.advantages import compute_advantages
from entropyrl.compiled import eager
from entropyrl.config import load_config
from entropyrl.rollout import Rollout
from entropyrl.train.collect import collect
from entropyrl.train.setup import Run, setup
from entropyrl.train.step import score
from entropyrl.train.update import UpdateBatch, update_on_batch


def _batch(run: Run) -> tuple[Rollout, torch.Tensor]:
    """A rollout batch of ``run`` and its token advantages."""
    cfg = run.cfg
    got = collect(run.engine, run.tasks.train, run.sampler, run.tasks.score_batch,
                  rollout=cfg.rollout, reward=cfg.reward, dist=run.dist,
                  pad_token_id=run.tokenizer.pad_token_id)
    roll = got.rollout
    adv = compute_advantages(cfg.algorithm.advantage, got.rewards, roll.group_ids,
                             roll.response_mask, gamma=cfg.algorithm.gamma).token_advantages
    return roll, adv


def _timed(clock: Any, fn: Any) -> tuple[float, float, Any]:
    """(clock seconds, wall seconds, result) of ``fn()``."""
    c, w = clock(), time.perf_counter()
    out = fn()
    return clock() - c, time.perf_counter() - w, out


def _round(run: Run, roll: Rollout, adv: torch.Tensor, step: int,
           clock: Any) -> dict[str, tuple[float, float]]:
    """Scoring then update of one batch in ``run``; (clock, wall) seconds of each."""
    cfg = run.cfg
    policy = run.learner.accelerator.unwrap_model(run.learner.model)
    t_score, w_score, (old_lp, entropy) = _timed(
        clock, lambda: score(policy, run, roll, with_entropy=True))
    batch = UpdateBatch(roll, old_lp, adv, entropy=entropy)
    t_upd, w_upd, _ = _timed(clock, lambda: update_on_batch(
        run.learner, batch, loss=cfg.loss, update=cfg.update, dist=run.dist,
        temperature=cfg.rollout.temperature, grad_clip=cfg.optim.grad_clip, seed=cfg.seed,
        step=step))
    return {"scoring": (t_score, w_score), "update": (t_upd, w_upd)}


def _generate(run: Run, roll: Rollout, compiled: bool, clock: Any) -> tuple[float, float]:
    """Time ``generate`` on the rollout's prompts, with the compiled body or eager."""
    from transformers import GenerationConfig

    policy = run.learner.accelerator.unwrap_model(run.learner.model)
    prompts = roll.input_ids[:, : roll.prompt_len]
    att = roll.attention_mask[:, : roll.prompt_len]
    cfg = GenerationConfig(do_sample=True, temperature=1.0, top_k=0,
                           max_new_tokens=run.cfg.rollout.max_new_tokens,
                           eos_token_id=run.tokenizer.eos_token_id,
                           pad_token_id=run.tokenizer.pad_token_id)
    policy.eval()
    try:
        with torch.no_grad(), (nullcontext() if compiled else eager(policy)):
            t, w, _ = _timed(clock, lambda: policy.generate(
                input_ids=prompts, attention_mask=att, generation_config=cfg))
    finally:
        policy.train()
    return t, w


def _spread(xs: list[float]) -> str:
    q = statistics.quantiles(xs, n=4) if len(xs) > 1 else [xs[0]] * 3
    return (f"{statistics.median(xs):.3f} (IQR {q[0]:.3f}-{q[2]:.3f}, min {min(xs):.3f}, "
            f"max {max(xs):.3f})")


def compare(preset: str, extra: list[str], pairs: int, mode: str, clock: Any,
            decode: bool) -> None:
    """Interleave ``pairs`` rounds of the eager and compiled runs of ``preset``; print figures."""
    base = ["model.device=cpu", "progress=false", *extra]
    on = ["model.compile=true"] + ([f"model.compile_mode={mode}"] if mode != "default" else [])
    runs = {name: setup(load_config(preset, base + more), Path(tempfile.mkdtemp()))
            for name, more in (("eager", []), ("compiled", on))}
    rows: dict[str, list[dict[str, tuple[float, float]]]] = {"eager": [], "compiled": []}
    gen: dict[str, list[float]] = {"eager": [], "compiled": []}
    widths = []  # columns (prompt + response tokens) of each timed round's batch
    try:
        roll, adv = _batch(runs["eager"])
        first = {name: _round(runs[name], roll, adv, 1, clock) for name in ("eager", "compiled")}
        graphs = counters["stats"]["unique_graphs"]
        first_gen, graphs_gen, recompiles = None, 0, 0
        if decode:
            _generate(runs["eager"], roll, False, clock)
            first_gen = (_generate(runs["compiled"], roll, True, clock)[1],
                         _generate(runs["compiled"], roll, False, clock)[1])
        for i in range(pairs):
            roll, adv = _batch(runs["eager"])
            widths.append(roll.input_ids.shape[1])
            order = ("eager", "compiled") if i % 2 == 0 else ("compiled", "eager")
            for name in order:
                before = counters["stats"]["unique_graphs"]
                rows[name].append(_round(runs[name], roll, adv, i + 2, clock))
                recompiles += counters["stats"]["unique_graphs"] - before
            if decode:
                for name in order:
                    gen[name].append(_generate(runs["compiled"], roll, name == "compiled",
                                               clock)[0])
        graphs_gen = counters["stats"]["unique_graphs"] - graphs - recompiles
    finally:
        for run in runs.values():
            run.release()
    label = " ".join([preset, *extra, *on[1:]])
    print(f"\n{label}: compiled/eager, {pairs} interleaved rounds after the compiling one "
          f"(batches of {sorted(set(widths))} columns)")
    for part in ("update", "scoring"):
        ratios = [c[part][0] / e[part][0]
                  for c, e in zip(rows["compiled"], rows["eager"], strict=True)]
        e_med = statistics.median(r[part][0] for r in rows["eager"])
        c_med = statistics.median(r[part][0] for r in rows["compiled"])
        cost = first["compiled"][part][1] - first["eager"][part][1]
        print(f"  {part:8s} ratio {_spread(ratios)}; eager {e_med:.3f} s, compiled "
              f"{c_med:.3f} s; one-time compile {cost:.1f} s (wall)")
    saved = sum(statistics.median(r[p][0] for r in rows["eager"])
                - statistics.median(r[p][0] for r in rows["compiled"])
                for p in ("update", "scoring"))
    cost = sum(first["compiled"][p][1] - first["eager"][p][1] for p in ("update", "scoring"))
    if saved > 0:
        print(f"  break-even: {cost / saved:.0f} steps of update + one scoring pass "
              f"({cost:.1f} s compile / {saved:.3f} s saved per step)")
    else:
        print(f"  no saving per step ({saved:.3f} s): compiling does not pay here")
    print(f"  graphs compiled: {graphs} in the first round, {recompiles} in the timed rounds")
    if decode and first_gen is not None:
        ratios = [c / e for c, e in zip(gen["compiled"], gen["eager"], strict=True)]
        print(f"  generate (not compiled by entropyrl) ratio {_spread(ratios)}; eager "
              f"{statistics.median(gen['eager']):.3f} s; one-time compile "
              f"{first_gen[0] - first_gen[1]:.1f} s (wall), {graphs_gen} graphs in all")


def main() -> None:
    """Command line: see the module docstring."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="testbed/grpo")
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--mode", default="default",
                    choices=("default", "max-autotune-no-cudagraphs"))
    ap.add_argument("--decode", action="store_true", help="also time generate, compiled body")
    ap.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--warm-cache", action="store_true",
                    help="use inductor's on-disk cache (default: a fresh one, a first run's cost)")
    ap.add_argument("overrides", nargs="*", help="extra key=value overrides for both runs")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    fresh = None if args.warm_cache else tempfile.mkdtemp(prefix="inductor_")
    if fresh is not None:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = fresh
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.clock} clock, "
          f"load average at start {load}")
    try:
        compare(args.preset, list(args.overrides), args.pairs, args.mode, clock, args.decode)
    finally:
        if fresh is not None:
            shutil.rmtree(fresh, ignore_errors=True)
    print(f"load average at end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
