"""Closed-loop entropy control: pure controllers, schedules, and where they act on the loss.

- :func:`~entropyrl.control.controller.step`: ``(state, measured H, target H*) -> (state, u)``;
- :func:`~entropyrl.control.schedule.target_at`: constant or annealed targets, and
  :func:`~entropyrl.control.schedule.reference_at`, the eased approach to them;
- :func:`~entropyrl.control.predictive.predictive_step`: the same with the step's covariance
  reading (:func:`removal_profile`), choosing ``u`` from the first-order ``ΔH``;
- :func:`~entropyrl.control.assist.assist_step`: the entropy coefficient that takes over
  where the main actuator runs out (split range);
- :func:`apply`: the loss config with the actuator set to ``u``.
"""

from entropyrl.control.actuate import actuator_value, apply
from entropyrl.control.assist import ASSISTS, AssistGains, assist_step, check_assist
from entropyrl.control.controller import (
    ACTUATORS,
    CONTROLLER_KINDS,
    DIRECTION,
    ControllerState,
    Gains,
    start,
    step,
)
from entropyrl.control.predictive import (
    PREDICTIVE_ACTUATORS,
    CovProfile,
    PlantReading,
    grid,
    predictive_step,
    removal_profile,
)
from entropyrl.control.schedule import SCHEDULE_KINDS, reference_at, target_at

__all__ = [
    "ACTUATORS",
    "ASSISTS",
    "CONTROLLER_KINDS",
    "DIRECTION",
    "PREDICTIVE_ACTUATORS",
    "SCHEDULE_KINDS",
    "AssistGains",
    "ControllerState",
    "CovProfile",
    "Gains",
    "PlantReading",
    "actuator_value",
    "apply",
    "assist_step",
    "check_assist",
    "grid",
    "predictive_step",
    "reference_at",
    "removal_profile",
    "start",
    "step",
    "target_at",
]
