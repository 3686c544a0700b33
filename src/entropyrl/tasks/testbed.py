"""The embedded synthetic testbed as a task: generated rows, exact-match reward."""

from __future__ import annotations

from typing import Any

from entropyrl.config import RewardConfig
from entropyrl.data_config import TestbedData
from entropyrl.errors import UserError
from entropyrl.rewards.result import RewardResult, full_credit
from entropyrl.tasks.base import Row, TaskSet


def check(section: TestbedData, name: str = "testbed") -> None:
    """``data.<name>.ops`` and ``difficulty`` name known operations and carry levels."""
    from entropyrl.testbed.tasks import DIFFICULTIES, OPS

    for i, op in enumerate(section.ops):
        if op not in OPS:
            raise UserError(f"data.{name}.ops[{i}]: expected one of {list(OPS)}, got {op!r}")
    if any(d not in DIFFICULTIES for d in section.difficulty):
        raise UserError(f"data.{name}.difficulty: expected levels in {list(DIFFICULTIES)}, "
                        f"got {section.difficulty}")


def make_rows(section: TestbedData) -> tuple[list[Row], list[Row]]:
    """Training and validation rows generated from the section's seed, operations and levels."""
    from entropyrl import testbed

    ops = section.ops or list(testbed.tasks.OPS)
    levels = section.difficulty or list(testbed.tasks.DIFFICULTIES)

    def split(name: str, n: int) -> list[Row]:
        return testbed.make_tasks(name, n, section.seed, levels, ops)  # type: ignore[arg-type]

    return split("train", section.train_size), split("val", section.val_size)


def load(section: TestbedData, reward: RewardConfig, tokenizer: Any = None) -> TaskSet:
    """Training and validation rows generated from ``data.testbed.seed``; reward 1 if exact."""
    from entropyrl import testbed

    def exact(texts: list[str], rows: list[Row]) -> list[RewardResult]:
        return full_credit([testbed.score(t, r["answer"])
                            for t, r in zip(texts, rows, strict=True)])

    return TaskSet(*make_rows(section), exact)
