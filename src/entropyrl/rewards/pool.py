"""Score responses in worker processes, each call under a hard deadline.

Why processes: a verifier can hang or eat memory on a hostile answer (sympy expanding
``9^{9^{9^{9^{9}}}}`` runs in C code that no Python signal interrupts), and math-verify's own
timeout uses ``signal.alarm``, which works only in the main thread of the main interpreter. Here
each call runs in a worker process; the parent waits on pipes with a deadline (no signals, so it
works from any thread) and, when a call passes its deadline, kills that worker, scores the call
0.0 and starts a replacement. Several workers score a batch in parallel, and
:meth:`RewardPool.submit_batch` scores in the background while the caller does other work.

Workers use the ``spawn`` start method by default: a fresh interpreter that imports only the
scoring function's module, safe with CUDA and threads in the parent (``fork`` is not).
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from entropyrl.rewards.math import score_response

ScoreFn = Callable[[str, Any], Any]


class RewardFunctionError(Exception):
    """The scoring function failed (raised by pools made with ``raise_errors=True``)."""


@dataclass
class PoolStats:
    """Cumulative counters of a pool (log them to spot a verifier in trouble)."""

    calls: int = 0
    """Responses scored."""
    timeouts: int = 0
    """Calls that passed the deadline: scored 0.0, worker killed and replaced."""
    errors: int = 0
    """Calls whose function raised, or whose worker died: scored with the pool's default."""
    restarts: int = 0
    """Workers started to replace a killed or dead one."""


def _describe(exc: BaseException) -> str:
    """``Type: message (file:line in function)`` of the innermost frame.

    A :class:`RewardFunctionError` raised by the scoring function is its message alone (the
    function's wrapper reporting a bad value, not a bug at a place in the code).
    """
    if isinstance(exc, RewardFunctionError):
        return str(exc)
    where = traceback.extract_tb(exc.__traceback__)
    text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    if where:
        f = where[-1]
        text += f" (at {f.filename}:{f.lineno} in {f.name})"
    return text


def _worker_main(conn: Connection, fn: ScoreFn, warm_up: tuple[str, Any] | None) -> None:
    """Worker loop: warm up, announce readiness, then score ``(call_id, index, response, answer)``.

    The warm-up call imports what ``fn`` imports lazily (math-verify, sympy: seconds on a busy
    machine) before the worker takes work, so no real answer pays it inside its deadline.
    """
    # Ctrl-C goes to the whole process group; the parent decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if warm_up is not None:
        with contextlib.suppress(Exception):
            fn(*warm_up)
    conn.send(("ready",))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        call_id, index, response, answer = msg
        try:
            value, error = fn(response, answer), None
        except Exception as exc:
            value, error = None, _describe(exc)
        conn.send(("result", call_id, index, value, error))


class _Worker:
    """One worker process and the parent's end of its pipe."""

    def __init__(self, ctx: Any, fn: ScoreFn, warm_up: tuple[str, Any] | None):
        self.conn, child = ctx.Pipe(duplex=True)
        self.process = ctx.Process(target=_worker_main, args=(child, fn, warm_up), daemon=True)
        self.process.start()
        child.close()
        self.started = time.monotonic()
        self.ready = False
        self.index: int | None = None  # the response it is scoring, if busy
        self.deadline = 0.0

    def kill(self) -> None:
        with contextlib.suppress(Exception):
            self.process.kill()
            self.process.join(timeout=5)
        with contextlib.suppress(Exception):
            self.conn.close()


class RewardPool:
    """A pool of ``workers`` processes running ``fn(response, payload) -> result``.

    Args:
        fn: the scoring function; must be picklable (a module-level function or an instance
            of a module-level class). ``payload`` is what the caller passes with each response
            (the reference answer for math); the result must be picklable.
        workers: number of worker processes (default: CPU count - 1, between 1 and 8).
        timeout: hard deadline per call in seconds; a call past it scores 0.0.
        start_method: ``"spawn"`` (default, portable, safe with CUDA/threads) or
            ``"forkserver"``.
        startup_timeout: seconds to wait for a worker to start before raising ``RuntimeError``.
        warm_up: ``(response, payload)`` each worker scores once before it takes work, so
            that lazy imports happen outside every call's deadline (None: no warm-up).
        default: the result of a call that passed its deadline, raised, or lost its worker.
        raise_errors: when the function raises, finish the batch and then raise
            :class:`RewardFunctionError` with the first error (``False``: score it ``default``
            and count it in ``stats.errors``).

    Workers are replaced when they pass a deadline or die, busy or idle. Use as a context
    manager, or call :meth:`close`.
    """

    def __init__(
        self,
        fn: ScoreFn,
        workers: int | None = None,
        timeout: float = 5.0,
        *,
        start_method: str = "spawn",
        startup_timeout: float = 120.0,
        warm_up: tuple[str, Any] | None = None,
        default: Any = 0.0,
        raise_errors: bool = False,
    ):
        # Imported here, not at module level: _checks imports torch, and every worker process
        # imports this module; workers need only the scoring function's dependencies.
        from entropyrl._checks import check_positive

        if workers is None:
            workers = max(1, min(8, (os.cpu_count() or 2) - 1))
        if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
            raise ValueError(f"workers: expected an integer >= 1, got {workers!r}")
        check_positive("timeout", timeout)
        check_positive("startup_timeout", startup_timeout)
        if start_method not in ("spawn", "forkserver"):
            raise ValueError(
                f"start_method: expected 'spawn' or 'forkserver', got {start_method!r}"
            )
        self.fn = fn
        self.warm_up = warm_up
        self.default = default
        self.raise_errors = raise_errors
        self._first_error: str | None = None
        self.timeout = float(timeout)
        self.startup_timeout = float(startup_timeout)
        self.stats = PoolStats()
        self._ctx = mp.get_context(start_method)
        self._lock = threading.Lock()
        self._call_id = 0
        self._closed = False
        self._executor: ThreadPoolExecutor | None = None
        self._workers = [_Worker(self._ctx, fn, warm_up) for _ in range(workers)]

    # -- public API ------------------------------------------------------------------------

    def score(self, response: str, answer: Any) -> Any:
        """Score one response (see :meth:`score_batch`)."""
        return self.score_batch([response], [answer])[0]

    def score_batch(self, responses: Sequence[str], answers: Sequence[Any]) -> list[Any]:
        """Score ``responses[i]`` against ``answers[i]`` for all i, in parallel; shape [B] -> [B].

        Blocks until every call has a score; each call takes at most ``timeout`` seconds of a
        worker (plus queueing). Safe to call from any thread; concurrent calls run one after
        the other.
        """
        if len(responses) != len(answers):
            raise ValueError(
                f"answers: expected one per response ({len(responses)}), got {len(answers)}"
            )
        with self._lock:
            if self._closed:
                raise RuntimeError("RewardPool: score_batch called after close()")
            self._call_id += 1
            results = [self.default] * len(responses)
            self._first_error = None
            try:
                self._run(self._call_id, list(responses), list(answers), results)
            finally:
                # Interrupted mid-batch: workers still busy would answer the old call later.
                for i, w in enumerate(self._workers):
                    if w.index is not None:
                        self._replace(i)
            self.stats.calls += len(responses)
            if self.raise_errors and self._first_error is not None:
                raise RewardFunctionError(self._first_error)
            return results

    def submit_batch(self, responses: Sequence[str], answers: Sequence[Any]) -> Future[list[Any]]:
        """Start :meth:`score_batch` in a background thread; returns a future of the scores."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reward-pool")
        return self._executor.submit(self.score_batch, list(responses), list(answers))

    def close(self) -> None:
        """Stop the workers (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        with self._lock:
            for w in self._workers:  # ask started workers to exit; a starting one is killed
                if w.ready:
                    with contextlib.suppress(Exception):
                        w.conn.send(None)
            for w in self._workers:
                if w.ready:
                    w.process.join(timeout=2)
                w.kill()

    def __enter__(self) -> RewardPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- scheduling ------------------------------------------------------------------------

    def _replace(self, i: int) -> None:
        self._workers[i].kill()
        self._workers[i] = _Worker(self._ctx, self.fn, self.warm_up)
        self.stats.restarts += 1

    def _run(
        self, call_id: int, responses: list[str], answers: list[Any], out: list[Any]
    ) -> None:
        pending = deque(range(len(responses)))
        busy = 0
        while pending or busy:
            for i, w in enumerate(self._workers):  # hand work to idle, started workers
                if pending and w.ready and w.index is None:
                    k = pending.popleft()
                    try:
                        w.conn.send((call_id, k, responses[k], answers[k]))
                    except OSError:  # it died while idle (killed from outside): replace it
                        pending.appendleft(k)
                        self._replace(i)
                        continue
                    w.index, w.deadline = k, time.monotonic() + self.timeout
                    busy += 1
            now = time.monotonic()
            waits = [w.deadline - now for w in self._workers if w.index is not None]
            waits += [w.started + self.startup_timeout - now for w in self._workers if not w.ready]
            conns = [w.conn for w in self._workers if w.index is not None or not w.ready]
            ready = wait(conns, timeout=max(0.0, min(waits))) if conns else []
            for i, w in enumerate(self._workers):
                if w.conn not in ready:
                    continue
                try:
                    msg = w.conn.recv()
                except (EOFError, OSError):
                    busy -= self._worker_died(i)
                    continue
                if msg[0] == "ready":
                    w.ready = True
                elif msg[1] == call_id and msg[2] == w.index:
                    _, _, k, value, error = msg
                    if error is None:
                        out[k] = value
                    else:
                        self.stats.errors += 1
                        self._first_error = self._first_error or error
                    w.index = None
                    busy -= 1
            busy -= self._expire(time.monotonic())

    def _worker_died(self, i: int) -> int:
        """Handle a worker whose pipe closed; returns 1 if it was busy (its call scores 0)."""
        w = self._workers[i]
        if not w.ready:
            w.process.join(timeout=1)
            code = w.process.exitcode
            w.kill()
            raise RuntimeError(
                f"RewardPool: a worker exited during start-up (exit code {code}); "
                "its error is printed above. Is the scoring function importable, and does the "
                "main script guard its code with `if __name__ == '__main__':`?"
            )
        was_busy = w.index is not None
        self.stats.errors += int(was_busy)
        w.index = None
        self._replace(i)
        return int(was_busy)

    def _expire(self, now: float) -> int:
        """Kill workers past their deadline; returns how many busy calls ended (scored 0)."""
        ended = 0
        for i, w in enumerate(self._workers):
            if w.index is not None and now >= w.deadline:
                self.stats.timeouts += 1
                w.index = None
                self._replace(i)
                ended += 1
            elif not w.ready and now >= w.started + self.startup_timeout:
                raise RuntimeError(
                    f"RewardPool: a worker did not start within {self.startup_timeout:.0f} s"
                )
        return ended


class MathScorer(RewardPool):
    r"""The paper's math reward (:func:`~entropyrl.rewards.math.score_response`) in a pool.

    Example:
        >>> with MathScorer(workers=4, timeout=5.0) as scorer:  # doctest: +SKIP
        ...     scorer.score_batch(["so $\\boxed{3/4}$"], ["\\frac{3}{4}"])
        [1.0]
    """

    def __init__(
        self,
        workers: int | None = None,
        timeout: float = 5.0,
        *,
        start_method: str = "spawn",
        startup_timeout: float = 120.0,
    ):
        super().__init__(
            score_response,
            workers,
            timeout,
            start_method=start_method,
            startup_timeout=startup_timeout,
            warm_up=(r"so $\boxed{\frac{1}{2}}$", "0.5"),
        )
