"""PRIME's dense rewards against GRPO (and RLOO, its outcome-only part) on the testbed.

    python bench/bench_prime.py [--seeds 0 1 2] [--workers 2] [--out runs/bench_prime]
                                [--figure docs/figures/prime_vs_grpo.png] [key=value ...]

Trains ``testbed/prime``, ``testbed/grpo`` and ``testbed/grpo`` with ``algorithm.advantage=rloo``
(the outcome part of PRIME's advantage alone, so the process rewards' own effect is the gap
between PRIME and RLOO) for every seed, each run in its own process at one thread, then prints
per method mean ± sd over seeds of the train entropy at the first and last step, the first,
final and best validation accuracy (``val/acc``, sampled at T = 1 as in the presets), the mean
of the last three validations, the train accuracy of the last ten steps and the median step
time (``time/step_s``; the runs share the machine); and draws entropy and validation accuracy
over steps (mean over seeds, band = min–max). A run directory that already holds a finished
run is read, not retrained. Overrides (``key=value``) apply to every run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from entropyrl.train.metrics import read_metrics

METHODS = (
    ("PRIME", "testbed/prime", ()),
    ("GRPO", "testbed/grpo", ()),
    ("RLOO", "testbed/grpo", ("algorithm.advantage=rloo", "name=RLOO")),
)


def _finished(run_dir: Path, steps: int) -> bool:
    path = run_dir / "metrics.jsonl"
    return path.is_file() and any(r["step"] == steps for r in read_metrics(path))


def train_one(run_dir: Path, preset: str, seed: int, extra: tuple[str, ...],
              overrides: list[str], steps: int) -> None:
    """Train one run in a subprocess (one thread) unless it is already finished."""
    if _finished(run_dir, steps):
        return
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "entropyrl.cli.main", "train", "--config", preset,
           "--out", str(run_dir), f"seed={seed}", "progress=false", *extra, *overrides]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")


def summary(rows: list[dict]) -> dict[str, float]:
    """One run's figures."""
    vals = [r["val/acc"] for r in rows if "val/acc" in r]
    return {
        "H first": rows[0]["train/entropy"],
        "H last": rows[-1]["train/entropy"],
        "val first": vals[0],
        "val final": vals[-1],
        "val best": max(vals),
        "val last 3": statistics.fmean(vals[-3:]),
        "train acc last 10": statistics.fmean(r["train/acc"] for r in rows[-10:]),
        "s/step": statistics.median(r["time/step_s"] for r in rows),
    }


def _fmt(values: list[float]) -> str:
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.3f} ± {sd:.3f}"


def figure(runs: dict[str, list[list[dict]]], path: Path) -> None:
    """Entropy and validation accuracy over steps, mean over seeds with a min–max band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for name, seeds in runs.items():
        for ax, key in zip(axes, ("train/entropy", "val/acc"), strict=True):
            steps = [r["step"] for r in seeds[0] if key in r]
            series = [[r[key] for r in rows if key in r] for rows in seeds]
            n = min(len(s) for s in series)
            cols = list(zip(*(s[:n] for s in series), strict=True))
            mean = [statistics.fmean(c) for c in cols]
            line = ax.plot(steps[:n], mean, label=name)[0]
            ax.fill_between(steps[:n], [min(c) for c in cols], [max(c) for c in cols],
                            color=line.get_color(), alpha=0.2, linewidth=0)
    axes[0].set(xlabel="step", ylabel="train entropy (nats)", yscale="log")
    axes[1].set(xlabel="step", ylabel="val/acc (sampled, T = 1)")
    axes[1].legend()
    n_seeds = len(next(iter(runs.values())))
    fig.suptitle(f"Testbed, {n_seeds} seeds: mean, band = min–max")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("runs/bench_prime"))
    parser.add_argument("--figure", type=Path, default=Path("docs/figures/prime_vs_grpo.png"))
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("overrides", nargs="*", help="key=value for every run")
    args = parser.parse_args()
    overrides = [f"steps={args.steps}", *args.overrides]
    jobs = [(name, preset, extra, seed) for seed in args.seeds
            for name, preset, extra in METHODS]
    with ThreadPoolExecutor(args.workers) as pool:
        futures = [pool.submit(train_one, args.out / f"{n.lower()}_s{s}", p, s, e, overrides,
                               args.steps) for n, p, e, s in jobs]
        for fut in futures:
            fut.result()
    runs = {name: [read_metrics(args.out / f"{name.lower()}_s{s}" / "metrics.jsonl")
                   for s in args.seeds] for name, _, _ in METHODS}
    table = {name: [summary(rows) for rows in seeds] for name, seeds in runs.items()}
    fields = list(next(iter(table.values()))[0])
    print(f"{'method':8s} " + " ".join(f"{f:>17s}" for f in fields))
    for name, rows in table.items():
        print(f"{name:8s} " + " ".join(f"{_fmt([r[f] for r in rows]):>17s}" for f in fields))
    figure(runs, args.figure)
    print(f"figure: {args.figure}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
