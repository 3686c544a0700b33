"""The entropy controller in the loop: which loss a step trains with, and what it measured.

Once per rollout step, after the step: the sensor is ``train/entropy`` (the token-mean entropy
of the step's rollout batch over all ranks, the same number on every rank), the controller
sets the actuator for the next step, and its state goes into the run's checkpointed
``extra_state["control"]``, so a resumed run continues exactly. With
``control.approach_steps`` the controller steers to a reference that eases from the first
measured entropy to the target (:func:`entropyrl.control.reference_at`); the metrics report
both. The predictive controller
also reads the step's same-batch ``dyn/delta_entropy`` and the covariance profile of the
global batch (:func:`entropyrl.control.removal_profile`), identical on every rank. With
``control.assist: entropy_coef`` the entropy term of the loss takes over where the actuator
is pinned at a bound (:mod:`entropyrl.control.assist`): its coefficient is added to
``loss.entropy_coef``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from entropyrl import control
from entropyrl.config import ControlConfig, TrainConfig
from entropyrl.covariance.cov import centred_product
from entropyrl.losses import LossConfig
from entropyrl.train.batch_metrics import StepBatch


class EntropyControl:
    """The controller of a run, or a pass-through when ``control.kind`` is ``none``."""

    def __init__(self, control_cfg: ControlConfig, loss: LossConfig, steps: int,
                 extra_state: dict[str, Any]):
        """A controller with ``control_cfg``'s settings acting on ``loss``.

        Args:
            control_cfg: the controller's settings.
            loss: the loss it adjusts (its actuator's start value).
            steps: the run's length, the default anneal length of a scheduled target (a
                caller that learns the length later sets ``steps`` before observing).
            extra_state: the run's checkpointed state; the controller keeps its own under
                ``"control"`` and resumes from it.
        """
        self.cfg = control_cfg
        self.loss = loss
        self.steps = steps
        self.extra = extra_state
        self.enabled = self.cfg.kind != "none"
        if not self.enabled:
            return
        c = self.cfg
        self.gains = control.Gains(kind=c.kind, direction=control.DIRECTION[c.actuator],
                                   kp=c.kp, ki=c.ki, u_min=c.min_value, u_max=c.max_value,
                                   delta=c.delta)
        self.grid = control.grid(c.min_value, c.max_value)
        self.assist = control.AssistGains(c.assist_gain, c.assist_limit)
        saved = extra_state.get("control")
        self.state = (control.ControllerState.from_dict(saved) if saved is not None else
                      control.start(control.actuator_value(loss, c.actuator), self.gains))

    @classmethod
    def of_run(cls, cfg: TrainConfig, extra_state: dict[str, Any]) -> EntropyControl:
        """The controller of a training run's config."""
        return cls(cfg.control, cfg.loss, cfg.steps, extra_state)

    def target(self, step: int) -> float:
        """``H*`` at ``step``."""
        c = self.cfg
        return control.target_at(c.schedule, c.target_entropy, c.schedule_end, step,
                                 c.schedule_steps or self.steps)

    def reference(self, step: int) -> float:
        """What the controller steers ``H`` to at ``step``: ``H*``, approached from ``H_1``."""
        return control.reference_at(self.target(step), self.state.gap, step,
                                    self.cfg.approach_steps)

    def loss_for_step(self) -> LossConfig:
        """The loss config the next step trains with."""
        if not self.enabled:
            return self.loss
        loss = control.apply(self.loss, self.cfg.actuator, self.state.value)
        if self.cfg.assist == "entropy_coef":
            loss = replace(loss, entropy_coef=self.loss.entropy_coef + self.state.assist)
        return loss

    def observe(self, step: int, metrics: dict[str, Any],
                batch: StepBatch | None = None) -> dict[str, float]:
        """Read the step's entropy, set the next actuator value; the ``control/*`` metrics.

        Args:
            step: the step just done.
            metrics: its metrics (``train/entropy``; ``dyn/delta_entropy`` for predictive).
            batch: its global batch (predictive only).
        """
        if not self.enabled:
            return {}
        used, assisted, target = self.state.value, self.state.assist, self.target(step)
        previous = self.state.error
        entropy = metrics["train/entropy"]
        if self.state.steps == 0:
            # The approach starts from the first measurement: ref(1) = H_1.
            self.state = replace(self.state, gap=entropy - target)
        reference = self.reference(step)
        if self.cfg.kind == "predictive":
            if batch is None:
                raise ValueError("the predictive controller needs the step's batch")
            reading = control.PlantReading(metrics["dyn/delta_entropy"], self.profile(batch))
            self.state, _ = control.predictive_step(self.state, entropy, reference, self.gains,
                                                    reading, aim=self.reference(step + 2))
        else:
            self.state, _ = control.step(self.state, entropy, reference, self.gains)
        if self.cfg.assist != "none":
            alpha = control.assist_step(self.state.assist, self.state.error, previous,
                                        self.state.pinned, self.assist)
            self.state = replace(self.state, assist=alpha)
        self.extra["control"] = self.state.to_dict()
        out = {"control/target": target, "control/reference": reference,
               "control/error": self.state.error,
               "control/actuator_value": used, "control/integral": self.state.integral}
        if self.cfg.assist != "none":
            out["control/assist_value"] = assisted
        if self.cfg.kind == "predictive":
            out["control/predicted_delta_h"] = self.state.predicted
            out["control/gain_estimate"] = self.state.gain
            out["control/offset_estimate"] = self.state.offset
        return out

    def profile(self, batch: StepBatch) -> control.CovProfile:
        """``C(u)`` of the step's global batch under the run's loss settings."""
        mask = batch.mask.bool()
        cov = centred_product(batch.logprobs, batch.advantages, mask, dtype=torch.float64)[mask]
        band = self.loss.clip_cov
        return control.removal_profile(cov, self.cfg.actuator, self.grid,
                                       cov_low=band.cov_low, cov_high=band.cov_high)
