"""Prompt sources and their verifiers, and a resumable sampler over the training prompts.

A task row is a dict with at least ``prompt`` (the text given to the model), ``answer`` (the
reference) and ``data_source``. A :class:`TaskSet` pairs the rows with a scoring function
``score(response_text, row) -> float``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from entropyrl.config import DataConfig, RewardConfig
from entropyrl.errors import UserError

Row = dict[str, Any]


@dataclass
class TaskSet:
    """Training and validation rows with their verifier.

    ``score_batch(texts, rows)`` scores many responses at once (the math verifier runs them in
    a worker pool); ``close()`` releases its workers.
    """

    train: list[Row]
    val: list[Row]
    score_batch: Callable[[list[str], list[Row]], list[float]]
    close: Callable[[], None] = lambda: None
    skipped: int = 0

    def score(self, text: str, row: Row) -> float:
        """Score one response."""
        return self.score_batch([text], [row])[0]


def check_data(data: DataConfig) -> None:
    """Task-specific checks of the data section (the config itself knows no task's choices).

    Raises:
        UserError: naming the field and its allowed values.
    """
    if data.task == "testbed":
        from entropyrl.testbed.tasks import DIFFICULTIES, OPS

        for i, op in enumerate(data.ops):
            if op not in OPS:
                raise UserError(f"data.ops[{i}]: expected one of {list(OPS)}, got {op!r}")
        if any(d not in DIFFICULTIES for d in data.difficulty):
            raise UserError(
                f"data.difficulty: expected levels in {list(DIFFICULTIES)}, got {data.difficulty}"
            )


def load_tasks(data: DataConfig, reward: RewardConfig, tokenizer: Any = None) -> TaskSet:
    """Build the task set a config names (the tokenizer renders chat templates)."""
    check_data(data)
    if data.task == "testbed":
        from entropyrl import testbed

        ops = data.ops or list(testbed.tasks.OPS)
        levels = data.difficulty or list(testbed.tasks.DIFFICULTIES)

        def split(name: str, n: int) -> list[Row]:
            return testbed.make_tasks(name, n, data.seed, levels, ops)  # type: ignore[arg-type]

        train, val = split("train", data.train_size), split("val", data.val_size)

        def exact(texts: list[str], rows: list[Row]) -> list[float]:
            return [testbed.score(t, r["answer"]) for t, r in zip(texts, rows, strict=True)]

        return TaskSet(train, val, exact)
    from entropyrl.data import load_math_datasets
    from entropyrl.rewards import MathScorer

    options: dict[str, Any] = {
        "schema": data.schema,
        "template": data.template,
        "tokenizer": tokenizer if data.chat_template else None,
        "skip_bad_rows": data.skip_bad_rows,
    }
    train_sets = load_math_datasets(data.train_files, **options)
    val_sets = load_math_datasets(data.val_files, **options)
    val = [r for s in val_sets for r in s.rows]
    if data.max_val_rows:
        val = val[: data.max_val_rows]
    scorer = MathScorer(workers=reward.workers, timeout=reward.timeout_s)

    def verify(texts: list[str], rows: list[Row]) -> list[float]:
        return scorer.score_batch(texts, [str(r["answer"]) for r in rows])

    skipped = sum(s.skipped for s in (*train_sets, *val_sets))
    return TaskSet([r for s in train_sets for r in s.rows], val, verify, scorer.close, skipped)


class PromptSampler:
    """Walks through seeded permutations of the training rows, epoch after epoch.

    Its position is part of the checkpoint, so a resumed run draws the same prompts.
    """

    def __init__(self, n_rows: int, seed: int):
        self.n_rows = n_rows
        self.seed = seed
        self.epoch = 0
        self.pos = 0
        self._order = self._permutation()

    def _permutation(self) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(self.n_rows, generator=g).tolist()

    def take(self, k: int) -> list[int]:
        """The next ``k`` row indices."""
        out: list[int] = []
        while len(out) < k:
            if self.pos == self.n_rows:
                self.epoch += 1
                self.pos = 0
                self._order = self._permutation()
            n = min(k - len(out), self.n_rows - self.pos)
            out.extend(self._order[self.pos : self.pos + n])
            self.pos += n
        return out

    def state_dict(self) -> dict[str, int]:
        """Position for checkpoints."""
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Restore a position saved by :meth:`state_dict`."""
        self.epoch, self.pos = int(state["epoch"]), int(state["pos"])
        self._order = self._permutation()
