"""Entropy controllers: pure ``step(state, measured, target) -> (state, actuator value)``.

The plant is the RL run: once per rollout step the sensor reads ``H``, the global token-mean
entropy of the step's rollout batch, and the controller sets the actuator for the next step
(a Clip-Cov ratio, a KL-Cov coefficient or ratio, PPO's lower clip, or the entropy bonus).
Raising every actuator raises entropy except ``eps_low``, whose clip-low effect raises entropy
as it *shrinks* (arXiv 2509.26114), so its direction is −1.

- ``pi``: proportional–integral on the error ``e = H* − H``, in log space (actuators are
  positive and act multiplicatively):

      log u = log u₀ + d·(k_p·e + k_i·I),     I ← I + e

  with ``d`` the actuator's direction and the output kept in ``[u_min, u_max]``. Anti-windup
  by conditional integration: ``I`` does not grow while the output is saturated in the
  direction the error pushes.
- ``skywork``: the Skywork-OR1 rule (as in TRL) on an additive coefficient:
  ``u ← clip(u + d·δ·sign(e), u_min, u_max)``.
- ``predictive``: the actuator value whose first-order ``ΔH`` lands on the target, from the
  step's token covariances, with a PI correction (:mod:`entropyrl.control.predictive`).

Errors are relative (``e = (H* − H)/H*``), so the gains do not depend on the entropy's scale.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal, get_args

ControllerKind = Literal["pi", "predictive", "skywork"]
CONTROLLER_KINDS: tuple[str, ...] = get_args(ControllerKind)
Actuator = Literal["clip_cov_ratio", "kl_cov_coef", "kl_cov_ratio", "eps_low", "entropy_coef"]
ACTUATORS: tuple[str, ...] = get_args(Actuator)
DIRECTION = {"clip_cov_ratio": 1.0, "kl_cov_coef": 1.0, "kl_cov_ratio": 1.0, "eps_low": -1.0,
             "entropy_coef": 1.0}


@dataclass(frozen=True)
class Gains:
    """A controller's constants.

    Attributes:
        kind: ``pi``, ``predictive`` or ``skywork``.
        direction: +1 when raising the actuator raises entropy, −1 otherwise.
        kp: proportional gain (log-space units per unit relative error).
        ki: integral gain.
        u_min: lower bound of the output.
        u_max: upper bound of the output.
        delta: the Skywork rule's step.
    """

    kind: str = "pi"
    direction: float = 1.0
    kp: float = 1.0
    ki: float = 0.3
    u_min: float = 1e-5
    u_max: float = 1.0
    delta: float = 1e-3


@dataclass(frozen=True)
class ControllerState:
    """What a controller carries from step to step (checkpointed).

    Attributes:
        base: ``u₀``, the actuator value the run started from.
        value: the actuator value in force.
        integral: ``I``, the summed relative error (PI).
        error: the last relative error.
        steps: how many measurements were taken.
        s1, sx, sy, sxx, sxy: predictive: the forgetting sums of ``1, x, y, x², x·y`` of the
            plant fit ``ΔH = η̂·x + β̂`` (:mod:`entropyrl.control.predictive`).
        gain: predictive: ``η̂``, the estimated ``ΔH`` per unit of covariance left.
        offset: predictive: ``β̂``, the change no selection removes.
        predicted: predictive: the ``ΔH`` predicted for the next step.
        gap: ``H_1 − H*(1)``, where the reference's approach starts from
            (:func:`entropyrl.control.reference_at`); set at the first measurement.
        pinned: +1 while the actuator's bound stops it raising the entropy as far as the
            error asks (the anti-windup holds the integral), −1 lowering, 0 otherwise.
        assist: ``α``, the assist's entropy coefficient for the next step
            (:mod:`entropyrl.control.assist`; 0 without an assist).
    """

    base: float
    value: float
    integral: float = 0.0
    error: float = 0.0
    steps: int = 0
    s1: float = 0.0
    sx: float = 0.0
    sy: float = 0.0
    sxx: float = 0.0
    sxy: float = 0.0
    gain: float = 0.0
    offset: float = 0.0
    predicted: float = 0.0
    gap: float = 0.0
    pinned: float = 0.0
    assist: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain values for a checkpoint."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ControllerState:
        """Restore :meth:`to_dict`'s result."""
        return cls(**data)


def start(value: float, gains: Gains) -> ControllerState:
    """The state before the first measurement, holding ``value`` (clipped into the box)."""
    u = min(max(value, gains.u_min), gains.u_max)
    return ControllerState(base=u, value=u)


def step(state: ControllerState, measured: float, target: float,
         gains: Gains) -> tuple[ControllerState, float]:
    """One measurement in, the next actuator value out.

    Args:
        state: the controller's state.
        measured: ``H`` of this rollout step.
        target: ``H*`` for the next step.
        gains: the controller's constants.

    Returns:
        The new state and the actuator value for the next step.
    """
    if not (math.isfinite(measured) and math.isfinite(target) and target > 0):
        raise ValueError(f"expected a finite entropy and a target > 0, got {measured}, {target}")
    e = (target - measured) / target
    if gains.kind == "skywork":
        sign = 0.0 if e == 0 else math.copysign(1.0, e)
        raw = state.value + gains.direction * gains.delta * sign
        u = min(max(raw, gains.u_min), gains.u_max)
        pinned = sign if raw != u else 0.0
        return replace(state, value=u, error=e, steps=state.steps + 1, pinned=pinned), u
    if gains.kind == "predictive":
        raise ValueError("kind predictive: use entropyrl.control.predictive_step, which also "
                         "takes the step's covariance reading")
    if gains.kind != "pi":
        raise ValueError(f"kind: expected one of {list(CONTROLLER_KINDS)}, got {gains.kind!r}")
    u, integral, pinned = pi_output(state.base, e, state.integral, gains)
    return replace(state, value=u, integral=integral, error=e, steps=state.steps + 1,
                   pinned=pinned), u


def pi_output(anchor: float, e: float, integral: float,
              gains: Gains) -> tuple[float, float, float]:
    """The PI law in log space around ``anchor``: ``(u, I, pinned)`` after one more error ``e``.

    ``u = clip(anchor·exp(d·(k_p·e + k_i·I)), u_min, u_max)`` with ``I`` the running sum of the
    errors; conditional integration keeps ``I`` unchanged while the output is saturated in the
    direction the error pushes (no wind-up). ``pinned`` is the sign of ``e`` when it does
    (the bound stops the actuator; :attr:`ControllerState.pinned`), else 0.
    """
    d = gains.direction

    def output(i: float) -> float:
        return math.exp(math.log(anchor) + d * (gains.kp * e + gains.ki * i))

    raw = output(integral + e)
    pushing_up = d * e > 0
    pinned = 0.0
    if (raw > gains.u_max and pushing_up) or (raw < gains.u_min and not pushing_up):
        raw = output(integral)
        pinned = math.copysign(1.0, e)
    else:
        integral += e
    return min(max(raw, gains.u_min), gains.u_max), integral, pinned
