"""Tasks: where prompts come from and how responses are scored, registered in one place.

A task is its config section (``data.<name>``), a loader that builds a :class:`TaskSet` (the
training and validation rows and the reward), and checks of its section. ``reward.fn``
replaces any task's reward with the user's function (:mod:`entropyrl.rewards.user`).

* ``testbed``: the embedded synthetic arithmetic (:mod:`.testbed`);
* ``testbed_code``: the same arithmetic, the answer run as a Python expression in the code
  sandbox (:mod:`.testbed_code`);
* ``math``: math datasets scored by math-verify (:mod:`.math`);
* ``code``: coding problems, the answer run against tests in a sandbox (:mod:`.code`);
* ``python``: the user's own prompts and reward function (:mod:`.python`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from entropyrl.config import DataConfig, RewardConfig
from entropyrl.errors import UserError
from entropyrl.tasks import code, math, python, testbed, testbed_code
from entropyrl.tasks.base import PromptSampler, Row, TaskSet


class Task(NamedTuple):
    """A registered task.

    Attributes:
        load: ``(section, reward, tokenizer) -> TaskSet``.
        check: ``section -> None``, raising :class:`UserError` on a bad value (cheap: no data
            is read).
    """

    load: Callable[[Any, RewardConfig, Any], TaskSet]
    check: Callable[[Any], None]


TASKS: dict[str, Task] = {
    "testbed": Task(testbed.load, testbed.check),
    "testbed_code": Task(testbed_code.load, testbed_code.check),
    "math": Task(math.load, math.check),
    "code": Task(code.load, code.check),
    "python": Task(python.load, python.check),
}


def check_data(data: DataConfig) -> None:
    """Task-specific checks of ``data.<task>``.

    Raises:
        UserError: naming the field and its allowed values.
    """
    TASKS[data.task].check(getattr(data, data.task))


def load_tasks(data: DataConfig, reward: RewardConfig, tokenizer: Any = None) -> TaskSet:
    """The task set a config names (the tokenizer renders chat templates).

    With ``reward.fn`` set, the user's function scores the responses instead of the task's own
    reward.
    """
    if data.task not in TASKS:
        raise UserError(f"data.task: expected one of {list(TASKS)}, got {data.task!r}")
    check_data(data)
    tasks = TASKS[data.task].load(getattr(data, data.task), reward, tokenizer)
    if reward.fn and data.task != "python":
        tasks.close()
        tasks = python.with_user_reward(tasks, reward)
    return tasks


__all__ = ["TASKS", "PromptSampler", "Row", "Task", "TaskSet", "check_data", "load_tasks"]
