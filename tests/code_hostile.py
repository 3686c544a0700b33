"""The hostile corpus for the code sandbox: programs that try to escape, exhaust or kill.

Each case is ``(id, program, expected statuses, note)``; the program runs against one stdin test
whose expected output is ``"contained"``, so a program that prints ``contained`` is one whose
every escape attempt failed (status ``ok``). Programs that attack the host itself (the host's
files, a listener, a process) take ``{placeholders}`` filled by tests/test_code_sandbox.py.
Every program carries ``MARK`` in the argv of anything it starts, so that the test can look for
survivors in the host's ``/proc``.

Used by tests/test_code_sandbox.py; the table in docs/rewards.md lists the same cases.
"""

from __future__ import annotations

MARK = "entropyrl-hostile-7f3a"

CASES: list[tuple[str, str, frozenset[str], str]] = [
    ("fork-bomb", """
import os
while True:
    os.fork()
""", frozenset({"crash", "timeout"}), "RLIMIT_NPROC stops it; fork raises, every copy dies"),
    ("fork-bomb-persistent", """
import os
while True:
    try:
        os.fork()
    except OSError:
        pass
""", frozenset({"timeout"}), "at most max_processes copies spin until the wall clock"),
    ("fork-limit", """
import os, time
n = 0
for _ in range(200):  # bounded, so that a missing limit cannot hurt the host
    try:
        if os.fork() == 0:
            time.sleep(30)
            os._exit(0)
        n += 1
    except OSError:
        break
print("contained" if n < 32 else f"forked {n}")
""", frozenset({"ok"}), "RLIMIT_NPROC (32) counts the sandbox's processes only"),
    ("memory-bomb", """
blocks = []
while True:
    blocks.append(bytearray(10**7))
""", frozenset({"memory"}), "RLIMIT_AS: MemoryError"),
    ("memory-one-block", "x = bytearray(10**11)\n", frozenset({"memory"}), "RLIMIT_AS"),
    ("infinite-loop", "while True:\n    pass\n", frozenset({"timeout"}), "wall clock"),
    ("sleep-forever", "import time\ntime.sleep(10**6)\n", frozenset({"timeout"}),
     "wall clock (no CPU used, so RLIMIT_CPU alone would not catch it)"),
    ("ignore-sigterm", """
import signal
for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(s, signal.SIG_IGN)
while True:
    pass
""", frozenset({"timeout"}), "killed with SIGKILL"),
    ("busy-children-left", f"""
import os, subprocess, sys
subprocess.Popen([sys.executable, "-c", "while True: pass", "{MARK}"])
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execv(sys.executable, [sys.executable, "-c", "while True: pass", "{MARK}"])
    os._exit(0)
print("contained")
""", frozenset({"ok"}), "the driver kills every process after the test"),
    ("threads-ok", """
import threading
out = [0] * 8
def work(i):
    out[i] = sum(range(i * 1000))
ts = [threading.Thread(target=work, args=(i,)) for i in range(8)]
for t in ts: t.start()
for t in ts: t.join()
print("contained" if out[7] == sum(range(7000)) else "bad")
""", frozenset({"ok"}), "threads work"),
    ("threads-spin-forever", """
import threading
def spin():
    while True:
        pass
for _ in range(4):
    threading.Thread(target=spin).start()
print("contained")
""", frozenset({"timeout"}), "non-daemon threads keep the program alive, as in CPython"),
    ("thread-bomb", """
import threading, time
while True:
    threading.Thread(target=time.sleep, args=(100,), daemon=True).start()
""", frozenset({"crash"}), "RLIMIT_NPROC counts threads: can't start new thread"),
    ("deep-recursion", """
import sys
sys.setrecursionlimit(10**7)
def f(n):
    return list(map(f, [n + 1]))  # through C code, so each level takes C stack
f(0)
""", frozenset({"crash"}), "C stack overflow: SIGSEGV"),
    ("deep-recursion-python", """
import sys
sys.setrecursionlimit(10**7)
def f(n):
    return f(n + 1) + 1
f(0)
""", frozenset({"memory", "timeout"}),
     "Python 3.11+ keeps Python frames off the C stack: memory or time runs out first"),
    ("ctypes-segfault", "import ctypes\nctypes.string_at(0)\n", frozenset({"crash"}), "SIGSEGV"),
    ("kill-parent", "import os\nos.kill(os.getppid(), 9)\nprint('contained')\n",
     frozenset({"crash"}), "kills the driver: the sandbox ends, the host is untouched"),
    ("kill-everyone", "import os\nos.kill(-1, 9)\n", frozenset({"crash"}),
     "kill(-1) reaches only the sandbox's PID namespace"),
    ("huge-output", "while True:\n    print('x' * 10000)\n", frozenset({"crash"}),
     "RLIMIT_FSIZE on stdout's file: the host reads at most output_limit bytes"),
    ("fill-tmp", """
i = 0
while True:
    with open(f"/tmp/fill{i}", "wb") as f:
        f.write(b"x" * (1 << 20))
    i += 1
""", frozenset({"crash"}), "the tmpfs is size-capped: ENOSPC"),
    ("syntax-error", "def f(:\n    pass\n", frozenset({"syntax"}), "compiled once, never run"),
    ("exit-nonzero", "print('contained')\nraise SystemExit(3)\n", frozenset({"crash"}),
     "a non-zero exit fails the test even with the right output"),
    ("read-host-files", """
import os
seen = []
for path in ["{secret}", "/etc/shadow", "/etc/passwd", "{home}", "{project}/pyproject.toml",
             "/root", "/home"]:
    try:
        if os.path.isdir(path):  # only what leads to the interpreter may be there
            extra = [e for e in os.listdir(path) if e not in "{prefix}".split("/")]
            seen.append((path, extra))
        else:
            seen.append((path, open(path).read()[:50]))
    except OSError:
        pass
print("contained" if not [s for s in seen if s[1]] else seen)
""", frozenset({"ok"}), "not mounted (an empty /root may exist, holding the interpreter)"),
    ("write-host-files", """
import os
hits = []
for path in ["{outside}", "/usr/{mark}", "{prefix}/{mark}", "{project}/{mark}"]:
    try:
        with open(path, "w") as f:
            f.write("pwned")
        hits.append(path)
    except OSError:
        pass
print("contained" if not hits else hits)
""", frozenset({"ok"}), "read-only binds; host paths absent"),
    ("delete-host-files", """
import os, shutil
hits = []
for path in ["{secret}", "{keep_dir}"]:
    try:
        if os.path.isdir(path):
            shutil.rmtree(path)
        else:
            os.remove(path)
        hits.append(path)
    except OSError:
        pass
print("contained" if not hits else hits)
""", frozenset({"ok"}), "host paths absent"),
    ("network-host-listener", """
import socket
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=1).close()
    print("connected")
except OSError:
    print("contained")
""", frozenset({"ok"}), "own network namespace: the host's loopback is another device"),
    ("network-internet", """
import socket
try:
    socket.create_connection(("1.1.1.1", 53), timeout=1).close()
    print("connected")
except OSError:
    print("contained")
""", frozenset({"ok"}), "no route out"),
    ("kill-host-process", """
import os
try:
    os.kill({victim}, 9)
    print("killed")
except OSError:
    print("contained")
""", frozenset({"ok"}), "host PIDs do not exist in the sandbox's PID namespace"),
]
