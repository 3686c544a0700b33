"""Your own task: prompts from your files, scored by your function (``reward.fn``).

Every column of a row other than the prompt column is passed to the function, as TRL does
with its ``reward_funcs``; see :mod:`entropyrl.rewards.user` for the signature.
"""

from __future__ import annotations

from typing import Any

from entropyrl.config import RewardConfig
from entropyrl.data.load import distinct_source_names, read_records
from entropyrl.data.prompts import render_prompt
from entropyrl.data_config import PythonData
from entropyrl.errors import UserError
from entropyrl.rewards.user import UserScorer
from entropyrl.tasks.base import Row, TaskSet


def check(section: PythonData) -> None:
    """``data.python.prompt_key`` is a column name."""
    if not section.prompt_key:
        raise UserError("data.python.prompt_key: expected the name of the prompt column")


def read_rows(sources: list[str], section: PythonData, tokenizer: Any = None) -> list[Row]:
    """Rows of the files: ``prompt`` (rendered), ``data_source`` and every other column.

    Raises:
        UserError: a record that is not an object, lacks the prompt column, or holds an empty
            prompt (file and row named), or no rows at all.
    """
    key = section.prompt_key
    rows: list[Row] = []
    for source, name in zip(sources, distinct_source_names(list(sources)), strict=True):
        for rec in read_records(source):
            where = f"{source}: row {rec.number}"
            if rec.error is not None or not isinstance(rec.data, dict):
                raise UserError(f"{where}: {rec.error or 'expected a JSON object'}; fix the row")
            prompt = rec.data.get(key)
            if not isinstance(prompt, str) or not prompt.strip():
                raise UserError(f"{where}: no text in column {key!r} (columns: "
                                f"{sorted(rec.data)}); set data.python.prompt_key to the "
                                "prompt column")
            columns = {k: v for k, v in rec.data.items() if k != key}
            columns.setdefault("data_source", name)
            text = render_prompt(prompt, "raw", tokenizer, fallback="raw") if tokenizer else prompt
            rows.append({**columns, "prompt": text})
    if not rows:
        raise UserError(f"{', '.join(sources)}: no rows")
    return rows


def load(section: PythonData, reward: RewardConfig, tokenizer: Any = None) -> TaskSet:
    """Rows from ``data.python.train_files``/``val_files``; ``reward.fn`` scores them."""
    chat = tokenizer if section.chat_template else None
    train = read_rows(section.train_files, section, chat)
    val = read_rows(section.val_files, section, chat)
    if section.max_val_rows:
        val = val[: section.max_val_rows]
    return with_user_reward(TaskSet(train, val, _unscored), reward)


def with_user_reward(tasks: TaskSet, reward: RewardConfig) -> TaskSet:
    """``tasks`` scored by ``reward.fn`` in a worker pool."""
    scorer = UserScorer(reward.fn, workers=reward.workers, timeout=reward.timeout_s,
                        solved_at=reward.solved_at)
    return TaskSet(tasks.train, tasks.val, scorer.score_batch, scorer.close, tasks.skipped)


def _unscored(texts: list[str], rows: list[Row]) -> list[Any]:
    raise AssertionError("the python task is scored by reward.fn")
