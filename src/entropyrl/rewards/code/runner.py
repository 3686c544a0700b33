"""Run a program against its tests in the sandbox and score it: :func:`run_tests`, :func:`run_many`.

One sandbox per program: the driver inside compiles the program once and runs each test in a
forked child (a fork costs about a millisecond, a sandbox tens), so the sandbox start is paid
once per program, not per test. The host waits on the pipes with a wall-clock deadline, reads at
most a bounded number of bytes, and kills the sandbox's whole process group when done.
"""

from __future__ import annotations

import ast
import json
import logging
import marshal
import os
import selectors
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

from entropyrl.rewards.code import sandbox as sb

logger = logging.getLogger(__name__)

Status = Literal["ok", "wrong", "timeout", "memory", "crash", "syntax", "sandbox_error"]
STATUSES: tuple[Status, ...] = (
    "ok", "wrong", "timeout", "memory", "crash", "syntax", "sandbox_error"
)
EXIT_MEMORY = 86  # the driver's exit code for a test that raised MemoryError (see _harness.py)
STARTUP_GRACE_S = 10.0  # host deadline = this + per test (timeout_s + TEST_SLACK_S)
TEST_SLACK_S = 0.5
MAX_FILES = 64
NOT_RUN = "not run"  # the detail of the tests after the one during which a sandbox ended


@dataclass(frozen=True)
class TestOutcome:
    """How one test went."""

    status: Status
    """``ok``, ``wrong``, ``timeout``, ``memory`` or ``crash`` (see docs/rewards.md)."""
    time_s: float
    """Wall-clock seconds of the test's process (0.0 when it did not run)."""
    detail: str = ""
    """One line for logs: the mismatch, the exception, the signal or the limit hit."""


@dataclass(frozen=True)
class CodeResult:
    """The verdict on a program: how many tests passed and why the first failure failed."""

    passed: int
    """Tests whose output matched."""
    total: int
    """Tests given."""
    status: Status
    """``ok`` when all passed; else ``syntax``, ``sandbox_error`` or the first failing test's."""
    tests: tuple[TestOutcome, ...] = field(default=(), repr=False)
    """Per-test outcomes, in order (empty for ``syntax`` and ``sandbox_error``)."""
    detail: str = ""
    """The first failure, e.g. ``test 2: expected '9', got '8'``; empty when all passed."""

    @property
    def fraction(self) -> float:
        """``passed / total``: a partial-credit reward."""
        return self.passed / self.total if self.total else 0.0


# -- launching ----------------------------------------------------------------------------------

_slot_lock = threading.Lock()
_slots_used: set[int] = set()


def _take_slot() -> int:
    with _slot_lock:
        slot = next(i for i in range(len(_slots_used) + 1) if i not in _slots_used)
        _slots_used.add(slot)
        return slot


def _user_process_count() -> int:
    """Processes (threads included, as RLIMIT_NPROC counts them) of this uid on the host."""
    uid, n = os.getuid(), 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    n += len(os.listdir(f"/proc/{entry.name}/task"))
            except OSError:
                continue
    return n


def launch(
    program: str,
    tests: list[dict[str, str]],
    box: sb.Sandbox | None,
    *,
    timeout_s: float,
    memory_mb: int,
    output_limit: int,
    max_processes: int,
    tmp_mb: int = 64,
) -> tuple[list[dict[str, Any]], bool, str, int]:
    """Start the driver (in ``box``, or bare when None) and collect its report.

    Returns:
        (report lines, whether the host deadline or read cap killed it, stderr tail, exit code)
    """
    spec: dict[str, Any] = {
        "program": program,
        "tests": tests,
        "timeout_s": timeout_s,
        "memory_bytes": memory_mb << 20,
        "output_limit": output_limit,
        "max_files": MAX_FILES,
        "max_processes": max_processes,
        "kill_all": box is not None,
        "uid": None,
        "workdir": sb.SANDBOX_TMP,
    }
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    slot, workdir = None, None
    if box is not None:
        argv = sb.bwrap_argv(box, sb.interpreter()[1], tmp_mb << 20)
        if box.as_root:
            slot = _take_slot()
            spec["uid"] = sb.sandbox_uid(slot)
    else:
        workdir = tempfile.mkdtemp(prefix="entropyrl-code-")
        spec["workdir"] = workdir
        argv = [sb.interpreter()[0], "-I", "-S", str(sb.HARNESS)]
        # Without a user namespace RLIMIT_NPROC counts all of this user's processes (and root
        # ignores it): allow those already running, plus the budget.
        spec["max_processes"] = 0 if os.geteuid() == 0 else _user_process_count() + max_processes
    cap = len(tests) * (6 * output_limit + 16384) + 65536  # JSON may escape a byte as \u00XX
    deadline = time.monotonic() + STARTUP_GRACE_S + len(tests) * (timeout_s + TEST_SLACK_S)
    try:
        proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True, env=env, cwd=workdir or "/",
        )
        try:
            out, err, killed = _communicate(proc, marshal.dumps(spec), deadline, cap)
        finally:
            # Whatever is left in the group dies; the sandbox's PID namespace goes with its init.
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
            proc.wait()
    finally:
        if slot is not None:
            with _slot_lock:
                _slots_used.discard(slot)
        if workdir is not None:
            _remove_tree(workdir)
    lines = []
    for raw in out.splitlines():
        try:
            lines.append(json.loads(raw))
        except ValueError:
            break  # cut by the read cap
    return lines, killed, err.decode("utf-8", "replace")[-2000:], proc.returncode


def _remove_tree(path: str) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def _communicate(
    proc: subprocess.Popen[bytes], data: bytes, deadline: float, cap: int
) -> tuple[bytes, bytes, bool]:
    """Feed ``data`` to stdin and read stdout (at most ``cap`` bytes) and stderr (its tail).

    Unlike ``Popen.communicate`` this never buffers more than ``cap`` bytes, and it gives up
    at ``deadline``; the caller kills the process group. Returns (stdout, stderr, gave up).
    """
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    out, err = bytearray(), bytearray()
    pos = 0
    view = memoryview(data)
    os.set_blocking(proc.stdin.fileno(), False)
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdin, selectors.EVENT_WRITE)
        sel.register(proc.stdout, selectors.EVENT_READ)
        sel.register(proc.stderr, selectors.EVENT_READ)
        while sel.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                return bytes(out), bytes(err), True
            for key, _ in sel.select(left):
                stream = key.fileobj
                if stream is proc.stdin:
                    try:
                        pos += os.write(proc.stdin.fileno(), view[pos : pos + 65536])
                    except BrokenPipeError:
                        pos = len(data)
                    if pos >= len(data):
                        sel.unregister(stream)
                        proc.stdin.close()
                    continue
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    sel.unregister(stream)
                elif stream is proc.stdout:
                    out += chunk
                    if len(out) > cap:
                        return bytes(out[:cap]), bytes(err), True
                else:
                    err = (err + chunk)[-65536:]
    return bytes(out), bytes(err), False


# -- scoring ------------------------------------------------------------------------------------


def normalize_output(text: str) -> list[str]:
    """Lines of ``text`` with trailing whitespace removed from each line and from the end."""
    return [line.rstrip() for line in text.rstrip().split("\n")]


def same_value(got: str, expected: str) -> bool:
    """Whether a call's ``repr`` matches the expected text (see docs/rewards.md).

    Equal as stripped strings, or both parse as Python literals (``ast.literal_eval``) to
    equal values of the same type: ``[1,2]`` matches ``[1, 2]``, ``1`` does not match ``True``.
    """
    if got.strip() == expected.strip():
        return True
    try:
        a, b = ast.literal_eval(got.strip()), ast.literal_eval(expected.strip())
    except Exception:  # not literals, or too deep/large to parse
        return False
    return type(a) is type(b) and bool(a == b)


def _short(text: str, n: int = 60) -> str:
    return repr(text if len(text) <= n else text[:n] + "…")


def _outcome(line: Mapping[str, Any], test: Mapping[str, str], output_limit: int) -> TestOutcome:
    """The status of one test from the driver's report line."""
    t = float(line.get("time", 0.0))
    sig = line.get("signal")
    if line.get("timeout") or sig == signal.SIGXCPU:
        return TestOutcome("timeout", t, "time limit")
    if line.get("exit") == EXIT_MEMORY:
        return TestOutcome("memory", t, "MemoryError (memory limit)")
    if line.get("over"):
        return TestOutcome("crash", t, f"output over the {output_limit}-byte limit")
    if sig is not None:
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else sig
        return TestOutcome("crash", t, f"killed by {name}")
    if line.get("exit") != 0:
        last = (line.get("err") or "").strip().splitlines()
        return TestOutcome("crash", t, f"exit code {line.get('exit')}: {last[-1] if last else ''}")
    expected = test["output"]
    if "call" in test:
        got = line.get("ret") or ""
        if same_value(got, expected):
            return TestOutcome("ok", t)
        return TestOutcome("wrong", t, f"expected {_short(expected)}, got {_short(got)}")
    got = line.get("out") or ""
    if normalize_output(got) == normalize_output(expected):
        return TestOutcome("ok", t)
    return TestOutcome("wrong", t, f"expected {_short(expected)}, got {_short(got)}")


def _check_tests(tests: Sequence[Mapping[str, str]]) -> list[dict[str, str]]:
    """What the driver needs of each test (no expected output); raises ValueError if malformed."""
    if not tests:
        raise ValueError("tests: expected at least one test, got none")
    sent = []
    for i, test in enumerate(tests):
        if not isinstance(test, Mapping) or not isinstance(test.get("output"), str):
            raise ValueError(f"tests[{i}]: expected a mapping with a string 'output', got {test!r}")
        if "call" in test:
            if not isinstance(test["call"], str) or not test["call"].strip():
                raise ValueError(f"tests[{i}]: 'call' must be a non-empty expression string")
            sent.append({"call": test["call"]})
        elif isinstance(test.get("input", ""), str):
            sent.append({"input": test.get("input", "")})
        else:
            raise ValueError(f"tests[{i}]: 'input' must be a string (the program's stdin)")
    return sent


def run_tests(
    program: str,
    tests: Sequence[Mapping[str, str]],
    *,
    timeout_s: float = 2.0,
    memory_mb: int = 512,
    output_limit_bytes: int = 1 << 20,
    max_processes: int = 32,
    unsafe_rlimits_only: bool = False,
) -> CodeResult:
    """Run ``program`` (Python source) against ``tests`` in a sandbox and count the passes.

    Args:
        program: Python source of the whole program.
        tests: ``{"input": stdin, "output": expected stdout}`` (compared with trailing
            whitespace stripped per line and at the end) or ``{"call": "f(3)", "output": "9"}``
            (the program runs, then the call's ``repr`` is compared: see :func:`same_value`).
        timeout_s: wall-clock limit per test (CPU time is capped at ``int(timeout_s) + 1``).
        memory_mb: address-space limit (``RLIMIT_AS``) per test process.
        output_limit_bytes: the most a test may write to stdout (or one file); more is a crash.
        max_processes: processes and threads the program may have at once (``RLIMIT_NPROC``).
        unsafe_rlimits_only: without a sandbox, run with resource limits and a process group
            only (no isolation: the program can read and write your files, use the network).
            Logs a warning on every call.

    Raises:
        SandboxUnavailableError: no working bubblewrap and ``unsafe_rlimits_only`` is False.
        ValueError: malformed tests or limits.
    """
    if not isinstance(program, str):
        raise ValueError(f"program: expected Python source text, got {type(program).__name__}")
    for name, value in (("timeout_s", timeout_s), ("memory_mb", memory_mb),
                        ("output_limit_bytes", output_limit_bytes),
                        ("max_processes", max_processes)):
        if not value > 0:
            raise ValueError(f"{name}: expected a positive number, got {value!r}")
    sent = _check_tests(tests)
    box: sb.Sandbox | None
    if unsafe_rlimits_only:
        logger.warning(
            "running an untrusted program WITHOUT a sandbox (unsafe_rlimits_only=True): resource "
            "limits only, it can read and write your files and use the network. %s.",
            sb.INSTALL_HINT,
        )
        box = None
    else:
        box = sb.get_sandbox()
    try:
        lines, killed, stderr, code = launch(
            program, sent, box, timeout_s=float(timeout_s), memory_mb=int(memory_mb),
            output_limit=int(output_limit_bytes), max_processes=int(max_processes),
        )
    except OSError as e:
        return CodeResult(0, len(sent), "sandbox_error", detail=f"cannot start: {e}")
    return _score(lines, killed, stderr, code, tests, int(output_limit_bytes))


def _score(
    lines: list[dict[str, Any]], killed: bool, stderr: str, code: int,
    tests: Sequence[Mapping[str, str]], output_limit: int,
) -> CodeResult:
    n = len(tests)
    if lines and "syntax" in lines[0]:
        return CodeResult(0, n, "syntax", detail=str(lines[0]["syntax"]))
    if not lines or lines[0] != {"ready": True}:
        why = "host deadline" if killed else (stderr.strip().splitlines() or ["no output"])[-1]
        return CodeResult(0, n, "sandbox_error", detail=f"the driver did not start ({why}, "
                          f"exit code {code})")
    outcomes = [_outcome(line, tests[i], output_limit) for i, line in enumerate(lines[1 : n + 1])]
    if len(outcomes) < n:  # the sandbox ended (or was stopped) in the middle of a test
        k = len(outcomes)
        first = TestOutcome("timeout", 0.0, "host deadline") if killed else TestOutcome(
            "crash", 0.0, "the sandbox ended during this test (its driver was killed)")
        outcomes.append(first)
        outcomes += [TestOutcome(first.status, 0.0, NOT_RUN)] * (n - k - 1)
    passed = sum(o.status == "ok" for o in outcomes)
    for i, o in enumerate(outcomes):
        if o.status != "ok":
            return CodeResult(passed, n, o.status, tuple(outcomes), f"test {i}: {o.detail}")
    return CodeResult(passed, n, "ok", tuple(outcomes))


def run_many(
    programs: Sequence[str],
    tests: Sequence[Sequence[Mapping[str, str]]],
    *,
    workers: int = 2,
    **limits: Any,
) -> list[CodeResult]:
    """:func:`run_tests` for ``programs[i]`` against ``tests[i]``, ``workers`` at a time.

    Threads suffice: each program runs in its own sandboxed process, the threads only wait.
    ``limits`` are :func:`run_tests`' keyword arguments. Results are in input order.
    """
    if len(programs) != len(tests):
        raise ValueError(f"tests: expected one list per program ({len(programs)}), "
                         f"got {len(tests)}")
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers: expected an integer >= 1, got {workers!r}")
    if not limits.get("unsafe_rlimits_only"):
        sb.get_sandbox()  # fail once, before any work, when there is no sandbox
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="code-sandbox") as pool:
        pairs = zip(programs, tests, strict=True)
        return list(pool.map(lambda pt: run_tests(pt[0], pt[1], **limits), pairs))
