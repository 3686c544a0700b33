"""The run: steps, validation cadence, checkpoints, stop signals and the progress line.

``train(cfg, out_dir)`` runs a whole job on ``accelerate`` (one CPU process by default;
``accelerate launch --num_processes N`` for data parallelism, ``--config_file
configs/accelerate/fsdp2.yaml`` for sharding), writes ``metrics.jsonl`` every step, validates
every ``eval.every`` steps, checkpoints, and resumes from the newest checkpoint when restarted
with the same output directory. Each step re-seeds its random generators from ``(seed, step,
rank)``, so a resumed run reproduces an uninterrupted one exactly on CPU. One step is
:func:`entropyrl.train.step.rl_step`.
"""

from __future__ import annotations

import math
import signal
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from entropyrl._signals import handling
from entropyrl.config import TrainConfig
from entropyrl.errors import RunInterrupted
from entropyrl.evaluation import validate
from entropyrl.train.entropy_control import EntropyControl
from entropyrl.train.setup import Run, setup
from entropyrl.train.state import save_run
from entropyrl.train.step import rl_step
from entropyrl.train.update import derive_seed


def train(
    cfg: TrainConfig,
    out_dir: Path,
    *,
    accelerator: Any = None,
    stop_after: int | None = None,
    allow_config_change: bool = False,
) -> Path:
    """Run (or resume) a training job into ``out_dir``; returns ``out_dir``.

    ``stop_after`` stops after that step as a signal would (checkpoint, return); running the
    same call again resumes. ``allow_config_change`` lets a resumed run take a config that
    differs from its checkpoint's (the change is recorded in ``config_changes.jsonl``).

    Raises:
        RunInterrupted: SIGINT or SIGTERM stopped the run; it checkpointed first.
        UserError: a problem the user can fix (nothing already written is damaged).
    """
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # no load/save bars at every checkpoint
    try:
        return _train(cfg, out_dir, accelerator, stop_after, allow_config_change)
    finally:
        if bars:
            hf_logging.enable_progress_bar()


def _train(cfg: TrainConfig, out_dir: Path, accelerator: Any, stop_after: int | None,
           allow_config_change: bool) -> Path:
    run = setup(cfg, out_dir, accelerator, allow_config_change=allow_config_change)
    controller = EntropyControl.of_run(cfg, run.extra_state)
    try:
        with _stop_signals() as stop, _progress(run) as advance:
            for step in range(run.step + 1, cfg.steps + 1):
                metrics: dict[str, Any] = {"step": step}
                if _validation_due(cfg, step):
                    metrics.update(run_validation(run, step))
                run.loss = controller.loss_for_step()
                metrics.update(rl_step(run, step))
                metrics.update(controller.observe(step, metrics, run.last_batch))
                run.step = step
                if run.sink is not None:
                    run.sink.write(metrics)
                advance(metrics)
                halt = stop.requested or (stop_after is not None and step >= stop_after)
                every = cfg.checkpoint_every
                if step == cfg.steps or halt or (every and step % every == 0):
                    save_run(run)
                if halt:
                    break
    finally:
        run.tasks.close()
        run.engine.close()
        if run.sink is not None:
            run.sink.close()
        run.release()
    if stop.signum is not None:
        name = signal.Signals(stop.signum).name
        raise RunInterrupted(
            f"interrupted by {name} at step {run.step} of {cfg.steps}; checkpoint saved in "
            f"{out_dir / 'checkpoints'}. Run the same command to resume.", 128 + stop.signum)
    return out_dir


def run_validation(run: Run, step: int) -> dict[str, float]:
    """Validation metrics of the policy that samples this step, over all ranks' slices."""
    cfg = run.cfg
    t = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        # Rank 0 keeps the single-process seed; other ranks draw their own streams.
        rank_part = [run.dist.rank] if run.dist.rank else []
        torch.manual_seed(derive_seed(cfg.seed, step, 991, *rank_part))
        policy = run.learner.accelerator.unwrap_model(run.learner.model)
        # Sharded, the entropy is scored on the engine's full copy where it holds one (the HF
        # engine); otherwise (vLLM) on the sharded policy, whose forwards are collectives.
        full_copy = getattr(run.engine, "model", None) if run.sharded else None
        out = validate(run.engine, policy if full_copy is None else full_copy, run.tasks.val,
                       run.tasks.score_batch, k=cfg.eval.k, temperature=cfg.eval.temperature,
                       max_new_tokens=cfg.eval.max_new_tokens, acc=cfg.eval.acc, dist=run.dist,
                       autocast=run.learner.autocast, entropy_samples=cfg.eval.entropy_samples,
                       sharded=run.sharded and full_copy is None)
    out["time/eval_s"] = time.perf_counter() - t
    return out


def _validation_due(cfg: TrainConfig, step: int) -> bool:
    every = cfg.eval.every
    return every > 0 and ((step - 1) % every == 0 or step == cfg.steps)


class _Stop:
    signum: int | None = None

    @property
    def requested(self) -> bool:
        return self.signum is not None


@contextmanager
def _stop_signals() -> Any:
    """SIGINT/SIGTERM finish the current step, checkpoint and stop cleanly."""
    stop = _Stop()

    def handler(signum: int, frame: Any) -> None:
        stop.signum = signum

    with handling((signal.SIGINT, signal.SIGTERM), handler):
        yield stop


@contextmanager
def _progress(run: Run) -> Any:
    """The main process's progress: a rich bar on a terminal, plain lines otherwise.

    Without a terminal (make logs, CI, SLURM) a line is printed at the first and last step,
    at validation steps and at least every ``PLAIN_EVERY_S`` seconds.
    """
    enabled = run.cfg.progress and run.dist.is_main
    if enabled and not sys.stdout.isatty():
        yield _plain_progress(run)
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(bar_width=12),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("H={task.fields[h]} acc={task.fields[acc]} val={task.fields[val]}"),
        TimeRemainingColumn(compact=True), disable=not enabled, transient=False,
    )
    task = progress.add_task(run.cfg.name[:16], total=run.cfg.steps, completed=run.step,
                             h="-", acc="-", val="-")
    last_val = ["-"]

    def advance(m: dict[str, Any]) -> None:
        if "val/acc" in m:
            last_val[0] = f"{m['val/acc']:.3f}"
        progress.update(task, advance=1, h=f"{m['train/entropy']:.3f}",
                        acc=f"{m['train/acc']:.3f}", val=last_val[0])

    with progress:
        yield advance


PLAIN_EVERY_S = 30.0


def _plain_progress(run: Run) -> Any:
    """``advance(metrics)`` printing one plain line now and then (see :func:`_progress`)."""
    start, first = time.monotonic(), run.step + 1
    printed, last_val = [-math.inf], ["-"]

    def advance(m: dict[str, Any]) -> None:
        step, now = int(m["step"]), time.monotonic()
        if "val/acc" in m:
            last_val[0] = f"{m['val/acc']:.3f}"
        due = now - printed[0] >= PLAIN_EVERY_S
        if not (due or step in (first, run.cfg.steps) or "val/acc" in m):
            return
        per_step = (now - start) / (step - first + 1)
        eta = per_step * (run.cfg.steps - step)
        print(f"[{run.cfg.name}] step {step}/{run.cfg.steps}  H={m['train/entropy']:.3f}  "
              f"acc={m['train/acc']:.3f}  val={last_val[0]}  {per_step:.1f} s/step  "
              f"ETA {int(eta // 60)}m{int(eta % 60):02d}s", flush=True)
        printed[0] = now

    return advance
