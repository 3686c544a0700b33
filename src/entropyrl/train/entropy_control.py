"""The entropy controller in the loop: which loss a step trains with, and what it measured.

Once per rollout step, after the step: the sensor is ``train/entropy`` (the token-mean entropy
of the step's rollout batch over all ranks, the same number on every rank), the controller
sets the actuator for the next step, and its state goes into the run's checkpointed
``extra_state["control"]``, so a resumed run continues exactly.
"""

from __future__ import annotations

from typing import Any

from entropyrl import control
from entropyrl.config import ControlConfig, TrainConfig
from entropyrl.losses import LossConfig


class EntropyControl:
    """The controller of a run, or a pass-through when ``control.kind`` is ``none``."""

    def __init__(self, cfg: TrainConfig, extra_state: dict[str, Any]):
        self.cfg: ControlConfig = cfg.control
        self.loss = cfg.loss
        self.steps = cfg.steps
        self.extra = extra_state
        self.enabled = self.cfg.kind != "none"
        if not self.enabled:
            return
        c = self.cfg
        self.gains = control.Gains(kind=c.kind, direction=control.DIRECTION[c.actuator],
                                   kp=c.kp, ki=c.ki, u_min=c.min_value, u_max=c.max_value,
                                   delta=c.delta)
        saved = extra_state.get("control")
        self.state = (control.ControllerState.from_dict(saved) if saved is not None else
                      control.start(control.actuator_value(cfg.loss, c.actuator), self.gains))

    def target(self, step: int) -> float:
        """``H*`` at ``step``."""
        c = self.cfg
        return control.target_at(c.schedule, c.target_entropy, c.schedule_end, step,
                                 c.schedule_steps or self.steps)

    def loss_for_step(self) -> LossConfig:
        """The loss config the next step trains with."""
        if not self.enabled:
            return self.loss
        return control.apply(self.loss, self.cfg.actuator, self.state.value)

    def observe(self, step: int, entropy: float) -> dict[str, float]:
        """Read the step's entropy, set the next actuator value; the ``control/*`` metrics."""
        if not self.enabled:
            return {}
        used, target = self.state.value, self.target(step)
        self.state, _ = control.step(self.state, entropy, target, self.gains)
        self.extra["control"] = self.state.to_dict()
        return {"control/target": target, "control/error": self.state.error,
                "control/actuator_value": used, "control/integral": self.state.integral}
