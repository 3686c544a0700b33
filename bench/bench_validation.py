"""Cost of one validation (``run_validation``) at the presets' settings, by part, interleaved.

Times greedy generation, sampled generation (``eval.k`` per prompt) and the entropy forward of
the sampled responses, on the process's CPU clock with one torch thread (see
bench/bench_step.py for why), for the defaults (prompts in batches of
``evaluation.VAL_BATCH_PROMPTS``, ``eval.entropy_samples=1``) against ``eval.entropy_samples=0``
(every sample's entropy scored, as before) or, with ``--other N``, batches of ``N`` prompts.
Both validate the same prompts with the same parameters.

Run: PYTHONPATH=src .venv/bin/python bench/bench_validation.py [--reps 4] [--other 256]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from entropyrl import evaluation as ev
from entropyrl.config import load_config
from entropyrl.train.loop import run_validation
from entropyrl.train.setup import setup


def main() -> None:
    """Command line: see the module docstring."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="testbed/grpo")
    ap.add_argument("--reps", type=int, default=4)
    ap.add_argument("--other", type=int, default=0,
                    help="compare against batches of this many prompts (default: against "
                         "eval.entropy_samples=0)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    clock = time.process_time
    run = setup(load_config(args.preset, ["model.device=cpu", "progress=false"]),
                Path(tempfile.mkdtemp()))
    parts = {"greedy": 0.0, "sampled": 0.0, "entropy": 0.0}
    generate, add_stats, evaluate = run.engine.generate, ev._Sums.add_stats, ev.evaluate_source

    def timed_generate(prompts: list[str], n: int, sampling: Any) -> Any:
        t = clock()
        try:
            return generate(prompts, n, sampling)
        finally:
            parts["greedy" if sampling.greedy else "sampled"] += clock() - t

    def timed_stats(self: Any, *a: Any) -> None:
        t = clock()
        add_stats(self, *a)
        parts["entropy"] += clock() - t

    run.engine.generate = timed_generate  # type: ignore[method-assign]
    ev._Sums.add_stats = timed_stats  # type: ignore[method-assign]
    default = (ev.VAL_BATCH_PROMPTS, run.cfg.eval.entropy_samples)
    other = (args.other, default[1]) if args.other else (default[0], 0)
    rows: dict[tuple[int, int], list[dict[str, float]]] = {other: [], default: []}
    try:
        for rep in range(args.reps):
            order = list(rows) if rep % 2 == 0 else list(rows)[::-1]
            for bp, samples in order:
                run.cfg.eval.entropy_samples = samples
                ev.evaluate_source = (  # type: ignore[assignment]
                    lambda *a, bp=bp, **k: evaluate(*a, **{**k, "batch_prompts": bp}))
                for k in parts:
                    parts[k] = 0.0
                t = clock()
                out = run_validation(run, 1)
                rows[bp, samples].append({"total": clock() - t, **parts, "acc": out["val/acc"],
                                 "greedy_acc": out["val/greedy_acc"],
                                 "val_entropy": out["val/entropy"]})
    finally:
        ev.evaluate_source = evaluate  # type: ignore[assignment]
        ev._Sums.add_stats = add_stats  # type: ignore[method-assign]
        run.release()
    ratios = sorted(b["total"] / s["total"]
                    for s, b in zip(rows[other], rows[default], strict=True))
    print(f"{args.preset}: validation CPU time, (batch, entropy_samples) {default} / {other} = "
          f"{statistics.median(ratios):.3f} (range {ratios[0]:.3f}-{ratios[-1]:.3f}, "
          f"{args.reps} pairs)")
    for (bp, samples), got in rows.items():
        med = {k: statistics.median(r[k] for r in got) for k in got[0]}
        print(f"  batch {bp:4d}, entropy_samples {samples}: {med['total']:.2f} s  "
              f"greedy {med['greedy']:.2f}  sampled "
              f"{med['sampled']:.2f}  entropy {med['entropy']:.2f}  val/acc {med['acc']:.3f}  "
              f"greedy_acc {med['greedy_acc']:.3f}  val/entropy {med['val_entropy']:.4f}")


if __name__ == "__main__":
    main()
