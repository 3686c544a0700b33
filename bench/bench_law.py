"""Time the entropy–performance law fit with 95% intervals (issue target: < 1 s per fit).

Cases: one fit on 10,000 points and 50 runs of 500 points, each with analytic intervals
(closed form + Jacobian covariance), pairs-bootstrap intervals (1,000 resamples) and the
robust soft-L1 fit (scipy least_squares + sandwich covariance); the robust bootstrap refits
with least_squares per resample, so it is timed on one 500-point run only. Also the whole per-run
analysis of `entropyrl fit` (fit, early forecast, entropy model, forward forecast, projection)
on a 2,400-step run with an evaluation every 4 steps. Median of repeated runs, 1 process.

Run: PYTHONPATH=src .venv/bin/python bench/bench_law.py
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from entropyrl.law import analyze_run, fit_law, make_series
from entropyrl.law.io import RunLog


def points(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    h = rng.uniform(0.05, 1.2, n)
    return h, 0.75 - 0.15 * np.exp(h) + 0.01 * rng.standard_normal(n)


def timed(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: imports, caches
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    big = points(10_000, 0)
    runs = [points(500, s) for s in range(50)]
    cases: list[tuple[str, dict[str, object]]] = [
        ("least squares, analytic", {}),
        ("least squares, bootstrap x1000", {"intervals": "bootstrap", "n_boot": 1000}),
        ("soft-L1 robust, analytic", {"method": "soft_l1"}),
    ]
    print(f"{'case':34s} {'1 x 10,000 pts':>16s} {'50 x 500 pts':>14s}")
    for name, opts in cases:
        one = timed(lambda opts=opts: fit_law(*big, **opts), 5)
        many = timed(lambda opts=opts: [fit_law(*r, **opts) for r in runs], 3)
        print(f"{name:34s} {one * 1e3:13.2f} ms {many * 1e3:11.1f} ms")
    robust_boot = timed(lambda: fit_law(*runs[0], method="soft_l1", intervals="bootstrap"), 3)
    print(f"{'soft-L1 robust, bootstrap x1000':34s} {'':>16s} {robust_boot * 1e3:8.1f} ms "
          "(1 run of 500 pts: one least_squares per resample)")
    steps = np.arange(1, 2401, dtype=float)
    rng = np.random.default_rng(1)
    h = 0.1 + np.exp(-steps / 300) + 0.01 * rng.standard_normal(len(steps))
    ev = steps[3::4]
    r = 0.75 - 0.15 * np.exp(h[3::4]) + 0.01 * rng.standard_normal(len(ev))
    log = RunLog("bench", Path("synthetic"), "jsonl", make_series("h", steps, h),
                 make_series("r", ev, r))
    full = timed(lambda: analyze_run(log), 3)
    print(f"{'entropyrl fit analysis, 1 run':34s} {full * 1e3:13.1f} ms   (2,400 steps, 600 evals)")


if __name__ == "__main__":
    main()
