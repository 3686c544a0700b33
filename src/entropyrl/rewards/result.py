"""What a reward says about one response: its score, whether it solved the task, and extras.

Accuracy (``train/acc``, ``val/acc``) counts ``solved`` responses, not scores: a reward with
partial credit (0.5 for a right format, 0.8 for three tests of five) keeps its score for the
advantages while only verified answers count as correct.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class RewardResult:
    """One response's reward.

    Attributes:
        score: the scalar reward the advantages use (before any length shaping).
        solved: whether the response counts as correct for accuracy.
        info: free-form extras (e.g. tests passed, a status), kept with the samples.
        token_rewards: dense rewards as ``(char_index, reward)`` pairs on the response text,
            each credited to the token that produced that character (``len(text)`` or
            ``-1``-style indices from the end are allowed); they add to the outcome ``score``
            in the estimators that take token rewards (:mod:`.token_rewards`).
    """

    score: float
    solved: bool
    info: Mapping[str, Any] = field(default_factory=dict)
    token_rewards: tuple[tuple[int, float], ...] = ()


def full_credit(scores: Sequence[float], solved_at: float = 1.0) -> list[RewardResult]:
    """Results of a verifier that returns scores only: solved when ``score >= solved_at``."""
    return [RewardResult(float(s), float(s) >= solved_at) for s in scores]


def to_result(value: Any, solved_at: float = 1.0) -> RewardResult:
    """A reward function's value for one response as a :class:`RewardResult`.

    Accepts a number (``bool`` included), a :class:`RewardResult`, or a mapping with
    ``score`` and optionally ``solved`` and ``token_rewards`` (any other keys go to ``info``).

    Raises:
        TypeError: for anything else, a score that is not a finite number, or token rewards
            that are not ``(char_index, reward)`` pairs.
    """
    if isinstance(value, RewardResult):
        return RewardResult(_finite(value.score), bool(value.solved), value.info,
                            check_token_rewards(value.token_rewards))
    if isinstance(value, Mapping):
        if "score" not in value:
            raise TypeError(f"a dict reward needs a 'score' key, got keys {sorted(value)}")
        score = _finite(value["score"])
        solved = value.get("solved")
        dense = check_token_rewards(value.get("token_rewards", ()))
        info = {k: v for k, v in value.items() if k not in ("score", "solved", "token_rewards")}
        return RewardResult(score, score >= solved_at if solved is None else bool(solved), info,
                            dense)
    score = _finite(value)
    return RewardResult(score, score >= solved_at)


def _finite(value: Any) -> float:
    if isinstance(value, bool) or (isinstance(value, int | float) and math.isfinite(value)):
        return float(value)
    if hasattr(value, "item") and not isinstance(value, str):  # numpy / torch scalars
        return _finite(value.item())
    raise TypeError(f"expected a finite number as the score, got {value!r}")


def check_token_rewards(value: Any) -> tuple[tuple[int, float], ...]:
    """``value`` as a tuple of ``(char_index, reward)`` pairs with finite rewards.

    Raises:
        TypeError: when it is not a sequence of integer/number pairs.
    """
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise TypeError("token_rewards must be a list of (char_index, reward) pairs, got "
                        f"{type(value).__name__}")
    pairs = []
    for item in value:
        if (isinstance(item, str | bytes) or not isinstance(item, Sequence) or len(item) != 2
                or isinstance(item[0], bool) or not isinstance(item[0], int)
                or isinstance(item[1], bool) or not isinstance(item[1], int | float)
                or not math.isfinite(item[1])):
            raise TypeError("token_rewards must be a list of (char_index: int, reward: finite "
                            f"number) pairs, got the item {item!r}")
        pairs.append((int(item[0]), float(item[1])))
    return tuple(pairs)
