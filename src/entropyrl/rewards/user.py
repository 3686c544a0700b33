"""Your own reward function, scored in the worker pool under the deadline.

``reward.fn`` names a callable as ``module:function`` (importable from the working directory
or the Python path) or ``path/to/file.py:function``. It has TRL's signature: called with
keyword arguments ``completions`` (the response texts), ``prompts`` and one list per dataset
column, it returns one value per completion::

    def my_reward(completions, prompts, answer, **columns):
        return [1.0 if c.strip() == a else 0.0 for c, a in zip(completions, answer)]

A value is a number, or a dict with ``score`` and optionally ``solved`` and ``token_rewards``
(``(char_index, reward)`` pairs on the completion's text; the rest is kept as info), or a
:class:`~entropyrl.rewards.result.RewardResult`. Each response is scored in its own
call, in a worker process, under ``reward.timeout_s``: a call past it scores 0. A function that
raises or returns the wrong shape stops the run with its error.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from entropyrl.errors import UserError
from entropyrl.rewards.pool import RewardFunctionError, RewardPool
from entropyrl.rewards.result import RewardResult, to_result

HOW = ("It is called as f(completions=[...], prompts=[...], <column>=[...], ...) and must "
       "return a list with one number (or {'score': ..., 'solved': ...}) per completion.")


def load_reward_fn(spec: str) -> Callable[..., Any]:
    """The callable ``spec`` names (``module:function`` or ``path/file.py:function``).

    Raises:
        UserError: when the module or file cannot be imported or holds no such callable.
    """
    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        raise UserError(f"reward.fn: expected 'module:function' or 'path/to/file.py:function', "
                        f"got {spec!r}")
    if module_name.endswith(".py"):
        path = Path(module_name).expanduser().resolve()
        if not path.is_file():
            raise UserError(f"reward.fn: no file {path}; give the path of the .py file that "
                            "defines the function")
        name = f"entropyrl_user_reward_{abs(hash(str(path)))}"
        module = sys.modules.get(name)
        if module is None:
            loader_spec = importlib.util.spec_from_file_location(name, path)
            assert loader_spec is not None and loader_spec.loader is not None
            module = importlib.util.module_from_spec(loader_spec)
            try:
                loader_spec.loader.exec_module(module)
            except Exception as exc:
                raise UserError(f"reward.fn: importing {path} failed with "
                                f"{type(exc).__name__}: {exc}; fix the file") from None
            sys.modules[name] = module
    else:
        if "" not in sys.path and str(Path.cwd()) not in sys.path:
            sys.path.insert(0, str(Path.cwd()))  # `python -m`-like: modules in the working dir
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            raise UserError(f"reward.fn: no module {exc.name!r} (from {spec!r}); run from the "
                            "directory that holds it, add it to PYTHONPATH, or give "
                            "path/to/file.py:function") from None
        except Exception as exc:
            raise UserError(f"reward.fn: importing {module_name} failed with "
                            f"{type(exc).__name__}: {exc}; fix the module") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise UserError(f"reward.fn: {module_name} has no function {attr!r}"
                        + ("" if fn is None else f" (it is a {type(fn).__name__})"))
    return fn


class UserReward:
    """``(completion, row) -> (score, solved, info)`` around the user's function (picklable).

    ``row`` holds ``prompt`` and the dataset's columns; the function is imported on first use
    in each worker.
    """

    def __init__(self, spec: str, solved_at: float = 1.0):
        self.spec = spec
        self.solved_at = solved_at
        self._fn: Callable[..., Any] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"spec": self.spec, "solved_at": self.solved_at, "_fn": None}

    def __call__(self, completion: str, row: Mapping[str, Any]) -> RewardResult:
        """Score one completion of ``row``'s prompt (in a worker)."""
        if self._fn is None:
            self._fn = load_reward_fn(self.spec)
        columns = {k: [v] for k, v in row.items() if k != "prompt"}
        out = self._fn(completions=[completion], prompts=[row.get("prompt", "")], **columns)
        if isinstance(out, str | bytes) or not isinstance(out, Sequence):
            raise RewardFunctionError(f"it returned {type(out).__name__}, not a list. {HOW}")
        if len(out) != 1:
            raise RewardFunctionError(f"it returned {len(out)} values for 1 completion. {HOW}")
        try:
            return to_result(out[0], self.solved_at)
        except TypeError as exc:
            raise RewardFunctionError(f"it returned a bad value: {exc}. {HOW}") from None


class UserScorer:
    """The user's reward in a :class:`~entropyrl.rewards.pool.RewardPool`.

    Args:
        spec: ``reward.fn``.
        workers: worker processes.
        timeout: seconds per response; a response past it scores 0 (not solved).
        solved_at: ``solved`` when the function gives a bare score ``>= solved_at``.
    """

    def __init__(self, spec: str, *, workers: int, timeout: float, solved_at: float = 1.0):
        load_reward_fn(spec)  # fail here, with a clear message, not inside a worker
        self.spec = spec
        self.pool = RewardPool(UserReward(spec, solved_at), workers, timeout,
                               default=RewardResult(0.0, False, {"timeout": True}),
                               raise_errors=True)

    def score_batch(self, texts: Sequence[str], rows: Sequence[Mapping[str, Any]]
                    ) -> list[RewardResult]:
        """One result per response; ``rows[i]`` is the prompt's row of ``texts[i]``."""
        try:
            return self.pool.score_batch(texts, [dict(r) for r in rows])
        except RewardFunctionError as exc:
            raise UserError(f"reward.fn ({self.spec}) failed on a response: {exc}. Fix the "
                            "function; the run's last checkpoint is kept.") from None

    def close(self) -> None:
        """Stop the workers."""
        self.pool.close()
