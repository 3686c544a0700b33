"""Time of one RL step on the testbed, before/after the step's shared forwards, interleaved.

Two runs of the same preset are built side by side — ``before``: ``update.fuse_scoring=false``
and ``dynamics.entropy_after_fraction=1`` (a separate π_old pass, a no-grad selection pass per
Clip-Cov update after the first, the whole batch re-scored for ΔH); ``after``: the defaults —
and their steps alternate (A B B A ...), so load from other processes hits both alike. Printed:
the median ratio after/before of the step time with its interquartile range and extremes, and
each part's share of the step (the ``time/*`` metrics; ``select`` is the time in the
separate selection passes, inside ``update``). The entropy machinery is ``select`` +
``diagnostics`` + ``dynamics`` (+ the π_old pass where only the metrics need it).

The clock is this process's CPU time with one torch thread (``--clock cpu``, the default): on
a machine shared with other jobs wall time swings several-fold from step to step, CPU time
measures the work. ``--clock wall --threads 2`` times what a user waits on an idle machine.
The reward workers are other processes (``reward`` ≈ 0 on the CPU clock).

``--count-syncs`` instead counts the host reads (``item``, ``float``, ``int``, ``bool``,
``tolist`` of a tensor) inside ``update_on_batch`` per step: each stops a GPU until its queue
drains. Run it with ``PYTHONPATH`` at an older checkout to compare.

Run: PYTHONPATH=src .venv/bin/python bench/bench_step.py [--pairs 10] [--preset testbed/grpo]
     [--lean] [--count-syncs]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from entropyrl.config import load_config
from entropyrl.train import update as update_mod
from entropyrl.train.setup import setup
from entropyrl.train.step import rl_step

BEFORE = ["update.fuse_scoring=false", "dynamics.entropy_after_fraction=1"]
LEAN = ["update.mini_batch_size=256", "update.micro_batch_size=64"]
PARTS = ("rollout", "reward", "old_logprob", "update", "select", "diagnostics", "dynamics")


class _SelectTimer:
    """Seconds spent in the separate selection passes (wraps ``update._select``)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.real = update_mod._select
        update_mod._select = self  # type: ignore[assignment]

    def __call__(self, *args: Any) -> Any:
        t = time.perf_counter()
        try:
            return self.real(*args)
        finally:
            self.seconds += time.perf_counter() - t


class _Clock:
    """Stands in for the ``time`` module of the timed modules: ``perf_counter`` = CPU time."""

    perf_counter = staticmethod(time.process_time)
    monotonic = staticmethod(time.monotonic)


def use_cpu_clock() -> None:
    """Make the ``time/*`` metrics (and this script) read the process's CPU time."""
    import entropyrl.train.collect as collect_mod
    import entropyrl.train.step as step_mod

    step_mod.time = _Clock  # type: ignore[assignment]
    collect_mod.time = _Clock  # type: ignore[assignment]
    globals()["time"] = _Clock


def _step(run: Any, step: int, timer: _SelectTimer) -> dict[str, float]:
    timer.seconds = 0.0
    t = time.perf_counter()
    m = rl_step(run, step)
    m["wall"] = time.perf_counter() - t
    m["time/select_s"] = timer.seconds
    return m


def _quartiles(xs: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(xs, n=4) if len(xs) > 1 else [xs[0]] * 3
    return q[0], statistics.median(xs), q[2]


def compare(preset: str, extra: list[str], pairs: int) -> None:
    """Interleave ``pairs`` steps of the before and after runs of ``preset``; print figures."""
    base = ["model.device=cpu", "progress=false", *extra]
    runs = {name: setup(load_config(preset, base + more), Path(tempfile.mkdtemp()))
            for name, more in (("before", BEFORE), ("after", []))}
    timer = _SelectTimer()
    rows: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    try:
        for name in runs:  # warm-up step (allocator, first-call costs), not counted
            _step(runs[name], 1, timer)
        for i in range(pairs):
            order = ("before", "after") if i % 2 == 0 else ("after", "before")
            for name in order:
                rows[name].append(_step(runs[name], i + 2, timer))
    finally:
        for run in runs.values():
            run.release()
        update_mod._select = timer.real  # type: ignore[assignment]
    ratios = [a["time/step_s"] / b["time/step_s"]
              for a, b in zip(rows["after"], rows["before"], strict=True)]
    lo, med, hi = _quartiles(ratios)
    label = " ".join([preset, *extra]) or preset
    print(f"\n{label}: step time after/before = {med:.3f} (IQR {lo:.3f}-{hi:.3f}, "
          f"min {min(ratios):.3f}, max {max(ratios):.3f}, {pairs} pairs)")
    for name, got in rows.items():
        step = statistics.median(r["time/step_s"] for r in got)
        share = {p: statistics.median(r[f"time/{p}_s"] / r["time/step_s"] for r in got)
                 for p in PARTS}
        machinery = statistics.median(
            (r["time/select_s"] + r["time/diagnostics_s"] + r["time/dynamics_s"])
            / r["time/step_s"] for r in got)
        print(f"  {name:6s} step {step:.3f} s  " + "  ".join(
            f"{p} {100 * s:.1f}%" for p, s in share.items())
            + f"  | entropy machinery {100 * machinery:.1f}%")


def count_syncs(preset: str, extra: list[str], steps: int) -> None:
    """Host reads of tensors inside ``update_on_batch`` per step, by the line that reads.

    On the CPU testbed every tensor is a host tensor, so the table names the reading line:
    reads of deliberate host copies (the row lengths) and AdamW's CPU step counters
    (``torch/optim``) do not stop a GPU; the others do.
    """
    import traceback
    from collections import Counter

    import entropyrl.train.step as step_mod

    run = setup(load_config(preset, ["model.device=cpu", "progress=false", *extra]),
                Path(tempfile.mkdtemp()))
    where: Counter[str] = Counter()
    on = [False]
    names = ("item", "__float__", "__int__", "__bool__", "tolist")
    real = {n: getattr(torch.Tensor, n) for n in names}

    def counting(name: str) -> Any:
        def read(self: torch.Tensor, *a: Any) -> Any:
            if on[0]:
                frames = traceback.extract_stack()[:-1]
                ours = [f for f in frames if "entropyrl" in f.filename]
                torch_optim = any("torch/optim" in f.filename for f in frames)
                f = ours[-1]
                line = f"{f.filename.split('entropyrl/')[-1]}:{f.lineno}"
                where["torch/optim (AdamW step counters)" if torch_optim else line] += 1
            return real[name](self, *a)
        return read

    real_update = update_mod.update_on_batch

    def update(*a: Any, **k: Any) -> Any:
        on[0] = True
        try:
            return real_update(*a, **k)
        finally:
            on[0] = False

    step_mod.update_on_batch = update  # type: ignore[assignment]
    for n in names:
        setattr(torch.Tensor, n, counting(n))
    try:
        for s in range(1, steps + 1):
            where.clear()
            m = rl_step(run, s)
    finally:
        for n in names:
            setattr(torch.Tensor, n, real[n])
        step_mod.update_on_batch = real_update  # type: ignore[assignment]
        run.release()
    print(f"{preset} {' '.join(extra)}: {sum(where.values())} host reads in update_on_batch at "
          f"step {steps} ({int(m['optim/updates'])} optimizer updates)")
    for line, n in where.most_common():
        print(f"  {n:4d}  {line}")


def main() -> None:
    """Command line: see the module docstring."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", action="append", help="preset(s); default grpo and clip_cov")
    ap.add_argument("--pairs", type=int, default=10)
    ap.add_argument("--lean", action="store_true", help="also one update per rollout batch")
    ap.add_argument("--count-syncs", action="store_true")
    ap.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("overrides", nargs="*", help="extra key=value overrides for both runs")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.clock == "cpu":
        use_cpu_clock()
    presets = args.preset or ["testbed/grpo", "testbed/clip_cov"]
    shapes = [list(args.overrides)] + ([LEAN + list(args.overrides)] if args.lean else [])
    for preset in presets:
        for extra in shapes:
            if args.count_syncs:
                count_syncs(preset, extra, 3)
            else:
                compare(preset, extra, args.pairs)


if __name__ == "__main__":
    main()
