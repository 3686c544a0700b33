"""Code rewards: run untrusted Python programs against tests, isolated by the kernel.

* :func:`run_tests`: one program against its stdin/stdout or function-call tests, in a
  bubblewrap sandbox (new PID, network, mount, user namespaces; resource limits; wall clock).
* :func:`run_many`: many programs, several sandboxes at a time.
* :func:`get_sandbox`: find and probe bubblewrap once (raises :class:`SandboxUnavailableError`
  naming the install command when there is none that works).

docs/rewards.md ("Code execution") documents the statuses, limits and isolation layers.
"""

from entropyrl.rewards.code.runner import (
    STATUSES,
    CodeResult,
    Status,
    TestOutcome,
    normalize_output,
    run_many,
    run_tests,
    same_value,
)
from entropyrl.rewards.code.sandbox import SandboxUnavailableError, find_bwrap, get_sandbox

__all__ = [
    "STATUSES",
    "CodeResult",
    "SandboxUnavailableError",
    "Status",
    "TestOutcome",
    "find_bwrap",
    "get_sandbox",
    "normalize_output",
    "run_many",
    "run_tests",
    "same_value",
]
