"""The test driver that runs *inside* the sandbox (a script: standard library only).

Started as ``python -I -S _harness.py``; reads one spec on stdin (a ``marshal``-ed dict from
the host: the program, the tests' stdin texts or calls, the limits), compiles the program once,
then runs each test in a forked child under its own resource limits and reports one JSON line
per test on stdout. Expected outputs never enter the sandbox: the host compares.

Protocol (one JSON object per line on stdout):

* ``{"syntax": message}``: the program does not compile; nothing else follows.
* ``{"ready": true}``: compiled; one line per test follows, in order:
  ``{"i", "exit", "signal", "timeout", "out", "over", "err", "ret", "time"}``.

The driver is trusted code running next to untrusted code, so:

* it is not dumpable (``PR_SET_DUMPABLE`` 0): a test cannot ptrace it or read its memory or
  file descriptors through ``/proc``;
* a test child closes every descriptor but its own stdin/stdout/stderr before the program runs;
* after each test every other process it may signal is killed: ``kill(-1, SIGKILL)`` inside the
  sandbox's PID namespace, or the child's process group in the unsafe mode (no namespace).
"""

import builtins
import marshal
import os
import resource
import select
import signal
import sys
import time
import types

# Only the C string encoder of ``json``: importing the package pulls in ``re`` (~8 ms per
# sandbox); the report holds only str, int, float, bool and None.
from _json import encode_basestring_ascii as _quote

EXIT_MEMORY = 86  # a test child that raised MemoryError exits with this code


def _json(value):
    if isinstance(value, str):
        return _quote(value)
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    return repr(value)  # int or float


def _emit(obj):
    line = ", ".join(f"{_quote(k)}: {_json(v)}" for k, v in obj.items())
    os.write(1, ("{" + line + "}\n").encode())


def _not_dumpable():
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 4
    except Exception:
        pass


def _limit(which, value):
    resource.setrlimit(which, (value, value))


def _child(code, test, spec, paths):
    """Run one test in this (forked) process; never returns."""
    status = 1
    try:
        if not spec["kill_all"]:
            os.setpgid(0, 0)  # its own group, so that the driver can kill what it leaves
        fds = [
            os.open(paths["in"], os.O_RDONLY),
            os.open(paths["out"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600),
            os.open(paths["err"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600),
        ]
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        os.closerange(3, 1 << 16)
        cpu = int(spec["timeout_s"]) + 1
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        _limit(resource.RLIMIT_FSIZE, spec["output_limit"] + 1)
        _limit(resource.RLIMIT_NOFILE, spec["max_files"])
        _limit(resource.RLIMIT_CORE, 0)
        if spec["memory_bytes"]:
            _limit(resource.RLIMIT_AS, spec["memory_bytes"])
        sys.stdin = open(0, encoding="utf-8", errors="replace", closefd=False)
        sys.stdout = open(1, "w", encoding="utf-8", errors="replace", closefd=False)
        sys.stderr = open(2, "w", encoding="utf-8", errors="replace", closefd=False)
        sys.argv = ["solution.py"]
        main = types.ModuleType("__main__")
        main.__dict__["__builtins__"] = builtins
        main.__dict__["__file__"] = "solution.py"
        sys.modules["__main__"] = main
        try:
            exec(code, main.__dict__)
            if "call" in test:
                value = eval(compile(test["call"], "<call>", "eval"), main.__dict__)
                with open(paths["ret"], "w", encoding="utf-8") as f:
                    f.write(repr(value))
            if "threading" in sys.modules:  # wait for non-daemon threads, as the interpreter does
                sys.modules["threading"]._shutdown()
            status = 0
        except SystemExit as e:
            if e.code is None or isinstance(e.code, int):
                status = e.code or 0
            else:
                print(e.code, file=sys.stderr)
                status = 1
        except MemoryError:
            status = EXIT_MEMORY
        except BaseException as e:
            import traceback

            # From the program's frames on: the driver's own frame would only confuse a reader.
            tb = e.__traceback__
            traceback.print_exception(type(e), e, tb.tb_next if tb is not None else None)
            status = 1
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except MemoryError:
                status = EXIT_MEMORY
            except BaseException:
                status = status or 1
    except MemoryError:
        status = EXIT_MEMORY
    except BaseException:
        status = 1
    os._exit(status & 0xFF)


def _wait(pid, timeout_s):
    """Wait for ``pid`` at most ``timeout_s`` seconds; return (wait status or None, seconds)."""
    start = time.monotonic()
    deadline = start + timeout_s
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pidfd = None
    wstatus = None
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            wstatus = status
            break
        left = deadline - time.monotonic()
        if left <= 0:
            break
        if pidfd is not None:
            select.select([pidfd], [], [], left)
        else:
            time.sleep(min(left, 0.005))
    if pidfd is not None:
        os.close(pidfd)
    return wstatus, time.monotonic() - start


def _await_others_gone(limit_s=2.0):
    """After ``kill(-1)``: wait until the namespace holds only init, our parent and us.

    ``SIGKILL`` lands asynchronously and a killed orphan stays in ``/proc`` until init reaps
    it, so without this wait the next test could still see the last test's processes.
    """
    keep = {1, os.getpid(), os.getppid()}
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            pass
        left = [n for n in os.listdir("/proc") if n.isdigit() and int(n) not in keep]
        if not left:
            return
        time.sleep(0.002)


def _clean_up(pid, kill_all):
    """Kill what a test left running, then reap the test child."""
    try:
        if kill_all:
            os.kill(-1, signal.SIGKILL)  # everyone in this PID namespace but init and us
        else:
            os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass
    if kill_all:
        _await_others_gone()


def _read(path, limit):
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError:
        return "", False
    return data[:limit].decode("utf-8", errors="replace"), len(data) > limit


def _run_one(i, code, test, spec):
    work = spec["workdir"]
    paths = {k: os.path.join(work, ".t" + k) for k in ("in", "out", "err", "ret")}
    for path in paths.values():
        try:
            os.unlink(path)
        except OSError:
            pass
    with open(paths["in"], "w", encoding="utf-8") as f:
        f.write(test.get("input", ""))
    pid = os.fork()
    if pid == 0:
        _child(code, test, spec, paths)
    wstatus, elapsed = _wait(pid, spec["timeout_s"])
    exit_code: int | None
    sig: int | None
    if wstatus is None:  # past the wall-clock limit
        _clean_up(pid, spec["kill_all"])
        exit_code, sig = None, int(signal.SIGKILL)
    else:
        # The test's own process ended; whatever it started must not outlive it.
        try:
            if spec["kill_all"]:
                os.kill(-1, signal.SIGKILL)
            else:
                os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass
        if spec["kill_all"]:
            _await_others_gone()
        exit_code = os.waitstatus_to_exitcode(wstatus)
        sig = -exit_code if exit_code < 0 else None
        exit_code = None if exit_code < 0 else exit_code
    out, over = _read(paths["out"], spec["output_limit"])
    err, _ = _read(paths["err"], 4096)
    ret = None
    if "call" in test and exit_code == 0:
        ret, over_ret = _read(paths["ret"], spec["output_limit"])
        over = over or over_ret
    return {
        "i": i,
        "exit": exit_code,
        "signal": sig,
        "timeout": wstatus is None,
        "out": out,
        "over": over,
        "err": err[-1000:],
        "ret": ret,
        "time": round(elapsed, 4),
    }


def main():
    spec = marshal.loads(sys.stdin.buffer.read())
    sys.stdin.close()
    fd = os.open(os.devnull, os.O_RDONLY)
    os.dup2(fd, 0)
    os.close(fd)
    if spec.get("uid") is not None:  # root on the host: run the tests as an unprivileged uid
        os.setgroups([])
        os.setgid(spec["uid"])
        os.setuid(spec["uid"])
    _not_dumpable()
    if spec["max_processes"]:
        _limit(resource.RLIMIT_NPROC, spec["max_processes"])
    os.chdir(spec["workdir"])
    try:
        code = compile(spec["program"], "solution.py", "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as e:
        import traceback

        _emit({"syntax": "".join(traceback.format_exception_only(type(e), e)).strip()[-1000:]})
        return
    except (MemoryError, RecursionError) as e:  # absurdly nested source
        _emit({"syntax": f"{type(e).__name__} while compiling"})
        return
    _emit({"ready": True})
    for i, test in enumerate(spec["tests"]):
        _emit(_run_one(i, code, test, spec))


if __name__ == "__main__":
    main()
