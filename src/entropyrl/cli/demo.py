"""``entropyrl demo``: GRPO, clip-higher, Clip-Cov, KL-Cov and controlled Clip-Cov, testbed."""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path
from typing import Any

# (name shown in the report, preset)
METHODS: tuple[tuple[str, str], ...] = (
    ("GRPO", "testbed/grpo"),
    ("Clip-higher", "testbed/clip_higher"),
    ("Clip-Cov", "testbed/clip_cov"),
    ("KL-Cov", "testbed/kl_cov"),
    # Clip-Cov with its ratio set each step by the entropy controller (docs/control.md).
    ("Clip-Cov control", "testbed/clip_cov_control"),
)
QUICK = ("steps=20", "eval.every=4", "data.testbed.val_size=64")


def add_parser(sub: Any) -> None:
    """Register the ``demo`` subcommand."""
    p = sub.add_parser(
        "demo",
        help="train GRPO, clip-higher, Clip-Cov, KL-Cov and controlled Clip-Cov on the testbed "
        "and write a report",
        description=(
            "Runs the paper's comparison on the embedded testbed (offline, CPU): entropy "
            "collapse under GRPO, Clip-Cov and KL-Cov keeping entropy up, a controller holding "
            "a target entropy through Clip-Cov's ratio, the covariance that drives it, and "
            "the entropy-performance law fitted to each run. Writes "
            "DIR/report.html, DIR/summary.json and one run directory per method."
        ),
    )
    p.add_argument("--out", "-o", type=Path, default=Path("demo_out"),
                   help="output directory (default: demo_out)")
    p.add_argument("--quick", action="store_true", help="a short run (about 2 minutes)")
    p.add_argument("--seed", type=int, default=0, help="training seed of every method")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides applied to every method")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Train each method, then write the report and print the summary."""
    from entropyrl.config import load_config
    from entropyrl.errors import RunInterrupted
    from entropyrl.report import print_summary, write_report
    from entropyrl.train import train

    overrides = [*(QUICK if args.quick else ()), f"seed={args.seed}", *args.overrides]
    runs: dict[str, Path] = {}
    t0 = time.perf_counter()
    for name, preset in METHODS:
        cfg = load_config(preset, [*overrides, f"name={name}"])
        out = args.out / preset.split("/")[-1]
        if out.exists():  # a demo always starts fresh; `entropyrl train` is the resumable path
            shutil.rmtree(out)
        print(f"[{name}] {cfg.steps} steps -> {out}")
        try:
            train(cfg, out)
        except RunInterrupted as stop:  # stop the whole demo, which always starts over
            raise RunInterrupted(
                f"interrupted during {name} ({stop}). The demo does not resume: run it again "
                "to start over, or resume this method alone with `entropyrl train`.",
                stop.exit_code,
            ) from None
        runs[name] = out
    summary = write_report(runs, args.out)
    print_summary(summary)
    print(f"report: {args.out / 'report.html'}  ({time.perf_counter() - t0:.0f} s)")
    return 0
