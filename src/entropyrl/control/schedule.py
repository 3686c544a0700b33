"""Target entropy over a run: a constant, or an anneal from a start to an end value.

``H*(t)`` for step ``t`` of ``T`` (``steps`` = the anneal length, default the run):

- constant: ``H* = start``;
- linear: ``start + (end − start)·f`` with ``f = min(t/T, 1)``;
- cosine: ``end + (start − end)·(1 + cos(π·f))/2``;
- exponential: ``start·(end/start)^f`` (geometric; both values > 0).
"""

from __future__ import annotations

import math
from typing import Literal, get_args

ScheduleKind = Literal["constant", "linear", "cosine", "exponential"]
SCHEDULE_KINDS: tuple[str, ...] = get_args(ScheduleKind)


def target_at(kind: str, start: float, end: float, step: int, steps: int) -> float:
    """The target entropy ``H*`` at ``step`` (1-based) of an anneal over ``steps`` steps."""
    if kind not in SCHEDULE_KINDS:
        raise ValueError(f"kind: expected one of {list(SCHEDULE_KINDS)}, got {kind!r}")
    if steps < 1:
        raise ValueError(f"steps: expected >= 1, got {steps}")
    f = min(max(step, 0) / steps, 1.0)
    if kind == "constant":
        return start
    if kind == "linear":
        return start + (end - start) * f
    if kind == "cosine":
        return end + (start - end) * (1 + math.cos(math.pi * f)) / 2
    if start <= 0 or end <= 0:
        raise ValueError("exponential schedule: expected start > 0 and end > 0")
    return start * (end / start) ** f
