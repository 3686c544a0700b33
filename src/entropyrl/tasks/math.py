"""Math datasets as a task: schema-adapted rows, the boxed-answer reward in worker processes."""

from __future__ import annotations

from typing import Any

from entropyrl.config import RewardConfig
from entropyrl.data_config import MathData
from entropyrl.rewards.result import RewardResult, full_credit
from entropyrl.tasks.base import Row, TaskSet


def check(section: MathData) -> None:
    """Nothing to check before reading the files (the loader names bad rows)."""


def load(section: MathData, reward: RewardConfig, tokenizer: Any = None) -> TaskSet:
    """Rows from ``data.math.train_files``/``val_files``; math-verify scores the answers."""
    from entropyrl.data import load_math_datasets
    from entropyrl.rewards import MathScorer

    options: dict[str, Any] = {
        "schema": section.schema,
        "template": section.template,
        "tokenizer": tokenizer if section.chat_template else None,
        "skip_bad_rows": section.skip_bad_rows,
    }
    train_sets = load_math_datasets(section.train_files, **options)
    val_sets = load_math_datasets(section.val_files, **options)
    val = [r for s in val_sets for r in s.rows]
    if section.max_val_rows:
        val = val[: section.max_val_rows]
    scorer = MathScorer(workers=reward.workers, timeout=reward.timeout_s)

    def verify(texts: list[str], rows: list[Row]) -> list[RewardResult]:
        return full_credit(scorer.score_batch(texts, [str(r["answer"]) for r in rows]))

    skipped = sum(s.skipped for s in (*train_sets, *val_sets))
    return TaskSet([r for s in train_sets for r in s.rows], val, verify, scorer.close, skipped)
