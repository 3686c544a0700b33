"""Where each actuator sits in the loss configuration."""

from __future__ import annotations

from dataclasses import replace

from entropyrl.losses import LossConfig


def actuator_value(loss: LossConfig, actuator: str) -> float:
    """The actuator's value in ``loss`` (the controller's starting point)."""
    return {
        "clip_cov_ratio": loss.clip_cov.ratio,
        "kl_cov_coef": loss.kl_cov.beta,
        "kl_cov_ratio": loss.kl_cov.ratio,
        "eps_low": loss.clip.eps_low,
        "entropy_coef": loss.entropy_coef,
    }[actuator]


def apply(loss: LossConfig, actuator: str, value: float) -> LossConfig:
    """``loss`` with the actuator set to ``value``."""
    if actuator == "clip_cov_ratio":
        return replace(loss, clip_cov=replace(loss.clip_cov, ratio=value))
    if actuator == "kl_cov_coef":
        return replace(loss, kl_cov=replace(loss.kl_cov, beta=value))
    if actuator == "kl_cov_ratio":
        return replace(loss, kl_cov=replace(loss.kl_cov, ratio=value))
    if actuator == "eps_low":
        return replace(loss, clip=replace(loss.clip, eps_low=value))
    if actuator == "entropy_coef":
        return replace(loss, entropy_coef=value)
    raise ValueError(f"actuator: unknown {actuator!r}")
