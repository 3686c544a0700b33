"""Training jobs side by side in worker processes, for ``entropyrl demo --jobs N``.

Each worker is a fresh *spawned* interpreter (forking a parent that has started torch's thread
pools is unsafe), limited to ``threads`` torch threads so that N workers share the cores rather
than fight over them, and runs the parent's jobs one at a time. A worker's own output (warnings,
the run's plain progress lines) goes to ``<run>/train.log``, so nothing interleaves on the
terminal; the parent shows progress from each run's ``metrics.jsonl``, which the trainer
flushes every step (:class:`Board`).

Stops mean what they mean for one run: a SIGINT/SIGTERM that reaches the parent is passed on to
every busy worker, whose run finishes its step, checkpoints and stops; a job that fails stops the
others the same way, and a second signal kills the workers at once. Every worker is joined
before :func:`run_jobs` returns or raises, and a worker whose parent dies stops its run itself,
so none outlives the demo.

Why not ``concurrent.futures.ProcessPoolExecutor``: it exposes neither the workers' PIDs, to
pass a signal on, nor a way to stop running jobs when one fails.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from entropyrl._signals import handling
from entropyrl.errors import RunInterrupted, UserError

LOG_NAME = "train.log"  # a worker's output, in its run directory
GRACE_S = 120.0  # after a stop, how long a busy worker may take to finish its step
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. under taskset or SLURM)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def plan_workers(requested: int | None, cores: int, n_jobs: int) -> tuple[int, int]:
    """``(workers, torch threads per worker)`` for ``n_jobs`` jobs on ``cores`` cores.

    Workers: ``requested``, else one per core; never more than the jobs. Threads: the cores
    shared out among the workers, at least one each, so that they do not oversubscribe.
    """
    workers = max(1, min(requested or cores, n_jobs))
    return workers, max(1, cores // workers)


@dataclass(frozen=True)
class Job:
    """One training run: ``target(cfg, out)`` in a worker. ``out`` must exist."""

    name: str
    cfg: Any
    out: Path


@dataclass(frozen=True)
class Done:
    """A finished job: its wall time in the worker and the torch threads it ran with."""

    seconds: float
    threads: int


@dataclass(frozen=True)
class Failed:
    """A job that raised.

    The message is a UserError's own text, else ``Type: message``; the traceback (the
    worker's) is there for an exception that is not a :class:`UserError`, i.e. a bug.
    """

    message: str
    traceback: str | None


@dataclass(frozen=True)
class Stopped:
    """A job stopped by a signal: the run's own words and its exit code (128 + signal)."""

    message: str
    exit_code: int


Outcome = Done | Failed | Stopped


# ---- the worker process ---------------------------------------------------------------------


class _Signalled(BaseException):
    """A stop signal that came while no run had its own handler installed.

    That is while a run starts or closes, or between jobs. A BaseException, so that no
    ``except Exception`` in the run's code swallows it.
    """

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _raise_signalled(signum: int, frame: Any) -> None:
    raise _Signalled(signum)


def _worker_main(conn: Connection, threads: int, target: Callable[[Any, Path], Any]) -> None:
    """Take jobs from ``conn`` until ``None``; answer each with its :data:`Outcome`."""
    # The parent started this process with the stop signals blocked (a Ctrl-C during start-up
    # waits here instead of printing a KeyboardInterrupt traceback). The trainer replaces these
    # handlers while it trains (finish the step, checkpoint, raise RunInterrupted) and puts
    # them back after, so a signal at any moment stops the job.
    for s in STOP_SIGNALS:
        signal.signal(s, _raise_signalled)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    _stop_when_orphaned(os.getppid())
    try:
        import torch

        torch.set_num_threads(threads)
        # Nothing in a training step runs ops concurrently; one inter-op thread is enough.
        with contextlib.suppress(RuntimeError):  # only settable before any parallel work
            torch.set_num_interop_threads(1)
        while (job := conn.recv()) is not None:
            outcome = _run_job(job, target)
            with _signals_blocked():  # a signal must not cut a message in half
                conn.send(outcome)
    except (_Signalled, EOFError, OSError):
        pass  # the parent asked for the stop, or is gone; it knows what it has been sent


def _run_job(job: Job, target: Callable[[Any, Path], Any]) -> Outcome:
    import torch

    t0 = time.perf_counter()
    try:
        _redirect_output(job.out / LOG_NAME)
        target(job.cfg, job.out)
    except RunInterrupted as stop:
        return Stopped(str(stop), stop.exit_code)
    except _Signalled as stop:
        name = signal.Signals(stop.signum).name
        return Stopped(f"stopped by {name} outside a training step", 128 + stop.signum)
    except UserError as err:
        return Failed(str(err), None)
    except Exception as err:
        text = traceback.format_exc()
        print(text, file=sys.stderr, flush=True)  # into the log as well
        return Failed(f"{type(err).__name__}: {err}", text)
    return Done(time.perf_counter() - t0, torch.get_num_threads())


def _redirect_output(path: Path) -> None:
    """Send this process's stdout and stderr, Python's and C's, to ``path`` (appended).

    Off a terminal the trainer prints plain progress lines instead of a live bar.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _signals_blocked() -> Iterator[None]:
    """Hold SIGINT/SIGTERM back (pending, not lost) inside the block."""
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def _stop_when_orphaned(parent: int) -> None:
    """SIGTERM this worker if its parent dies (killed with -9, say).

    The run then checkpoints and stops instead of training on with no one to report to.
    """

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="orphan-watch", daemon=True).start()


# ---- the parent -----------------------------------------------------------------------------


class _Worker:
    """A worker process, the parent's end of its pipe, and the job it is running (if any)."""

    def __init__(self, ctx: Any, threads: int, target: Callable[[Any, Path], Any], n: int):
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_worker_main, args=(child, threads, target),
                                   name=f"entropyrl-worker-{n}")
        with _signals_blocked():  # inherited by the child; see _worker_main
            self.process.start()
        child.close()
        self.job: Job | None = None
        self.killed_because: str | None = None

    def give(self, job: Job | None) -> None:
        self.job = job
        with contextlib.suppress(OSError):  # a worker that died is reported by its sentinel
            self.conn.send(job)

    def signal(self, signum: int) -> None:
        if self.process.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signum)

    def kill(self, why: str) -> None:
        self.killed_because = why
        self.process.kill()

    def outcome(self, stop_signum: int | None) -> Outcome | None:
        """The busy worker's answer if one came, else None while it lives.

        A worker that died without answering gives a :class:`Stopped` when a stop was under
        way (``stop_signum``), else a :class:`Failed`.
        """
        with contextlib.suppress(EOFError, OSError):
            if self.conn.poll():
                answer: Outcome = self.conn.recv()
                return answer
        if self.process.is_alive():
            return None
        if self.killed_because:
            return Stopped(self.killed_because, 128 + (stop_signum or signal.SIGTERM))
        code = self.process.exitcode
        how = (f"was killed by {signal.Signals(-code).name}" if code is not None and code < 0
               else f"exited with code {code}")
        if stop_signum is not None:
            return Stopped(f"its worker {how} while stopping", 128 + stop_signum)
        return Failed(f"its worker process {how} before it reported", None)

    def close(self, grace: float) -> None:
        """Join the process: ask an idle one to exit, stop a busy one, kill what lingers."""
        if self.process.is_alive():
            if self.job is None:
                self.give(None)
            else:
                self.process.terminate()
            self.process.join(grace)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()


@dataclass
class _Signals:
    signum: int | None = None
    count: int = 0


@contextlib.contextmanager
def _caught_signals() -> Iterator[_Signals]:
    """Record SIGINT/SIGTERM instead of raising, so that the parent can stop its workers."""
    caught = _Signals()

    def handler(signum: int, frame: Any) -> None:
        caught.signum = caught.signum or signum
        caught.count += 1

    with handling(STOP_SIGNALS, handler):
        yield caught


@dataclass(frozen=True)
class Results:
    """What :func:`run_jobs` saw: each job's outcome, and a stop signal the parent received.

    Attributes:
        outcomes: ``{name: Outcome}`` in the order the jobs ended; jobs never started are
            absent.
        signum: the first SIGINT/SIGTERM this process received while the jobs ran, or None.
    """

    outcomes: dict[str, Outcome]
    signum: int | None


def run_jobs(jobs: list[Job], n_jobs: int, threads: int, target: Callable[[Any, Path], Any],
             board: Any) -> Results:
    """Run ``target(job.cfg, job.out)`` for each job, ``n_jobs`` workers at a time.

    Jobs start in list order. After a :class:`Failed` or :class:`Stopped` outcome, or a stop
    signal to this process, no job starts and the busy ones are stopped (their runs
    checkpoint). ``board`` is told ``started(job)``, ``ended(job, outcome)`` and ``tick()``
    (about once a second). ``target`` must be picklable (a module-level function).
    """
    ctx = mp.get_context("spawn")
    pending = deque(jobs)
    outcomes: dict[str, Outcome] = {}
    workers: list[_Worker] = []
    with _caught_signals() as caught:
        try:
            for n in range(min(n_jobs, len(jobs))):
                job = pending.popleft()
                workers.append(_Worker(ctx, threads, target, n))
                workers[-1].give(job)
                board.started(job)
            _supervise(workers, pending, outcomes, caught, board)
        finally:
            for w in workers:
                w.close(GRACE_S if w.job is not None else 10.0)
    return Results(outcomes, caught.signum)


def _supervise(workers: list[_Worker], pending: deque[Job], outcomes: dict[str, Outcome],
               caught: _Signals, board: Any) -> None:
    """Hand out jobs and collect outcomes until no worker is busy (see :func:`run_jobs`)."""
    stop_signum: int | None = None  # set once the busy workers have been told to stop
    stopped_at = 0.0
    while busy := [w for w in workers if w.job is not None]:
        wait([w.conn for w in busy] + [w.process.sentinel for w in busy], timeout=1.0)
        for w in busy:
            job, outcome = w.job, w.outcome(stop_signum or caught.signum)
            if job is None or outcome is None:
                continue
            outcomes[job.name] = outcome
            board.ended(job, outcome)
            go_on = stop_signum is None and not caught.count and isinstance(outcome, Done)
            w.give(pending.popleft() if go_on and pending else None)
            if w.job is not None:
                board.started(w.job)
        busy = [w for w in workers if w.job is not None]
        trouble = caught.count or any(not isinstance(o, Done) for o in outcomes.values())
        if trouble and stop_signum is None:
            pending.clear()
            # Each run stops at the end of its step and checkpoints, as on Ctrl-C.
            stop_signum, stopped_at = caught.signum or signal.SIGTERM, time.monotonic()
            for w in busy:
                w.signal(stop_signum)
        if stop_signum is not None:
            late = time.monotonic() - stopped_at > GRACE_S
            for w in busy:
                if w.killed_because is None and (caught.count >= 2 or late):
                    w.kill("killed at once by a second signal" if caught.count >= 2 else
                           f"did not stop within {GRACE_S:.0f} s and was killed")
        board.tick()
