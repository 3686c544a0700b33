"""What the demo's worker processes run in its tests, in place of ``demo.train_method``.

A spawned worker imports its target by module and name, so these live in a module of their own
(a function defined inside a test would not reach the worker). Each records its call in
``<demo out>/calls.jsonl``: the method, its directory, the worker's PID and torch threads.
"""

import json
import os
import signal
import threading
import time
from dataclasses import replace
from pathlib import Path

import torch

from entropyrl.errors import UserError
from entropyrl.train import train

LONG = 10_000  # steps: a run that only a stop ends within a test's time


def record(cfg, out: Path) -> None:
    row = {"name": cfg.name, "out": str(out), "pid": os.getpid(),
           "threads": torch.get_num_threads()}
    with open(out.parent / "calls.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")


def calls(demo_dir: Path) -> list[dict]:
    path = demo_dir / "calls.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def wait_for_a_step(run_dir: Path, timeout: float = 120.0) -> None:
    path, until = run_dir / "metrics.jsonl", time.monotonic() + timeout
    while not (path.exists() and path.read_text().count("\n") >= 1):
        if time.monotonic() > until:
            raise TimeoutError(f"no step in {path} after {timeout} s")
        time.sleep(0.05)


def record_and_train(cfg, out: Path) -> None:
    record(cfg, out)
    train(cfg, out)


def _second_method_fails(cfg, out: Path, error: Exception) -> None:
    """Clip-higher raises ``error`` while GRPO trains a run that only a stop ends."""
    record(cfg, out)
    if cfg.name == "Clip-higher":
        wait_for_a_step(out.parent / "grpo")
        raise error
    train(replace(cfg, steps=LONG), out)


def fail_with_a_user_error(cfg, out: Path) -> None:
    _second_method_fails(cfg, out, UserError("data.file: no such file; give an existing one"))


def fail_with_a_bug(cfg, out: Path) -> None:
    _second_method_fails(cfg, out, RuntimeError("boom"))


def interrupt_the_demo(cfg, out: Path) -> None:
    """GRPO and Clip-higher train long runs; once both have a step, SIGINT goes to the demo."""
    record(cfg, out)
    if cfg.name == "GRPO":
        def interrupt() -> None:
            for name in ("grpo", "clip_higher"):
                wait_for_a_step(out.parent / name)
            os.kill(os.getppid(), signal.SIGINT)

        threading.Thread(target=interrupt, daemon=True).start()
    train(replace(cfg, steps=LONG), out)
