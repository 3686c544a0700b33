"""The testbed's arithmetic with the answer run as Python: a code task the CPU testbed can learn.

The shipped testbed model writes a column scratchpad, ``#``, then the answer
(``14 09 15 07#7594``, docs/testbed.md). It has never written Python, and its scratchpad is
not Python (``14 09`` is two literals in a row). What follows its last ``#`` is: the answer,
a Python expression. This task runs that expression, exactly as written, in the sandbox of
:mod:`entropyrl.rewards.code` and compares its value with the arithmetic result: solved when
``repr`` of the value equals the target (an ``int`` of the right value; see
:func:`entropyrl.rewards.code.same_value`).

Python's rules, not the testbed checker's, decide: ``07594`` is a syntax error (leading
zeros), ``7594 done`` too, `` 7594`` an indentation error, ``7594.0`` a float (wrong type).
Each expression is a call test of an empty program; ``data.testbed_code.sandbox_batch``
expressions share one sandbox, one after the other, each in its own forked process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from entropyrl.config import RewardConfig
from entropyrl.data_config import TestbedCodeData
from entropyrl.errors import UserError
from entropyrl.rewards.result import RewardResult
from entropyrl.tasks import testbed
from entropyrl.tasks.base import Row, TaskSet

if TYPE_CHECKING:
    from entropyrl.rewards.code import TestOutcome


def check(section: TestbedCodeData) -> None:
    """Known operations and levels, positive limits, and a sandbox unless the unsafe mode."""
    testbed.check(section, "testbed_code")
    if not (section.timeout_s > 0 and section.memory_mb > 0 and section.sandbox_batch >= 1):
        raise UserError("data.testbed_code.timeout_s: expected timeout_s > 0, memory_mb > 0 and "
                        "sandbox_batch >= 1")
    if not section.unsafe_rlimits_only:
        from entropyrl.rewards.code import get_sandbox

        get_sandbox()  # a UserError naming the install command when there is no sandbox


def answer_expression(text: str) -> str | None:
    """The Python expression of a response: the text after its last ``#`` (None if empty)."""
    _, mark, expr = text.rpartition("#")
    return expr if mark and expr.strip() else None


def evaluate_expressions(exprs: list[str], targets: list[str], section: TestbedCodeData,
                         workers: int) -> list[TestOutcome]:
    """Evaluate each expression in the sandbox against its target; one ``TestOutcome`` each.

    ``section.sandbox_batch`` expressions run as the call tests of one empty program. When
    one of them ends its sandbox early (it killed the driver, or overran the host deadline),
    the ones after it did not run: they run again in a fresh sandbox, so an expression can
    fail only itself.
    """
    from entropyrl.rewards.code import TestOutcome, run_many
    from entropyrl.rewards.code.runner import NOT_RUN

    out: list[TestOutcome | None] = [None] * len(exprs)
    pending = list(range(len(exprs)))
    k = section.sandbox_batch
    while pending:
        chunks = [pending[i : i + k] for i in range(0, len(pending), k)]
        results = run_many(
            [""] * len(chunks),
            [[{"call": exprs[j], "output": targets[j]} for j in chunk] for chunk in chunks],
            workers=workers, timeout_s=section.timeout_s, memory_mb=section.memory_mb,
            unsafe_rlimits_only=section.unsafe_rlimits_only,
        )
        pending = []
        for chunk, r in zip(chunks, results, strict=True):
            if not r.tests:  # the sandbox did not start: every expression of the chunk fails
                for j in chunk:
                    out[j] = TestOutcome(r.status, 0.0, r.detail)
                continue
            for j, outcome in zip(chunk, r.tests, strict=True):
                if outcome.detail == NOT_RUN:
                    pending.append(j)  # each round settles at least the first of each chunk
                else:
                    out[j] = outcome
    return [o for o in out if o is not None]


def score_expressions(texts: list[str], rows: list[Row], section: TestbedCodeData,
                      workers: int) -> list[RewardResult]:
    """1 when the response's answer expression evaluates to the row's answer, else 0.

    ``info["status"]`` is the sandbox's status of the evaluation (``ok``, ``wrong``, ``crash``
    for an expression that raises or does not parse, ``timeout``, ``memory``,
    ``sandbox_error``) or ``no_code`` when the response has no expression after a ``#``.
    """
    results: list[RewardResult] = [RewardResult(0.0, False, {"status": "no_code"})] * len(texts)
    where = [i for i, t in enumerate(texts) if answer_expression(t) is not None]
    exprs = [answer_expression(texts[i]) or "" for i in where]
    outcomes = evaluate_expressions(exprs, [rows[i]["answer"] for i in where], section,
                                    workers) if where else []
    for i, outcome in zip(where, outcomes, strict=True):
        ok = outcome.status == "ok"
        results[i] = RewardResult(float(ok), ok, {"status": outcome.status})
    return results


def load(section: TestbedCodeData, reward: RewardConfig, tokenizer: Any = None) -> TaskSet:
    """The testbed's rows (``data.testbed_code.seed``, ops, levels), answers run as Python."""
    train, val = testbed.make_rows(section)
    for row in (*train, *val):
        row["data_source"] = row["data_source"].replace("testbed/", "testbed_code/", 1)

    def score(texts: list[str], rows: list[Row]) -> list[RewardResult]:
        return score_expressions(texts, rows, section, reward.workers)

    return TaskSet(train, val, score)
