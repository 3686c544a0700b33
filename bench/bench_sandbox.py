"""Cost of the code sandbox: per-program overhead and throughput of run_many.

Overhead, measured interleaved (one of each per round, so that load on the machine hits all
alike), for a trivial program with one stdin test:

* ``plain``: ``python -I -S -c ...`` as a bare subprocess (the floor: interpreter start);
* ``unsafe``: ``run_tests(..., unsafe_rlimits_only=True)``: the driver with limits, no sandbox;
* ``sandbox``: ``run_tests(...)``: the driver in bubblewrap (namespaces, mounts, limits).

Then the cost of each further test (a fork inside the running sandbox), and throughput:
``run_many`` over ``--programs`` programs of 3 tests each, with 1 and 2 workers.

    .venv/bin/python bench/bench_sandbox.py [--rounds 30] [--programs 40]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import subprocess
import sys
import time

from entropyrl.rewards.code import run_many, run_tests
from entropyrl.rewards.code.sandbox import interpreter

PROGRAM = "print(int(input()) * 2)\n"
ONE = [{"input": "21", "output": "42"}]


def _plain() -> None:
    subprocess.run([interpreter()[0], "-I", "-S", "-c", "print(int(input()) * 2)"],
                   input=b"21", capture_output=True, check=True)


def _unsafe() -> None:
    assert run_tests(PROGRAM, ONE, unsafe_rlimits_only=True).status == "ok"


def _sandbox() -> None:
    assert run_tests(PROGRAM, ONE).status == "ok"


def _summary(xs: list[float]) -> str:
    q = statistics.quantiles(xs, n=10)
    med, lo, hi = 1e3 * statistics.median(xs), 1e3 * q[0], 1e3 * q[-1]
    return f"median {med:6.1f} ms   p10–p90 {lo:5.1f}–{hi:5.1f} ms"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--programs", type=int, default=40)
    args = ap.parse_args()
    logging.getLogger("entropyrl.rewards.code.runner").setLevel(logging.ERROR)  # unsafe warnings

    variants = {"plain": _plain, "unsafe": _unsafe, "sandbox": _sandbox}
    for fn in variants.values():  # warm up (probe, page cache)
        fn()
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.rounds):
        for name, fn in variants.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    print(f"per-program overhead, trivial program + 1 test, {args.rounds} interleaved rounds")
    for name, xs in times.items():
        print(f"  {name:8s} {_summary(xs)}")
    extra = statistics.median(times["sandbox"]) - statistics.median(times["plain"])
    print(f"  sandbox - plain: {1e3 * extra:.1f} ms per program")

    many = [{"input": str(i), "output": str(2 * i)} for i in range(20)]
    one_t, many_t = [], []
    for _ in range(max(5, args.rounds // 3)):
        t = time.perf_counter()
        run_tests(PROGRAM, ONE)
        one_t.append(time.perf_counter() - t)
        t = time.perf_counter()
        assert run_tests(PROGRAM, many).status == "ok"
        many_t.append(time.perf_counter() - t)
    per_test = (statistics.median(many_t) - statistics.median(one_t)) / (len(many) - 1)
    print(f"each further test in the same sandbox: {1e3 * per_test:.1f} ms")

    programs = [PROGRAM] * args.programs
    tests = [[{"input": str(j), "output": str(2 * j)} for j in range(3)]] * args.programs
    for workers in (1, 2):
        t = time.perf_counter()
        results = run_many(programs, tests, workers=workers)
        dt = time.perf_counter() - t
        assert all(r.status == "ok" for r in results)
        print(f"run_many, {args.programs} programs x 3 tests, workers={workers}: "
              f"{args.programs / dt:5.1f} programs/s ({dt:.2f} s)")
    print(f"(python {sys.version.split()[0]}; machine load at the end: "
          f"{open('/proc/loadavg').read().split()[0]})")


if __name__ == "__main__":
    main()
