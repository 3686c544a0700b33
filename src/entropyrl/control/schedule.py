"""Target entropy over a run: a constant, or an anneal from a start to an end value.

``H*(t)`` for step ``t`` of ``T`` (``steps`` = the anneal length, default the run):

- constant: ``H* = start``;
- linear: ``start + (end − start)·f`` with ``f = min(t/T, 1)``;
- cosine: ``end + (start − end)·(1 + cos(π·f))/2``;
- exponential: ``start·(end/start)^f`` (geometric; both values > 0).

The controller steers to a *reference* that approaches ``H*``: with ``approach_steps = N > 0``
it eases from the run's first measured entropy ``H_1`` to the target over ``N`` steps,

    ref(t) = H*(t) + (H_1 − H*(1))·(1 + cos(π·min((t − 1)/N, 1)))/2,

so ``ref(1) = H_1`` and ``ref(t) = H*(t)`` from step ``1 + N`` on (:func:`reference_at`). A
target far below the start would otherwise open the controller's loop at full error: the
actuator drops to its bound and the entropy falls past the target faster than the actuator
can bring it back (docs/control.md, "The approach").
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


def reference_at(target: float, gap: float, step: int, approach_steps: int) -> float:
    """The controller's reference at ``step`` (1-based): ``target`` plus the eased start gap.

    Args:
        target: ``H*(step)``.
        gap: ``H_1 − H*(1)``, the first measured entropy's distance from the target then.
        step: the step the reference is for.
        approach_steps: ``N``, the approach's length (0: the reference is the target).
    """
    if approach_steps < 0:
        raise ValueError(f"approach_steps: expected >= 0, got {approach_steps}")
    if approach_steps == 0:
        return target
    f = min(max(step - 1, 0) / approach_steps, 1.0)
    return target + gap * (1 + math.cos(math.pi * f)) / 2
