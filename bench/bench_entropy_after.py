"""Spread of the sampled same-batch ΔH (``dynamics.entropy_after_fraction``) on a real run.

Trains a preset on the testbed with the whole batch re-scored after each update, keeps the
before/after entropies of every token, and draws, at every step, ``--draws`` samples of
``round(f·G)`` responses per group as the trainer would (:func:`entropy_after_rows` with other
seeds). Printed per fraction: the sd of (sampled − full) ΔH over draws, its median over steps,
relative to the median |ΔH| and to the sd of the full ΔH across steps (the signal the report's
correlations and the predictive controller read), and the correlation across steps of the
sampled ΔH with the prediction ``−cov_npg`` next to the full ΔH's.

Run: PYTHONPATH=src .venv/bin/python bench/bench_entropy_after.py [--steps 40]
     [--preset testbed/grpo]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

import entropyrl.train.step as step_mod
from entropyrl.config import load_config
from entropyrl.distributed import Dist
from entropyrl.train.batch_metrics import subset_entropy_change
from entropyrl.train.setup import setup

FRACTIONS = (0.125, 0.25, 0.5)


def main() -> None:
    """Command line: see the module docstring."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="testbed/grpo")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--draws", type=int, default=200)
    args = ap.parse_args()
    cfg = load_config(args.preset, ["model.device=cpu", "progress=false",
                                    "dynamics.entropy_after_fraction=1"])
    kept: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    real = step_mod.measure_delta_entropy

    def keep(run: Any, batch: Any, step: int) -> float:
        rows = torch.arange(len(batch.rollout))
        _, after = step_mod.score(run.learner.model, run, batch.rollout, rows=rows,
                                  with_entropy=True)
        kept.append((batch.entropy.clone(), after, batch.rollout.response_mask.clone()))
        return real(run, batch, step)

    step_mod.measure_delta_entropy = keep  # type: ignore[assignment]
    run = setup(cfg, Path(tempfile.mkdtemp()))
    full, pred = [], []
    try:
        for s in range(1, args.steps + 1):
            m = step_mod.rl_step(run, s)
            full.append(m["dyn/delta_entropy"])
            pred.append(m["dyn/pred_delta_entropy"])
    finally:
        run.release()
        step_mod.measure_delta_entropy = real  # type: ignore[assignment]
    g, single = cfg.rollout.group_size, Dist.single()
    signal = statistics.pstdev(full)
    print(f"{args.preset}, {args.steps} steps, {len(kept[0][0])} responses/step: full ΔH median "
          f"|ΔH| {statistics.median(abs(x) for x in full):.2e}, sd across steps {signal:.2e}, "
          f"corr(ΔH, −cov_npg) {np.corrcoef(full, pred)[0, 1]:.3f}")
    for f in FRACTIONS:
        sds, one_draw = [], []
        for s, (before, after, mask) in enumerate(kept, start=1):
            est = []
            for d in range(args.draws):
                rows = step_mod.entropy_after_rows(len(mask), g, f, single, 1000 + d, s)
                est.append(subset_entropy_change(before[rows], after[rows], mask[rows], single))
            sds.append(statistics.pstdev(e - full[s - 1] for e in est))
            one_draw.append(est[0])
        sd = statistics.median(sds)
        corr = np.corrcoef(one_draw, pred)[0, 1]
        print(f"  f={f:<5} ({max(1, round(f * g))}/{g} per group): sd(sampled − full) median "
              f"{sd:.2e} = {sd / statistics.median(abs(x) for x in full):.2f}·median|ΔH| = "
              f"{sd / signal:.2f}·sd(ΔH across steps); corr(sampled ΔH, −cov_npg) {corr:.3f}")


if __name__ == "__main__":
    main()
