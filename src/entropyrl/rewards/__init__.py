r"""Verifiable rewards: the paper's boxed-answer math reward, scored safely in worker processes.

* :mod:`~entropyrl.rewards.boxed`: extract the last ``\boxed{...}`` answer of a response.
* :mod:`~entropyrl.rewards.math`: answer equivalence through math-verify (no timeout; in-process).
* :mod:`~entropyrl.rewards.pool`: :class:`MathScorer` runs it in worker processes with a hard
  per-call deadline; this is what training and evaluation use.
* :mod:`~entropyrl.rewards.overlong`: DAPO's soft overlong penalty and a format-only reward.
* :mod:`~entropyrl.rewards.result`: :class:`RewardResult`, a response's score and solved flag.
* :mod:`~entropyrl.rewards.user`: the user's own reward function (``reward.fn``) in the pool.
* :mod:`~entropyrl.rewards.code`: programs run against their tests in a bubblewrap sandbox.

Importing this package is cheap: math-verify (and sympy) load on first use.
"""

from entropyrl.rewards.boxed import has_boxed, last_boxed
from entropyrl.rewards.math import answers_match, normalize_answer, score_response
from entropyrl.rewards.overlong import format_reward, overlong_penalties, overlong_penalty
from entropyrl.rewards.pool import MathScorer, PoolStats, RewardFunctionError, RewardPool
from entropyrl.rewards.result import RewardResult, full_credit, to_result
from entropyrl.rewards.user import UserScorer, load_reward_fn

__all__ = [
    "MathScorer",
    "PoolStats",
    "RewardFunctionError",
    "RewardPool",
    "RewardResult",
    "UserScorer",
    "answers_match",
    "format_reward",
    "full_credit",
    "has_boxed",
    "last_boxed",
    "load_reward_fn",
    "normalize_answer",
    "overlong_penalties",
    "overlong_penalty",
    "score_response",
    "to_result",
]
