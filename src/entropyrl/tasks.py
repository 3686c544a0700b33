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

from entropyrl.config import DataConfig

Row = dict[str, Any]


@dataclass
class TaskSet:
    """Training and validation rows with their verifier."""

    train: list[Row]
    val: list[Row]
    score: Callable[[str, Row], float]


def load_tasks(cfg: DataConfig) -> TaskSet:
    """Build the task set a config names."""
    if cfg.task == "testbed":
        from entropyrl import testbed

        train = testbed.make_tasks("train", cfg.train_size, cfg.seed)
        val = testbed.make_tasks("val", cfg.val_size, cfg.seed)
        return TaskSet(train, val, lambda text, row: testbed.score(text, row["answer"]))
    raise ValueError(f"data.task: unknown task {cfg.task!r}")


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
