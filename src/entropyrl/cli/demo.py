"""``entropyrl demo``: GRPO, clip-higher, Clip-Cov, KL-Cov and controlled Clip-Cov, testbed."""

from __future__ import annotations

import argparse
import shutil
import sys
import time
import traceback
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
    p.add_argument("--quick", action="store_true", help="a short run (20 steps per method)")
    p.add_argument("--jobs", "-j", type=_positive_int, default=None, metavar="N",
                   help="methods trained at once, each in a worker process with CORES/N torch "
                   "threads and its output in RUN/train.log (default: the usable CPU cores, at "
                   "most the 5 methods); 1 trains them one after another in this process")
    p.add_argument("--seed", type=int, default=0, help="training seed of every method")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides applied to every method")
    p.set_defaults(func=run)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def train_method(cfg: Any, out: Path) -> None:
    """Train one method into ``out`` (what each worker runs; a test may put another here)."""
    from entropyrl.train import train

    train(cfg, out)


RESUME_HINT = ("The demo does not resume: run it again to start over, or resume a method alone "
               "with `entropyrl train`.")


def run(args: argparse.Namespace) -> int:
    """Train each method, then write the report and print the summary."""
    from entropyrl.cli.parallel import plan_workers, usable_cores
    from entropyrl.config import load_config
    from entropyrl.report import print_summary, write_report

    overrides = [*(QUICK if args.quick else ()), f"seed={args.seed}", *args.overrides]
    plan = [(name, load_config(preset, [*overrides, f"name={name}"]),
             args.out / preset.split("/")[-1]) for name, preset in METHODS]
    for _, _, out in plan:
        _start_fresh(out)
    jobs, threads = plan_workers(args.jobs, usable_cores(), len(plan))
    t0 = time.perf_counter()
    if jobs == 1:
        _serial(plan)
    else:
        _parallel(plan, jobs, threads)
    summary = write_report({name: out for name, _, out in plan}, args.out)
    print_summary(summary)
    print(f"report: {args.out / 'report.html'}  ({time.perf_counter() - t0:.0f} s)")
    return 0


def _start_fresh(out: Path) -> None:
    """A demo always starts over (`entropyrl train` is the resumable path): empty ``out``."""
    from entropyrl.errors import UserError

    try:
        if out.is_dir() and not out.is_symlink():
            shutil.rmtree(out)
        out.mkdir(parents=True)
    except OSError as err:
        raise UserError(f"--out: cannot make a fresh run directory {out} ({err.strerror}); "
                        "give an --out directory this user can write in.") from None


def _serial(plan: list[tuple[str, Any, Path]]) -> None:
    """Train the methods one after another in this process (``--jobs 1``)."""
    from entropyrl.errors import RunInterrupted, UserError

    for name, cfg, out in plan:
        print(f"[{name}] {cfg.steps} steps -> {out}")
        try:
            train_method(cfg, out)
        except RunInterrupted as stop:  # stop the whole demo, which always starts over
            raise RunInterrupted(f"interrupted during {name} ({stop}). {RESUME_HINT}",
                                 stop.exit_code) from None
        except UserError as err:
            raise UserError(f"{name} failed: {err}") from None
        except Exception as err:  # a bug: its traceback, then the method's name
            traceback.print_exc()
            raise UserError(f"{name} failed: {type(err).__name__}: {err} (traceback above)"
                            ) from None


def _parallel(plan: list[tuple[str, Any, Path]], jobs: int, threads: int) -> None:
    """Train the methods ``jobs`` at a time in worker processes; raise as :func:`_serial` does."""
    from entropyrl.cli.board import Board
    from entropyrl.cli.parallel import LOG_NAME, Failed, Job, Stopped, run_jobs
    from entropyrl.errors import RunInterrupted, UserError

    todo = [Job(name, cfg, out) for name, cfg, out in plan]
    s = "s" if threads > 1 else ""
    print(f"{len(todo)} methods, {jobs} at a time, {threads} torch thread{s} each; what each "
          f"prints goes to {todo[0].out.parent / '<method>' / LOG_NAME}", flush=True)
    with Board(todo, {j.name: j.cfg.steps for j in todo}) as board:
        results = run_jobs(todo, jobs, threads, train_method, board)
    logs = {j.name: j.out / LOG_NAME for j in todo}
    for name, outcome in results.outcomes.items():  # the first to fail, which stopped the rest
        if isinstance(outcome, Failed):
            if outcome.traceback:
                print(f"{name}'s traceback:\n{outcome.traceback}", file=sys.stderr)
            raise UserError(f"{name} failed: {outcome.message} (its output: {logs[name]}). "
                            "The other methods were stopped; run the demo again once this is "
                            "fixed.")
    stops = [(j.name, o) for j in todo if isinstance(o := results.outcomes.get(j.name), Stopped)]
    if stops or results.signum is not None:
        where = " and ".join(f"{name} ({o.message})" for name, o in stops)
        code = 128 + results.signum if results.signum is not None else stops[0][1].exit_code
        raise RunInterrupted(f"interrupted {'during ' + where if where else 'before the report'}"
                             f". {RESUME_HINT}", code)
