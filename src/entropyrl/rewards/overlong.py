"""Reward shaping beside correctness: DAPO's soft overlong penalty and a format-only reward.

Soft overlong punishment (DAPO, Yu et al. 2025, arXiv 2503.14476, Eq. 13). For a response of
``L`` tokens, a maximum length ``L_max`` and a buffer of ``L_cache`` tokens before it::

    R_length(L) = 0                              if L <= L_max - L_cache
                = ((L_max - L_cache) - L) / L_cache   if L_max - L_cache < L <= L_max
                = -1                             if L > L_max

The penalty falls linearly from 0 to -1 across the buffer, so a response is told it is getting
long before it is cut off; it is *added* to the correctness reward. We multiply it by
``factor`` (1.0 in DAPO). With generation capped at ``L_max`` tokens a truncated response has
``L = L_max`` and gets exactly ``-factor``. DAPO uses L_max = 20480 and L_cache = 4096.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from entropyrl.rewards.boxed import last_boxed


def _check_lengths(max_length: int, buffer: int, factor: float) -> None:
    if not isinstance(max_length, int) or max_length < 1:
        raise ValueError(f"max_length: expected an integer >= 1, got {max_length!r}")
    if not isinstance(buffer, int) or not 1 <= buffer <= max_length:
        raise ValueError(
            f"buffer: expected an integer in [1, max_length={max_length}], got {buffer!r}"
        )
    if not isinstance(factor, int | float) or not math.isfinite(factor) or factor < 0:
        raise ValueError(f"factor: expected a finite number >= 0, got {factor!r}")


def overlong_penalty(length: int, max_length: int, buffer: int, factor: float = 1.0) -> float:
    """DAPO's soft overlong penalty for one response (formula in the module docstring).

    Args:
        length: response length ``L`` in tokens (>= 0).
        max_length: ``L_max``, the length beyond which the penalty is -factor.
        buffer: ``L_cache``, the width of the linear ramp that ends at ``max_length``.
        factor: scale of the penalty (DAPO: 1.0).

    Returns:
        A value in [-factor, 0].
    """
    _check_lengths(max_length, buffer, factor)
    if not isinstance(length, int) or length < 0:
        raise ValueError(f"length: expected an integer >= 0, got {length!r}")
    start = max_length - buffer
    if length <= start:
        return 0.0
    if length <= max_length:
        return factor * (start - length) / buffer
    return -float(factor)


def overlong_penalties(
    lengths: Sequence[int], max_length: int, buffer: int, factor: float = 1.0
) -> list[float]:
    """:func:`overlong_penalty` for each response length; shape [B] -> [B]."""
    return [overlong_penalty(int(n), max_length, buffer, factor) for n in lengths]


def format_reward(response: str) -> float:
    """1.0 when the response has a final boxed answer (see :func:`last_boxed`), else 0.0.

    A format-only reward: it checks that the answer can be extracted, not that it is right.
    """
    return 1.0 if last_boxed(response) is not None else 0.0
