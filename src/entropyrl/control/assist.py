"""The assist: an entropy coefficient that takes over where the main actuator runs out.

Each covariance actuator moves the entropy one way only. At its lower bound Clip-Cov is
nearly plain GRPO and cannot pull the entropy down faster than GRPO does; at its upper bound
KL-Cov cannot hold it higher than its penalty allows. Split-range control, the process
industry's answer to one loop with two final elements, hands the rest of the range to a second
actuator: here the entropy term ``−α·H`` of the loss, whose coefficient can take either sign
(``α > 0`` a bonus that raises the entropy, ``α < 0`` a penalty that lowers it).

The assist integrates the relative error ``e`` (positive: the entropy is too low), but only
while the error is not closing on its own: by ``|e_{t−1}| − |e_t|`` a step, it would take
more than ``HORIZON`` steps to close. An entropy that already moves towards the target fast
enough needs no more push; one that sticks, creeps or drifts away does. It starts from zero
only while the main actuator is also pinned at the bound the error pushes it to (its
anti-windup holds: :attr:`~entropyrl.control.ControllerState.pinned`). When the error turns,
it halves each step. With ``ē = clip(e, −1, 1)``, so that ``α`` grows by at most ``g`` a
step however far the entropy is from a small target::

    on (e_t has α_t's sign):    α_{t+1} = α_t                         closing within HORIZON
                                α_{t+1} = clip(α_t + g·ē_t, ±α_max)    otherwise
    turned (the other sign):    α_{t+1} = α_t / 2   (0 once below g/10)
    off (α_t = 0):              α_{t+1} = g·ē_t     if pinned that way and not closing, else 0

Why not a plain integrator: ``α`` sets the entropy's *rate* of change, so the plant
integrates, and an integrator that winds back only as fast as it wound up carries the entropy
far past the target. Measured on the testbed: an undershoot to half the target, after which the
fork the penalty had shut stayed shut. Holding while the error closes stops the wind-up;
halving on the turn hands back within a few steps yet keeps a share of the push where the
target sits beyond the main actuator's reach for good. It never fights the main actuator: it
starts only in the direction that actuator is pinned, and a bonus never becomes a penalty
(``α`` crosses zero only through ``α = 0``).
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


def check_assist(assist: str, actuator: str, gain: float, limit: float, prefix: str) -> None:
    """Refuse an assist that is the actuator itself, or one without a positive gain and limit.

    ``prefix`` spells the fields as the caller's config does (``control.`` or ``control_``).

    Raises:
        ValueError: naming the field and the fix.
    """
    if assist != "none" and not (gain > 0 and limit > 0):
        raise ValueError(f"{prefix}assist_gain: expected {prefix}assist_gain > 0 and "
                         f"{prefix}assist_limit > 0, got {gain} and {limit}")
    if assist == actuator:
        raise ValueError(f"{prefix}assist: {assist} is already the actuator; assist it with "
                         f"another term, or set {prefix}assist=none")


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
    stuck = (abs(previous) - abs(error)) * HORIZON < abs(error)  # not closing in time
    if alpha * error < 0:  # turned: hand back
        half = alpha / 2
        return half if abs(half) >= gains.gain / 10 else 0.0
    if alpha == 0 and not error * pinned > 0:
        return 0.0
    if not stuck or error == 0:
        return alpha
    moved = alpha + gains.gain * min(max(error, -1.0), 1.0)
    return min(max(moved, -gains.limit), gains.limit)
