"""Closed-loop entropy control: pure controllers, schedules, and where they act on the loss.

- :func:`~entropyrl.control.controller.step`: ``(state, measured H, target H*) -> (state, u)``;
- :func:`~entropyrl.control.schedule.target_at`: constant or annealed targets;
- :func:`apply`: the loss config with the actuator set to ``u``.
"""

from entropyrl.control.actuate import actuator_value, apply
from entropyrl.control.controller import (
    ACTUATORS,
    CONTROLLER_KINDS,
    DIRECTION,
    ControllerState,
    Gains,
    start,
    step,
)
from entropyrl.control.schedule import SCHEDULE_KINDS, target_at

__all__ = [
    "ACTUATORS",
    "CONTROLLER_KINDS",
    "DIRECTION",
    "SCHEDULE_KINDS",
    "ControllerState",
    "Gains",
    "actuator_value",
    "apply",
    "start",
    "step",
    "target_at",
]
