"""The assist: an entropy coefficient that takes over where the main actuator runs out.

Each covariance actuator moves the entropy one way only. At its lower bound Clip-Cov is
nearly plain GRPO and cannot pull the entropy down faster than GRPO does; at its upper bound
KL-Cov cannot hold it higher than its penalty allows. Split-range control, the process
industry's answer to one loop with two final elements, hands the rest of the range to a second
actuator: here the entropy term ``−α·H`` of the loss, whose coefficient can take either sign
(``α > 0`` a bonus that raises the entropy, ``α < 0`` a penalty that lowers it).

The assist is an integrator on the relative error ``e`` (positive: the entropy is too low).
It starts only while the main actuator is pinned at the bound the error pushes it to (its
anti-windup holds: :attr:`~entropyrl.control.ControllerState.pinned`) *and* the error would not
close on its own within ``HORIZON`` steps at its last rate (``|e_{t−1}| − |e_t|``): an entropy
that falls towards a lower target at GRPO's own rate needs no push; one that sticks, creeps or
drifts away does. With
``ē = clip(e, −1, 1)``, so that ``α`` moves by at most ``g`` per step however far the entropy
is from a small target::

    α_{t+1} = clip(α_t + g·ē_t, 0, α_max)      if α_t > 0, or α_t = 0 and the assist starts
                                               upwards (e_t > 0, pinned at the raising bound)
    α_{t+1} = clip(α_t + g·ē_t, −α_max, 0)     if α_t < 0, or α_t = 0 and the assist starts
                                               downwards (e_t < 0, pinned at the lowering bound)
    α_{t+1} = 0                                otherwise

so it never fights the main actuator: it grows while the error persists past the bound, and
once the error turns it winds back to zero, where it stops until the main actuator saturates
again. The clip at zero is the hand-back: a bonus is never turned into a penalty in one
step, nor the reverse.
"""

from __future__ import annotations

from typing import Literal, NamedTuple, get_args

Assist = Literal["none", "entropy_coef"]
ASSISTS: tuple[str, ...] = get_args(Assist)
HORIZON = 10  # steps within which the error must be closing for the assist to stay off


class AssistGains(NamedTuple):
    """The assist's constants.

    Attributes:
        gain: ``g``, the change of ``α`` per unit relative error per step (and the most
            it changes in one step).
        limit: ``α_max``, the largest ``|α|``.
    """

    gain: float
    limit: float


def assist_step(alpha: float, error: float, previous: float, pinned: float,
                gains: AssistGains) -> float:
    """The assist's coefficient after one more relative error (module docstring).

    Args:
        alpha: ``α_t``, the coefficient in force.
        error: ``e_t = (ref − H)/ref``.
        previous: ``e_{t−1}`` (0 at the first step).
        pinned: the main controller's :attr:`~entropyrl.control.ControllerState.pinned`
            after this error: +1 when its bound stops it raising the entropy, −1 lowering.
        gains: ``g`` and ``α_max``.

    Returns:
        ``α_{t+1}``.
    """
    moved = alpha + gains.gain * min(max(error, -1.0), 1.0)
    closing = abs(previous) - abs(error)
    starts = alpha == 0 and error * pinned > 0 and closing * HORIZON < abs(error)
    if alpha > 0 or (starts and error > 0):
        return min(max(moved, 0.0), gains.limit)
    if alpha < 0 or (starts and error < 0):
        return max(min(moved, 0.0), -gains.limit)
    return 0.0
