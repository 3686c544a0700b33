"""What every task provides: rows, a batch reward, and the resumable prompt sampler.

A task row is a dict with at least ``prompt`` (the text given to the model) and
``data_source``; the rest (``answer``, tests, any dataset column) is what its reward reads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from entropyrl.rewards.result import RewardResult

Row = dict[str, Any]
ScoreBatch = Callable[[list[str], list[Row]], list[RewardResult]]


@dataclass
class TaskSet:
    """Training and validation rows with their reward.

    ``score_batch(texts, rows)`` scores many responses at once (``rows[i]`` is the row of
    ``texts[i]``; verifiers run in a worker pool); ``close()`` releases its workers.
    """

    train: list[Row]
    val: list[Row]
    score_batch: ScoreBatch
    close: Callable[[], None] = lambda: None
    skipped: int = 0

    def score(self, text: str, row: Row) -> RewardResult:
        """Score one response."""
        return self.score_batch([text], [row])[0]


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
