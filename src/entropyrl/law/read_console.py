"""Reader of verl's console log (its default ``console`` logger), as saved from stdout.

verl prints one line per training step::

    (TaskRunner pid=1234) step:12 - actor/entropy:0.512 - val-core/…/mean@1:np.float64(0.61)

The reader strips ANSI colour codes, Ray's ``(Actor pid=…, ip=…)`` prefixes and
``[repeated Nx across cluster]`` suffixes, and reads ``np.float64(x)`` / ``np.int64(x)`` /
``tensor(x)`` values as ``x``. Every other line (generated text, warnings) is ignored.

verl also prints the validations before and after training as Python dicts::

    Initial validation metrics: {'test_score/openai/gsm8k': 0.0007}
    Final validation metrics: {'test_score/openai/gsm8k': 0.5686}

The initial one evaluates the policy before any update; it is put at the step *before* the
first logged step (0 in verl ≥ 0.2, whose steps start at 1; −1 in older logs, whose steps
start at 0). The final one evaluates the policy after the last update, the same policy as an
evaluation logged at the last step; it is put there unless that step already logged the key.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

from entropyrl.law.logtable import LogTable

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
REPEATED = re.compile(r"\s*\[repeated \d+x across cluster\]\s*$")
STEP_LINE = re.compile(r"(?:^|[\s)])step:(-?\d+) - (\S[^:]*:.*?)\s*$")
WRAPPED = re.compile(r"^(?:np\.\w+|numpy\.\w+|tensor|float|int)\((.*?)(?:,\s*\w+=.*)?\)$")
DICT_LINE = re.compile(r"(Initial|Final) validation metrics: (\{.*\})")
NP_CALL = re.compile(r"(?:np|numpy)\.\w+\(([^()]*)\)")


def looks_like_console(text: str) -> bool:
    """True when some line of the first 2,000 is a verl ``step:N - key:value`` line."""
    for line in text.splitlines()[:2000]:
        if "step:" in line and STEP_LINE.search(ANSI.sub("", line)):
            return True
    return False


def _value(raw: str) -> Any:
    """``np.float64(0.5)`` → ``"0.5"``; other text unchanged (converted later, if used)."""
    m = WRAPPED.match(raw)
    return m.group(1).strip() if m else raw


def read_console(path: Path, text: str) -> LogTable:
    """Read every ``step:N`` line and the initial / final validation dicts."""
    table = LogTable(path, "verl-console", step_key="step:N (console lines)")
    steps: list[int] = []
    initial: list[tuple[str, Any, str]] = []
    final: list[tuple[str, Any, str]] = []
    just_initial: set[str] = set()  # keys of an initial-validation dict just read
    for lineno, raw_line in enumerate(text.splitlines(), start=1):
        line = REPEATED.sub("", ANSI.sub("", raw_line))
        where = f"{path}:{lineno}"
        d = DICT_LINE.search(line)
        if d:
            target = initial if d.group(1) == "Initial" else final
            target.extend((k, v, where) for k, v in _parse_dict(d.group(2)).items())
            just_initial = {k for k, _, _ in initial} if target is initial else set()
            continue
        m = STEP_LINE.search(line)
        if not m:
            continue
        step = int(m.group(1))
        pairs = [
            (k.strip(), v.strip())
            for k, _, v in (part.rpartition(":") for part in m.group(2).split(" - "))
            if k.strip()
        ]
        if just_initial and {k for k, _ in pairs} <= just_initial:
            just_initial = set()  # the same initial validation, also sent to the logger
            continue
        just_initial = set()
        steps.append(step)
        for key, value in pairs:
            table.add(key, float(step), _value(value), where)
    if steps and initial:
        first = min(steps) - 1
        for key, value, where in initial:  # before every entry of the key: earliest step
            table.columns.setdefault(key, []).insert(0, (float(first), value, where))
        table.notes.append(
            f"{path}: the initial validation ({', '.join(k for k, _, _ in initial)})"
            f" is read as step {first}, the policy before the first update"
        )
    if steps and final:
        last = float(max(steps))
        for key, value, where in final:
            # The same metric may be logged at steps as "val/KEY" (older verl).
            logged = {
                s
                for col, entries in table.columns.items()
                if col == key or col.endswith("/" + key)
                for s, _, _ in entries
            }
            if last not in logged:
                table.add(key, last, value, where)
    return table


def _parse_dict(text: str) -> dict[str, Any]:
    """A printed dict of metrics; ``np.float64(x)`` as ``x``. Unreadable → empty."""
    try:
        obj = ast.literal_eval(NP_CALL.sub(r"\1", text))
    except (ValueError, SyntaxError):
        return {}
    if not isinstance(obj, dict):
        return {}
    return {str(k): v for k, v in obj.items() if isinstance(v, int | float)}
