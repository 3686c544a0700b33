"""What ``entropyrl demo`` shows while its methods train side by side in worker processes.

The workers print nothing here (their output goes to each run's ``train.log``); the board reads
the rows each run appends to its ``metrics.jsonl`` (flushed every step) and shows one line per
method as it starts and ends. On a terminal a live table shows every method's step, entropy and
accuracy; elsewhere (``make demo > log``, CI) a single status line is printed every
``STATUS_EVERY_S`` seconds.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from entropyrl.cli.parallel import Done, Failed, Job, Outcome, Stopped

STATUS_EVERY_S = 30.0


class _Tail:
    """The latest state of a run, read from the rows appended to its ``metrics.jsonl``."""

    def __init__(self, path: Path):
        self.path, self.offset, self.rest = path, 0, b""
        self.step = 0
        self.first_entropy: float | None = None
        self.entropy: float | None = None
        self.acc: float | None = None
        self.val: float | None = None

    def read(self) -> None:
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError:  # not written yet
            return
        self.offset += len(data)
        *lines, self.rest = (self.rest + data).split(b"\n")  # keep a line still being written
        for line in lines:
            try:
                row = json.loads(line)
            except ValueError:
                continue
            self.step = int(row.get("step", self.step))
            self.entropy = row.get("train/entropy", self.entropy)
            self.acc = row.get("train/acc", self.acc)
            self.val = row.get("val/acc", self.val)
            if self.first_entropy is None:
                self.first_entropy = self.entropy


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _clock(seconds: float) -> str:
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


class Board:
    """Progress of jobs run by :func:`entropyrl.cli.parallel.run_jobs` (its ``board``).

    Use as a context manager; ``steps`` gives each job's number of steps.
    """

    def __init__(self, jobs: list[Job], steps: dict[str, int], stream: TextIO | None = None):
        self.steps = steps
        self.stream = stream or sys.stdout
        self.tails = {j.name: _Tail(j.out / "metrics.jsonl") for j in jobs}
        self.state = {j.name: "waiting" for j in jobs}
        self.t0 = self.last_status = time.monotonic()
        self.live: Any = None
        self.rows: dict[str, Any] = {}

    def __enter__(self) -> Board:
        if self.stream.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self.live = Progress(
                TextColumn("{task.description:<18}"), BarColumn(bar_width=12),
                TextColumn("{task.completed:>3}/{task.total}"),
                TextColumn("H={task.fields[h]} acc={task.fields[acc]} val={task.fields[val]}"),
                TimeElapsedColumn(), console=Console(file=self.stream),
            )
            for name in self.tails:
                self.rows[name] = self.live.add_task(name, total=self.steps[name], start=False,
                                                     h="-", acc="-", val="-")
            self.live.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.live is not None:
            self.live.stop()

    def say(self, line: str) -> None:
        """Print a line (above the live table on a terminal)."""
        if self.live is not None:
            self.live.console.print(line, markup=False, highlight=False)
        else:
            print(line, file=self.stream, flush=True)

    def started(self, job: Job) -> None:
        """A worker took ``job``."""
        self.state[job.name] = "running"
        if self.live is not None:
            self.live.start_task(self.rows[job.name])
        self.say(f"[{job.name}] {self.steps[job.name]} steps -> {job.out}")

    def ended(self, job: Job, outcome: Outcome) -> None:
        """``job`` finished, failed or stopped: one line with its time and final metrics."""
        tail = self.tails[job.name]
        tail.read()
        self._update_row(job.name)
        if isinstance(outcome, Done):
            self.state[job.name] = "done"
            threads = f"{outcome.threads} thread{'s' if outcome.threads > 1 else ''}"
            self.say(f"[{job.name}] done in {_clock(outcome.seconds)} ({threads}): entropy "
                     f"{_num(tail.first_entropy)} -> {_num(tail.entropy)}, acc "
                     f"{_num(tail.acc)}, val {_num(tail.val)}")
        elif isinstance(outcome, Stopped):
            self.state[job.name] = "stopped"
            self.say(f"[{job.name}] stopped: {outcome.message}")
        elif isinstance(outcome, Failed):
            self.state[job.name] = "failed"
            self.say(f"[{job.name}] failed: {outcome.message}")
        if self.live is not None:
            self.live.stop_task(self.rows[job.name])

    def tick(self) -> None:
        """Read the runs' new rows; refresh the table, or print the status line when due."""
        for name, state in self.state.items():
            if state == "running":
                self.tails[name].read()
                self._update_row(name)
        now = time.monotonic()
        if self.live is None and now - self.last_status >= STATUS_EVERY_S:
            self.last_status = now
            self.say(self.status_line())

    def status_line(self) -> str:
        """One line: ``demo 1m30s | GRPO 45/100 H=0.102 | Clip-Cov waiting | ...``."""
        parts = [f"demo {_clock(time.monotonic() - self.t0)}"]
        for name, state in self.state.items():
            tail = self.tails[name]
            if state == "running":
                parts.append(f"{name} {tail.step}/{self.steps[name]} H={_num(tail.entropy)}")
            else:
                parts.append(f"{name} {state}")
        return " | ".join(parts)

    def _update_row(self, name: str) -> None:
        if self.live is None:
            return
        t = self.tails[name]
        self.live.update(self.rows[name], completed=t.step, h=_num(t.entropy), acc=_num(t.acc),
                         val=_num(t.val))
